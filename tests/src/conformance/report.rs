//! Results, the Markdown/YAML reports and the passing-list comparison.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::Path,
};

use anyhow::{Context, Result};

use super::status::Verdict;

/// Upstream GATEWAY-HTTP core features; every other feature is extended.
pub const CORE_FEATURES: &[&str] = &["Gateway", "HTTPRoute", "ReferenceGrant"];
/// Upstream GATEWAY-GRPC core features.
pub const GRPC_CORE_FEATURES: &[&str] = &["Gateway", "GRPCRoute", "ReferenceGrant"];
/// Upstream GATEWAY-TLS core features.
pub const TLS_CORE_FEATURES: &[&str] = &["Gateway", "ReferenceGrant", "TLSRoute"];
/// Upstream GATEWAY-TCP core features.
pub const TCP_CORE_FEATURES: &[&str] = &["Gateway", "TCPRoute", "ReferenceGrant"];

/// An upstream conformance profile, chosen by the route kind a test needs:
/// `GRPCRoute` → GATEWAY-GRPC, `HTTPRoute` → GATEWAY-HTTP, else `TLSRoute` →
/// GATEWAY-TLS, `TCPRoute` → GATEWAY-TCP; Gateway-only tests are
/// GATEWAY-HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Profile {
    Http,
    Grpc,
    Tls,
    Tcp,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Profile::Http, Profile::Grpc, Profile::Tls, Profile::Tcp];

    /// Upstream's profile name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Http => "GATEWAY-HTTP",
            Profile::Grpc => "GATEWAY-GRPC",
            Profile::Tls => "GATEWAY-TLS",
            Profile::Tcp => "GATEWAY-TCP",
        }
    }

    pub fn core_features(self) -> &'static [&'static str] {
        match self {
            Profile::Http => CORE_FEATURES,
            Profile::Grpc => GRPC_CORE_FEATURES,
            Profile::Tls => TLS_CORE_FEATURES,
            Profile::Tcp => TCP_CORE_FEATURES,
        }
    }

    /// The profile of a test needing `features`.
    pub fn of(features: &[String]) -> Profile {
        let has = |k: &str| features.iter().any(|f| f == k);
        if has("GRPCRoute") {
            Profile::Grpc
        } else if has("HTTPRoute") {
            Profile::Http
        } else if has("TLSRoute") {
            Profile::Tls
        } else if has("TCPRoute") {
            Profile::Tcp
        } else {
            Profile::Http
        }
    }
}
pub const GATEWAY_API_VERSION: &str = "v1.6.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Passed => "Passed",
            Outcome::Failed => "Failed",
            Outcome::Skipped => "Skipped",
        }
    }
}

/// How the request cases of a test went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Traffic {
    /// Not run (skipped test).
    NotRun,
    /// The test has no request cases (status only).
    NoCases,
    /// The agent refused the config (or did not start): its error.
    Refused(String),
    Ran {
        passed: usize,
        total: usize,
    },
}

/// One status assertion and its verdict.
#[derive(Debug, Clone)]
pub struct StatusResult {
    pub label: String,
    pub verdict: Verdict,
}

/// Counts of a test's status assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub label: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TestResult {
    pub id: String,
    pub name: String,
    pub features: Vec<String>,
    pub provisional: bool,
    pub traffic: Traffic,
    /// Status assertions of the test and its steps, in order.
    pub status: Vec<StatusResult>,
    /// Why it was skipped, or the first failure.
    pub reason: String,
    pub cases: Vec<CaseResult>,
    pub seconds: f64,
}

impl TestResult {
    pub fn profile(&self) -> Profile {
        Profile::of(&self.features)
    }

    /// Needs only core features of its profile.
    pub fn core(&self) -> bool {
        let core = self.profile().core_features();
        self.features.iter().all(|f| core.contains(&f.as_str()))
    }

    /// Every request case passed (and there was at least one).
    pub fn traffic_passed(&self) -> bool {
        matches!(self.traffic, Traffic::Ran { passed, total } if total > 0 && passed == total)
    }

