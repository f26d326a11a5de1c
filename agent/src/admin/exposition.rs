//! Reading and re-writing the exposition the registry encodes.
//!
//! prometheus-client writes OpenMetrics only. Prometheus asks for it in its
//! `Accept` header, but tools that speak the classic text format 0.0.4
//! (`promtool check metrics`, older scrapers, people with curl) read a
//! counter family `x` with samples `x_total` as two families, one without
//! help. [`to_text_format`] rewrites the few lines where the two formats
//! differ. [`samples`] reads the sample lines back, for the admin page,
//! which shows the same numbers Prometheus scrapes (prometheus-client
//! families cannot be iterated in place).

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4: a counter family is
/// named after its `_total` samples, `# UNIT` and `# EOF` go (0.0.4 has
/// neither), and OpenMetrics-only types become the nearest 0.0.4 type.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, "counter")) = rest.split_once(' ') {
                counters.insert(name.to_owned());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_owned()
                };
                let tail = if prefix == "# TYPE " {
                    match tail {
                        "info" | "stateset" => "gauge",
                        "gaugehistogram" => "histogram",
                        "unknown" => "untyped",
                        t => t,
                    }
                } else {
                    tail
                };
                out.push_str(prefix);
                out.push_str(&name);
                out.push(' ');
                out.push_str(tail);
            }
            // Counters' `_created` samples have no place in 0.0.4.
            None if line.split(['{', ' ']).next().is_some_and(|n| {
                n.strip_suffix("_created")
                    .is_some_and(|base| counters.contains(base))
            }) =>
            {
                continue
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The sample lines of an exposition (either format); comments and lines
/// that do not parse are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (Vec::new(), &line[name_end..]),
    };
    // The value; a timestamp or exemplar may follow.
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `key="value",...}` (after the `{`) → the pairs and what follows the `}`.
/// Values may hold `\\`, `\"` and `\n` escapes.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut i = 0;
    loop {
        i += s[i..].len() - s[i..].trim_start_matches([',', ' ']).len();
        if s[i..].starts_with('}') {
            return Some((labels, &s[i + 1..]));
        }
        let eq = i + s[i..].find('=')?;
        let key = s[i..eq].trim().to_owned();
        i = eq + 1;
        i += s[i..].strip_prefix('"').map(|_| 1)?;
        let mut value = String::new();
        let mut chars = s[i..].chars();
        loop {
            let c = chars.next()?;
            i += c.len_utf8();
            match c {
                '"' => break,
                '\\' => {
                    let e = chars.next()?;
                    i += e.len_utf8();
                    value.push(if e == 'n' { '\n' } else { e });
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "\
# HELP sluice_http_requests HTTP requests.
# TYPE sluice_http_requests counter
sluice_http_requests_total{shard=\"a/gw\",route=\"a/r\",status_class=\"2xx\",reason=\"upstream\"} 3
sluice_http_requests_created{shard=\"a/gw\"} 1700000000.0
# HELP sluice_latency_seconds Latency.
# TYPE sluice_latency_seconds histogram
# UNIT sluice_latency_seconds seconds
sluice_latency_seconds_bucket{le=\"+Inf\",shard=\"a/gw\"} 3
# HELP sluice_build Build.
# TYPE sluice_build info
sluice_build_info{version=\"1\"} 1
# EOF
";

    #[test]
    fn counters_are_named_after_their_samples_in_text_format() {
        let text = to_text_format(OPENMETRICS);
        assert!(text.contains("# HELP sluice_http_requests_total HTTP requests.\n"));
        assert!(text.contains("# TYPE sluice_http_requests_total counter\n"));
        assert!(text.contains("# TYPE sluice_latency_seconds histogram\n"));
        assert!(text.contains("# TYPE sluice_build gauge\n"));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        assert!(!text.contains("_created"));
        // Sample lines are untouched.
        assert!(text.contains(
            "sluice_http_requests_total{shard=\"a/gw\",route=\"a/r\",status_class=\"2xx\",reason=\"upstream\"} 3\n"
        ));
    }

    #[test]
    fn samples_parse_labels_with_escapes() {
        let s = samples(
            "# TYPE x counter\nx_total{a=\"q\\\"uote\",b=\"back\\\\slash, comma\",c=\"n\\nl\"} 2.5\nup 1\ny{le=\"+Inf\"} +Inf\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].label("a"), Some("q\"uote"));
        assert_eq!(s[0].label("b"), Some("back\\slash, comma"));
        assert_eq!(s[0].label("c"), Some("n\nl"));
        assert_eq!(s[0].value, 2.5);
        assert_eq!((s[1].name.as_str(), s[1].value), ("up", 1.0));
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert!(s[2].value.is_infinite());
    }
}