    pub fn status_counts(&self) -> StatusCounts {
        let mut c = StatusCounts::default();
        for s in &self.status {
            match s.verdict {
                Verdict::Pass => c.passed += 1,
                Verdict::Fail(_) => c.failed += 1,
                Verdict::Unsupported(_) => c.unsupported += 1,
            }
        }
        c
    }

    /// Every status assertion passed (none unsupported).
    pub fn status_passed(&self) -> bool {
        self.status.iter().all(|s| s.verdict == Verdict::Pass)
    }

    /// Upstream semantics: every request case and every status assertion passed.
    pub fn outcome(&self) -> Outcome {
        let requests_ok = match &self.traffic {
            Traffic::NotRun => return Outcome::Skipped,
            Traffic::NoCases => true,
            _ => self.traffic_passed(),
        };
        if requests_ok && self.status_passed() {
            Outcome::Passed
        } else {
            Outcome::Failed
        }
    }

    pub fn traffic_label(&self) -> String {
        match &self.traffic {
            Traffic::NotRun => "-".into(),
            Traffic::NoCases => "no requests".into(),
            Traffic::Refused(_) => "config refused".into(),
            Traffic::Ran { passed, total } => format!("{passed}/{total}"),
        }
    }

    pub fn status_label(&self) -> String {
        if self.traffic == Traffic::NotRun {
            return "-".into();
        }
        if self.status.is_empty() {
            return "none".into();
        }
        let c = self.status_counts();
        let mut out = format!("{}/{}", c.passed, self.status.len());
        if c.unsupported > 0 {
            out.push_str(&format!(" ({} unsupported)", c.unsupported));
        }
        out
    }

    /// The first failing (else unsupported) status assertion, for reasons.
    pub fn first_status_problem(&self) -> Option<String> {
        let fail = self.status.iter().find_map(|s| match &s.verdict {
            Verdict::Fail(e) => Some(format!("status: {}: {e}", s.label)),
            _ => None,
        });
        fail.or_else(|| {
            self.status.iter().find_map(|s| match &s.verdict {
                Verdict::Unsupported(e) => Some(format!("status unsupported: {}: {e}", s.label)),
                _ => None,
            })
        })
    }
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    pub results: Vec<TestResult>,
    /// Features claimed for this run (tests needing others are skipped).
    pub claimed: BTreeSet<String>,
    /// Every feature named by a case file.
    pub all_features: BTreeSet<String>,
    /// The features named by the case files of each profile.
    pub profile_features: BTreeMap<Profile, BTreeSet<String>>,
    /// Set when the run deviates from the conformant setup (diagnostic flags).
    pub non_conformant: Option<String>,
    /// Where the agents ran and on which ports (see `network.rs`).
    pub network: String,
    pub version: String,
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

#[derive(Default, Clone, Copy)]
struct Stats {
    passed: usize,
    failed: usize,
    skipped: usize,
}

impl Stats {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Passed => self.passed += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped => self.skipped += 1,
        }
    }
}

impl Report {
    fn stats(&self, profile: Profile, core: bool) -> Stats {
        let mut s = Stats::default();
        for r in self
            .results
            .iter()
            .filter(|r| r.profile() == profile && r.core() == core)
        {
            s.add(r.outcome());
        }
        s
    }

    /// feature → stats over the tests that need it.
    fn feature_stats(&self) -> BTreeMap<String, Stats> {
        let mut m: BTreeMap<String, Stats> = BTreeMap::new();
        for r in &self.results {
            for f in &r.features {
                m.entry(f.clone()).or_default().add(r.outcome());
            }
        }
        m
    }

    /// The profiles that have results in this run.
    pub fn profiles(&self) -> Vec<Profile> {
        Profile::ALL
            .into_iter()
            .filter(|p| self.results.iter().any(|r| r.profile() == *p))
            .collect()
    }

    /// The summary line of the whole run.
    pub fn summary(&self) -> String {
        summarize(&self.results.iter().collect::<Vec<_>>())
    }

    /// The summary line of one profile's tests.
    pub fn profile_summary(&self, p: Profile) -> String {
        summarize(
            &self
                .results
                .iter()
                .filter(|r| r.profile() == p)
                .collect::<Vec<_>>(),
        )
    }
}

fn summarize(results: &[&TestResult]) -> String {
    {
        let mut all = Stats::default();
        for r in results {
            all.add(r.outcome());
        }
        let traffic = results.iter().filter(|r| r.traffic_passed()).count();
        let with_traffic = results
            .iter()
            .filter(|r| !matches!(r.traffic, Traffic::NotRun | Traffic::NoCases))
            .count();
        let refused = results
            .iter()
            .filter(|r| matches!(r.traffic, Traffic::Refused(_)))
            .count();
        let mut st = StatusCounts::default();
        for r in results {
            let c = r.status_counts();
            st.passed += c.passed;
            st.failed += c.failed;
            st.unsupported += c.unsupported;
        }
        format!(
            "{} tests: {} passed, {} failed, {} skipped; request cases all passing in {traffic} of {with_traffic} tests with requests; status assertions {} passed, {} failed, {} unsupported; agent refused the config in {refused}",
            results.len(),
            all.passed,
            all.failed,
            all.skipped,
            st.passed,
            st.failed,
            st.unsupported,
        )
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let names: Vec<&str> = self.profiles().iter().map(|p| p.name()).collect();
        let _ = writeln!(
            out,
            "# Sluice Gateway API conformance report ({}, Gateway API {GATEWAY_API_VERSION})\n",
            names.join(", ")
        );
        if let Some(n) = &self.non_conformant {
            let _ = writeln!(out, "**Non-conformant diagnostic run:** {n}\n");
        }
        let _ = writeln!(out, "{}\n", self.summary());
        let _ = writeln!(out, "Network: {}.\n", self.network);
        let _ = writeln!(
            out,
            "Result is upstream's: every request case and every status assertion must pass. \
             *requests* = request cases passed / total; *status* = status assertions passed / \
             total, checked against the agent's admin `/status`, or, for the tests that check \
             `metadata.generation`, against the objects in a Kubernetes API server (kubelite) \
             that the agent serves with `--kubernetes` (*unsupported*: cannot be evaluated \
             without a cluster; they fail the test).\n"
        );
        for p in self.profiles() {
            self.profile_table(&mut out, p);
        }
        let _ = writeln!(out, "## Features\n");
        let _ = writeln!(
            out,
            "| feature | claimed | passed | failed | skipped | verdict |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for (f, s) in self.feature_stats() {
            let verdict = if s.failed > 0 {
                "fail"
            } else if s.passed > 0 {
                "pass"
            } else {
                "not run"
            };
            let _ = writeln!(
                out,
                "| {f} | {} | {} | {} | {} | {verdict} |",
                if self.claimed.contains(&f) {
                    "yes"
                } else {
                    "no"
                },
                s.passed,
                s.failed,
                s.skipped
            );
        }
        let failing_cases: Vec<_> = self
            .results
            .iter()
            .filter(|r| r.cases.iter().any(|c| c.error.is_some()))
            .collect();
        if !failing_cases.is_empty() {
            let _ = writeln!(out, "\n## Failing request cases\n");
            for r in failing_cases {
                let _ = writeln!(out, "- **{}**", r.id);
                for c in r.cases.iter().filter(|c| c.error.is_some()) {
                    let _ = writeln!(
                        out,
                        "  - {}: {}",
                        md_escape(&c.label),
                        md_escape(&short(c.error.as_deref().unwrap_or(""), 300))
                    );
                }
            }
        }
        let failing_status: Vec<_> = self
            .results
            .iter()
            .filter(|r| r.status.iter().any(|s| s.verdict != Verdict::Pass))
            .collect();
        if !failing_status.is_empty() {
            let _ = writeln!(out, "\n## Failing or unsupported status assertions\n");
            for r in failing_status {
                let _ = writeln!(out, "- **{}**", r.id);
                for s in &r.status {
                    let what = match &s.verdict {
                        Verdict::Pass => continue,
                        Verdict::Fail(e) => format!("failed: {e}"),
                        Verdict::Unsupported(e) => format!("unsupported: {e}"),
                    };
                    let _ = writeln!(
                        out,
                        "  - {}: {}",
                        md_escape(&s.label),
                        md_escape(&short(&what, 300))
                    );
                }
            }
        }
        out
    }

    /// Markdown: one profile's summary and every one of its tests.
    fn profile_table(&self, out: &mut String, p: Profile) {
        let _ = writeln!(out, "## {}\n", p.name());
        let _ = writeln!(out, "{}\n", self.profile_summary(p));
        let _ = writeln!(
            out,
            "| test | upstream test | core | result | requests | status | reason |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for r in self.results.iter().filter(|r| r.profile() == p) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                r.name,
                if r.core() { "core" } else { "extended" },
                r.outcome().label(),
                r.traffic_label(),
                r.status_label(),
                md_escape(&short(&r.reason, 400))
            );
        }
        let _ = writeln!(out);
    }

    /// The upstream `ConformanceReport` shape.
    pub fn conformance_report(&self) -> serde_json::Value {
        let names = |p: Profile, core: bool, o: Outcome| -> Vec<String> {
            let mut v: Vec<String> = self
                .results
                .iter()
                .filter(|r| r.profile() == p && r.core() == core && r.outcome() == o)
                .map(|r| r.name.clone())
                .collect();
            v.dedup();
            v
        };
        let claim = |p: Profile, core: bool| {
            let s = self.stats(p, core);
            let result = if s.failed > 0 {
                "failure"
            } else if s.passed > 0 && s.skipped == 0 {
                "success"
            } else if s.passed > 0 {
                "partial"
            } else {
                "failure"
            };
            let mut v = serde_json::json!({
                "result": result,
                "statistics": {"Passed": s.passed, "Failed": s.failed, "Skipped": s.skipped},
                "skippedTests": names(p, core, Outcome::Skipped),
                "failedTests": names(p, core, Outcome::Failed),
            });
            if !core {
                let extended: Vec<&String> = self
                    .profile_features
                    .get(&p)
                    .into_iter()
                    .flatten()
                    .filter(|f| !p.core_features().contains(&f.as_str()))
                    .collect();
                v["supportedFeatures"] = serde_json::json!(extended
                    .iter()
                    .filter(|f| self.claimed.contains(**f))
                    .collect::<Vec<_>>());
                v["unsupportedFeatures"] = serde_json::json!(extended
                    .iter()
                    .filter(|f| !self.claimed.contains(**f))
                    .collect::<Vec<_>>());
            }
            v
        };
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "ConformanceReport",
            "date": now_rfc3339(),
            "gatewayAPIVersion": GATEWAY_API_VERSION,
            "gatewayAPIChannel": "standard",
            "mode": if self.non_conformant.is_some() { "diagnostic" } else { "default" },
            "implementation": {
                "organization": "sluice",
                "project": "sluice",
                "url": "https://github.com/sluice-gateway/sluice",
                "version": self.version,
                "contact": ["sluice maintainers"],
            },
            "profiles": self.profiles().into_iter().map(|p| {
                let mut v = serde_json::json!({
                    "name": p.name(),
                    "summary": self.profile_summary(p),
                    "core": claim(p, true),
                });
                // A profile without extended tests (GATEWAY-TCP: every
                // TCPRoute test is core) has no extended claim to report.
                let ext = self.stats(p, false);
                if ext.passed + ext.failed + ext.skipped > 0 {
                    v["extended"] = claim(p, false);
                }
                v
            }).collect::<Vec<_>>(),
        })
    }

    /// Writes report.md and report.yaml to `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(
            dir.join("report.yaml"),
            serde_yaml::to_string(&self.conformance_report())?,
        )?;
        Ok(())
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Test ids listed in a passing file (`#` comments and blank lines ignored).
pub fn read_passing(path: &Path) -> Result<BTreeSet<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// What a passing list guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassLevel {
    /// `passing.txt`: the test passes (request cases and status assertions).
    Full,
    /// `passing-requests.txt`: every request case passes.
    Requests,
}

impl PassLevel {
    pub fn passed(self, r: &TestResult) -> bool {
        match self {
            PassLevel::Full => r.outcome() == Outcome::Passed,
            PassLevel::Requests => r.traffic_passed(),
        }
    }
}

/// Regressions (listed, run, and not passing) and new passes (passing, not
/// listed) at `level`.
pub fn compare_passing(
    report: &Report,
    listed: &BTreeSet<String>,
    level: PassLevel,
) -> (Vec<String>, Vec<String>) {
    let mut regressions = Vec::new();
    let mut new = Vec::new();
    for r in &report.results {
        let listed_here = listed.contains(&r.id);
        let passed = level.passed(r);
        if listed_here && r.traffic != Traffic::NotRun && !passed {
            regressions.push(format!("{}: {}", r.id, r.reason));
        }
        if !listed_here && passed {
            new.push(r.id.clone());
        }
    }
    (regressions, new)
}

/// Adds `ids` to the passing file (never removes any).
pub fn grow_passing(path: &Path, ids: &[String]) -> Result<()> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for id in ids {
        text.push_str(id);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, traffic: Traffic, status: &[Verdict]) -> TestResult {
        TestResult {
            id: id.into(),
            name: id.into(),
            features: vec!["Gateway".into(), "HTTPRoute".into()],
            provisional: false,
            traffic,
            status: status
                .iter()
                .map(|v| StatusResult {
                    label: "s".into(),
                    verdict: v.clone(),
                })
                .collect(),
            reason: String::new(),
            cases: Vec::new(),
            seconds: 0.0,
        }
    }

    #[test]
    fn outcomes_statistics_and_passing_lists() {
        let all = |passed, total| Traffic::Ran { passed, total };
        let unsupported = Verdict::Unsupported("x".into());
        let report = Report {
            results: vec![
                result("a", all(2, 2), &[Verdict::Pass, unsupported.clone()]),
                result("b", all(1, 2), &[Verdict::Pass]),
                result("c", Traffic::Refused("no".into()), &[]),
                result("d", Traffic::NotRun, &[]),
                result("e", all(1, 1), &[]),
                result("f", all(3, 3), &[Verdict::Pass, Verdict::Pass]),
                result("g", Traffic::NoCases, &[Verdict::Pass]),
                result("h", Traffic::NoCases, &[Verdict::Fail("no".into())]),
                result("i", all(1, 1), &[Verdict::Fail("no".into())]),
            ],
            claimed: BTreeSet::new(),
            all_features: BTreeSet::from(["Gateway".into(), "HTTPRoute".into()]),
            profile_features: BTreeMap::new(),
            non_conformant: None,
            network: "test".into(),
            version: "0".into(),
        };
        let outcomes: Vec<_> = report.results.iter().map(|r| r.outcome()).collect();
        use Outcome::*;
        assert_eq!(
            outcomes,
            [Failed, Failed, Failed, Skipped, Passed, Passed, Passed, Failed, Failed]
        );
        assert_eq!(report.results[0].status_label(), "1/2 (1 unsupported)");
        assert_eq!(report.results[3].status_label(), "-");
        let yaml = report.conformance_report();
        assert_eq!(yaml["profiles"][0]["core"]["statistics"]["Failed"], 5);
        assert_eq!(yaml["profiles"][0]["core"]["result"], "failure");

        let listed = BTreeSet::from(["b".to_owned(), "d".to_owned(), "e".to_owned()]);
        let (regressions, new) = compare_passing(&report, &listed, PassLevel::Requests);
        assert_eq!(regressions.len(), 1);
        assert!(regressions[0].starts_with("b:"));
        assert_eq!(new, ["a", "f", "i"]);

        let listed = BTreeSet::from(["a".to_owned(), "f".to_owned()]);
        let (regressions, new) = compare_passing(&report, &listed, PassLevel::Full);
        assert_eq!(regressions.len(), 1);
        assert!(regressions[0].starts_with("a:"));
        assert_eq!(new, ["e", "g"]);
    }

    #[test]
    fn grpc_tests_form_their_own_profile() {
        let mut http = result(
            "h",
            Traffic::Ran {
                passed: 1,
                total: 1,
            },
            &[],
        );
        http.features = vec!["Gateway".into(), "HTTPRoute".into()];
        let mut grpc = result(
            "g",
            Traffic::Ran {
                passed: 0,
                total: 1,
            },
            &[],
        );
        grpc.features = vec!["Gateway".into(), "GRPCRoute".into()];
        let mut named = result("n", Traffic::NotRun, &[]);
        named.features = vec![
            "Gateway".into(),
            "GRPCRoute".into(),
            "GRPCRouteNamedRouteRule".into(),
        ];
        assert_eq!(grpc.profile(), Profile::Grpc);
        assert!(grpc.core() && !named.core());
        let report = Report {
            results: vec![http, grpc, named],
            claimed: BTreeSet::new(),
            all_features: BTreeSet::new(),
            profile_features: BTreeMap::from([(
                Profile::Grpc,
                BTreeSet::from([
                    "Gateway".into(),
                    "GRPCRoute".into(),
                    "GRPCRouteNamedRouteRule".into(),
                ]),
            )]),
            non_conformant: None,
            network: "test".into(),
            version: "0".into(),
        };
        let yaml = report.conformance_report();
        assert_eq!(yaml["profiles"][0]["name"], "GATEWAY-HTTP");
        assert_eq!(yaml["profiles"][0]["core"]["statistics"]["Passed"], 1);
        assert_eq!(yaml["profiles"][1]["name"], "GATEWAY-GRPC");
        assert_eq!(yaml["profiles"][1]["core"]["failedTests"][0], "g");
        assert_eq!(yaml["profiles"][1]["extended"]["skippedTests"][0], "n");
        assert_eq!(
            yaml["profiles"][1]["extended"]["unsupportedFeatures"][0],
            "GRPCRouteNamedRouteRule"
        );
        let md = report.markdown();
        assert!(md.contains("## GATEWAY-GRPC"), "{md}");
        assert!(md.contains("| n | n | extended | Skipped |"), "{md}");
    }

    #[test]
    fn route_kinds_choose_the_profile() {
        let of = |f: &[&str]| Profile::of(&f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(of(&["Gateway", "TLSRoute"]), Profile::Tls);
        assert_eq!(
            of(&["Gateway", "TLSRoute", "TLSRouteModeTerminate"]),
            Profile::Tls
        );
        assert_eq!(of(&["Gateway", "TCPRoute", "ReferenceGrant"]), Profile::Tcp);
        // An HTTPRoute test naming TLSRoute (disallowed kind) stays HTTP.
        assert_eq!(of(&["Gateway", "HTTPRoute", "TLSRoute"]), Profile::Http);
        assert_eq!(of(&["Gateway"]), Profile::Http);
        assert_eq!(Profile::Tcp.name(), "GATEWAY-TCP");
        // A profile with core tests only reports no extended section.
        let mut tcp = result(
            "t",
            Traffic::Ran {
                passed: 1,
                total: 1,
            },
            &[],
        );
        tcp.features = vec!["Gateway".into(), "TCPRoute".into()];
        let report = Report {
            results: vec![tcp],
            claimed: BTreeSet::new(),
            all_features: BTreeSet::new(),
            profile_features: BTreeMap::new(),
            non_conformant: None,
            network: "test".into(),
            version: "0".into(),
        };
        let yaml = report.conformance_report();
        assert_eq!(yaml["profiles"][0]["name"], "GATEWAY-TCP");
        assert_eq!(yaml["profiles"][0]["core"]["result"], "success");
        assert!(yaml["profiles"][0].get("extended").is_none());
    }
}
