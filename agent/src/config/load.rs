//! Reading a directory of multi-document YAML files.
//!
//! [`DirSource`] keeps what each file converted to, so a change re-reads and
//! re-parses only the files that changed: parsing YAML dominates the cost of
//! a reload, and a one-route edit should not pay for 5,000 routes.
use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use serde::Deserialize;

use super::{validate, Config, ConfigError, DocumentError, HttpRoute, Location};

/// Reads every `*.yaml` / `*.yml` file under `dir` (recursively, in path order)
/// and converts all documents into one validated [`Config`]. Any invalid
/// document fails the whole load, with every error found reported.
pub fn load_dir(dir: &Path) -> Result<Config, ConfigError> {
    DirSource::new(dir).load()
}

/// The directory source with a per-file cache of converted documents.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, CachedFile>,
}

#[derive(Debug)]
struct CachedFile {
    stamp: FileStamp,
    /// Hash of the text, so a rewrite with the same content (editors, `touch`,
    /// `kubectl`-style tools) costs a read but no parse.
    digest: u64,
    converted: Converted,
}

/// What a file converted to.
#[derive(Debug)]
pub(super) enum Converted {
    /// Each YAML document's objects, keyed by a hash of the document's text:
    /// a change to one route in a file of hundreds re-parses that one.
    Documents(Vec<(u64, Document)>),
    Invalid(Vec<DocumentError>),
}

/// The objects of one YAML document.
#[derive(Debug, Clone)]
pub(super) enum Document {
    /// Just one HTTPRoute, the common case, kept without a whole `Config`
    /// around it (a dozen empty lists per route add up at 50,000 routes).
    Route(Arc<HttpRoute>),
    Objects(Arc<Config>),
}

impl Document {
    fn of(config: Config) -> Self {
        let only_a_route = config.is_one_route();
        if only_a_route {
            let mut routes = config.routes;
            Document::Route(routes.pop().expect("one route"))
        } else {
            Document::Objects(Arc::new(config))
        }
    }

    fn routes(&self) -> usize {
        match self {
            Document::Route(_) => 1,
            Document::Objects(c) => c.routes.len(),
        }
    }

    /// Appends the objects to `config`, sharing the routes.
    pub(super) fn add_to(&self, config: &mut Config) {
        match self {
            Document::Route(r) => config.routes.push(r.clone()),
            Document::Objects(c) => config.extend_from(c),
        }
    }
}

/// What the file system says about a file; any difference means re-read.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    changed_ns: i64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
            changed_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }
}

/// What one [`DirSource::load`] did, for logs and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub files: usize,
    /// Files read because their metadata changed (or were new).
    pub read: usize,
    /// Files parsed because their content changed (or were new).
    pub parsed: usize,
    /// YAML documents parsed: the new or changed documents of those files.
    pub documents_parsed: usize,
}

impl DirSource {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the directory; see [`load_dir`].
    pub fn load(&mut self) -> Result<Config, ConfigError> {
        self.load_with_stats().map(|(c, _)| c)
    }

    /// Loads the directory, re-reading only files whose metadata changed and
    /// re-parsing only files whose content changed. The cache is updated even
    /// when the result is an error, so fixing one file does not re-parse the
    /// others.
    pub fn load_with_stats(&mut self) -> Result<(Config, LoadStats), ConfigError> {
        let mut paths = Vec::new();
        collect_yaml(&self.dir, &mut paths)?;
        if paths.is_empty() {
            self.files.clear();
            return Err(ConfigError::Empty(self.dir.clone()));
        }
        paths.sort();
        let mut stats = LoadStats {
            files: paths.len(),
            ..LoadStats::default()
        };
        let mut files = BTreeMap::new();
        // Files whose content changed, parsed below (in parallel when many).
        let mut jobs = Vec::new();
        for path in paths {
            let meta = std::fs::metadata(&path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            let stamp = FileStamp::of(&meta);
            let cached = self.files.remove(&path);
            let entry = match cached {
                Some(c) if c.stamp == stamp => c,
                cached => {
                    stats.read += 1;
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile {
                            path: path.clone(),
                            source,
                        })?;
                    let digest = digest(&text);
                    match cached {
                        Some(c) if c.digest == digest => CachedFile { stamp, ..c },
                        cached => {
                            stats.parsed += 1;
                            let previous = match cached.map(|c| c.converted) {
                                Some(Converted::Documents(docs)) => docs.into_iter().collect(),
                                _ => HashMap::new(),
                            };
                            jobs.push(Job {
                                path,
                                text,
                                stamp,
                                digest,
                                previous,
                            });
                            continue;
                        }
                    }
                }
            };
            files.insert(path, entry);
        }
        for (path, entry, parsed) in parse_all(jobs) {
            stats.documents_parsed += parsed;
            files.insert(path, entry);
        }
        // Files that disappeared are dropped with the old map.
        self.files = files;
        let mut errors = Vec::new();
        let mut config = Config::default();
        config.routes.reserve_exact(
            self.files
                .values()
                .map(|f| match &f.converted {
                    Converted::Documents(docs) => docs.iter().map(|(_, d)| d.routes()).sum(),
                    Converted::Invalid(_) => 0,
                })
                .sum(),
        );
        for file in self.files.values() {
            match &file.converted {
                Converted::Documents(docs) => {
                    for (_, d) in docs {
                        d.add_to(&mut config);
                    }
                }
                Converted::Invalid(e) => errors.extend(e.iter().cloned()),
            }
        }
        if errors.is_empty() {
            Ok((config, stats))
        } else {
            Err(ConfigError::Invalid(errors))
        }
    }
}

/// A file to parse.
struct Job {
    path: PathBuf,
    text: String,
    stamp: FileStamp,
    digest: u64,
    /// Its documents as last converted, by text hash.
    previous: HashMap<u64, Document>,
}

/// Below this much text, parsing on more threads costs more than it saves.
const PARALLEL_FROM_BYTES: usize = 256 * 1024;

/// Converts the files of `jobs`: on as many threads as the process may use
/// when there is enough to parse (start-up, a large sync), else here.
/// Returns each file's entry and how many documents were parsed.
fn parse_all(jobs: Vec<Job>) -> Vec<(PathBuf, CachedFile, usize)> {
    let one = |job: Job| {
        let (converted, parsed) = convert_file(&job.path, &job.text, job.previous);
        let entry = CachedFile {
            stamp: job.stamp,
            digest: job.digest,
            converted,
        };
        (job.path, entry, parsed)
    };
    let bytes: usize = jobs.iter().map(|j| j.text.len()).sum();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len());
    if threads < 2 || bytes < PARALLEL_FROM_BYTES {
        return jobs.into_iter().map(one).collect();
    }
    // Largest first, each to the least loaded thread: the threads finish
    // together even when file sizes differ.
    let mut jobs = jobs;
    jobs.sort_by_key(|j| std::cmp::Reverse(j.text.len()));
    let mut shares: Vec<(usize, Vec<Job>)> = (0..threads).map(|_| (0, Vec::new())).collect();
    for job in jobs {
        let least = shares
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least two threads");
        least.0 += job.text.len();
        least.1.push(job);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|(_, share)| scope.spawn(move || share.into_iter().map(one).collect::<Vec<_>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("config parser thread panicked"))
            .collect()
    })
}

pub(super) fn digest(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let name = entry.file_name();
        // Editors' swap and backup files, and kubectl-style hidden dirs.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_yaml(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Converts the documents of one file, re-using the conversion of documents
/// whose text is unchanged (`previous`, by text hash). Returns how many
/// documents were parsed.
pub(super) fn convert_file(
    path: &Path,
    text: &str,
    mut previous: HashMap<u64, Document>,
) -> (Converted, usize) {
    let mut docs = Vec::new();
    let mut parsed = 0;
    let chunks = split_documents(text);
    // A new file (start-up): its routes with one parser for the whole file.
    let mut typed = if previous.is_empty() {
        typed_routes_of_file(path, text, &chunks)
    } else {
        None
    };
    for (k, chunk) in chunks.into_iter().enumerate() {
        let d = digest(chunk);
        // Taken, not copied: a document written twice in a file becomes two
        // objects, as it would be parsed twice.
        if let Some(c) = previous.remove(&d) {
            docs.push((d, c));
            continue;
        }
        parsed += 1;
        if let Some(route) = typed.as_mut().and_then(|t| t[k].take()) {
            docs.push((d, Document::Route(route)));
            continue;
        }
        let mut builder = validate::Builder::default();
        if !builder.add_route_text(location(path), chunk) {
            add_documents(&mut builder, path, chunk);
        }
        match builder.finish() {
            Ok(c) => docs.push((d, Document::of(c))),
            // The whole file again, so that every error names its real
            // document number and line.
            Err(_) => return (convert_whole_file(path, text), parsed),
        }
    }
    (Converted::Documents(docs), parsed)
}

/// Where a document piece is, for the typed path (which reports nothing:
/// a route with anything to report is read again on the `Value` path).
fn location(path: &Path) -> Location {
    Location {
        file: path.to_path_buf(),
        document: 1,
        object: None,
    }
}

/// The HTTPRoutes of a file whose pieces (`chunks`, from [`split_documents`])
/// all look like routes, decoded by one parser over the whole text: a parser
/// per piece costs its buffers (64 kB) and set-up per route. Each entry is
/// the piece's route, or `None` where the typed path declined it (that piece
/// is read again alone). `None` for the whole file when its documents might
/// not be exactly its pieces: with document-end markers (`...`) or
/// directives (`%`) the stream's documents are not only split at `---`
/// lines, and with fewer or more documents than pieces something else is
/// off.
fn typed_routes_of_file(
    path: &Path,
    text: &str,
    chunks: &[&str],
) -> Option<Vec<Option<Arc<HttpRoute>>>> {
    if chunks.len() < 2
        || !chunks.iter().all(|c| validate::may_be_route(c))
        || text
            .lines()
            .any(|l| l.starts_with("...") || l.starts_with('%'))
    {
        return None;
    }
    let mut documents = serde_yaml::Deserializer::from_str(text);
    let mut routes = Vec::with_capacity(chunks.len());
    for _ in chunks {
        let document = documents.next()?;
        let mut builder = validate::Builder::default();
        let route = builder
            .add_route_document(location(path), document)
            .then(|| builder.finish().ok())
            .flatten()
            .and_then(|mut c| c.routes.pop());
        routes.push(route);
    }
    if documents.next().is_some() {
        return None;
    }
    Some(routes)
}

fn convert_whole_file(path: &Path, text: &str) -> Converted {
    let mut builder = validate::Builder::default();
    add_documents(&mut builder, path, text);
    match builder.finish() {
        Ok(c) => Converted::Documents(vec![(digest(text), Document::of(c))]),
        Err(ConfigError::Invalid(errors)) => Converted::Invalid(errors),
        Err(other) => Converted::Invalid(vec![DocumentError {
            location: Location {
                file: path.to_path_buf(),
                document: 0,
                object: None,
            },
            field: String::new(),
            message: other.to_string(),
        }]),
    }
}

/// Splits a multi-document YAML text at its document markers: lines that
/// start with `---` followed by a space, a tab or the line end. YAML forbids
/// such lines inside quoted scalars, and block scalars under a mapping are
/// indented, so for the mappings a config holds these are exactly the
/// document boundaries. Each piece keeps its own marker line.
fn split_documents(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r']));
        if marker && line_start > start {
            pieces.push(&text[start..line_start]);
            start = line_start;
        }
        line_start += line.len();
    }
    if start < text.len() || pieces.is_empty() {
        pieces.push(&text[start..]);
    }
    pieces
}

fn add_documents(builder: &mut validate::Builder, path: &Path, text: &str) {
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let location = Location {
            file: path.to_path_buf(),
            document: index + 1,
            object: None,
        };
        match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(value) => builder.add(location, value),
            Err(e) => {
                builder.error(DocumentError {
                    location,
                    field: String::new(),
                    message: format!("not valid YAML: {e}"),
                });
                // The parser cannot resynchronise after a syntax error: it
                // would yield the same error forever. The rest of the file
                // is unreadable.
                break;
            }
        }
    }
}

/// One file's text converted and validated exactly as [`DirSource`] does it
/// (document by document, every error of the file when one fails): what
/// `sluice check-config` says of a directory holding just this file. The
/// entry point of the `config` fuzz target (`agent/fuzz`).
pub fn load_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
    match convert_file(path, text, HashMap::new()).0 {
        Converted::Documents(docs) => {
            let mut config = Config::default();
            for (_, d) in &docs {
                d.add_to(&mut config);
            }
            Ok(config)
        }
        Converted::Invalid(errors) => Err(ConfigError::Invalid(errors)),
    }
}

/// Checks, for each document of `text`, that the typed route path of the
/// directory source ([`validate::Builder::add_route_text`]) either declines
/// it or gives exactly the route the `Value` path gives: the oracle of the
/// `config` fuzz target. An `Err` names the disagreement.
#[doc(hidden)]
pub fn check_typed_routes(path: &Path, text: &str) -> Result<(), String> {
    let chunks = split_documents(text);
    let whole = typed_routes_of_file(path, text, &chunks);
    for (k, chunk) in chunks.iter().enumerate() {
        let by_value = || {
            let mut b = validate::Builder::default();
            add_documents(&mut b, path, chunk);
            b.finish()
        };
        let agrees = |typed: &[Arc<HttpRoute>], how: &str| match by_value() {
            Ok(c) if c.routes == typed && c.is_one_route() => Ok(()),
            Ok(c) => Err(format!(
                "typed path ({how}) gave {typed:?}, the Value path {:?} for {chunk:?}",
                c.routes
            )),
            Err(e) => Err(format!(
                "typed path ({how}) accepted what the Value path refuses ({e}): {chunk:?}"
            )),
        };
        let mut typed = validate::Builder::default();
        if typed.add_route_text(location(path), chunk) {
            let typed = typed
                .finish()
                .map_err(|e| format!("typed path accepted, then refused: {e}"))?;
            agrees(&typed.routes, "one piece")?;
        }
        if let Some(route) = whole.as_ref().and_then(|w| w[k].as_ref()) {
            agrees(std::slice::from_ref(route), "whole file")?;
        }
    }
    Ok(())
}

/// Parses and validates documents from `(file name, text)` pairs.
pub fn parse_documents<'a>(
    sources: impl IntoIterator<Item = (&'a Path, &'a str)>,
) -> Result<Config, ConfigError> {
    let mut builder = validate::Builder::default();
    for (path, text) in sources {
        add_documents(&mut builder, path, text);
    }
    builder.finish()
}
/// Converts and validates one object on its own, for sources that apply
/// object by object (Kubernetes): a bad object is reported and left out
/// without holding back the others. Merge the results with [`Config::merge`].
pub fn convert_object(value: serde_yaml::Value) -> Result<Config, Vec<DocumentError>> {
    let mut builder = validate::Builder::for_api_objects();
    builder.add(Location::api_object(), value);
    builder.finish().map_err(|e| match e {
        ConfigError::Invalid(errors) => errors,
        other => vec![DocumentError {
            location: Location::api_object(),
            field: String::new(),
            message: other.to_string(),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 8080, protocol: HTTP}]
";

    fn route(name: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{}}]\n"
        )
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-load-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn route_names(c: &Config) -> Vec<String> {
        c.routes.iter().map(|r| r.id.name.clone()).collect()
    }

    #[test]
    fn names_no_api_server_would_take_are_refused_with_the_rule() {
        let errors = |text: &str| match load_text(Path::new("t.yaml"), text) {
            Err(ConfigError::Invalid(e)) => e
                .into_iter()
                .map(|e| format!("{} {}", e.field, e.message))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let gw = GATEWAY
            .replace("name: gw,", "name: \"web gw\",")
            .replace("name: http,", "name: HTTP,");
        let e = errors(&gw);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("metadata.name ") && e[0].contains("DNS-1123 subdomain"),
            "{e:?}"
        );
        assert!(e[1].starts_with("spec.listeners[0].name "), "{e:?}");
        // A file of routes (decoded on the typed path) reports them too.
        let routes = format!(
            "{}---\n{}",
            route("ok"),
            route("bad").replace("namespace: default", "namespace: Team.A")
        );
        let e = errors(&routes);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("metadata.namespace ") && e[0].contains("DNS-1123 label"),
            "{e:?}"
        );
    }

    #[test]
    fn only_changed_files_are_parsed_again() {
        let dir = temp_dir("cache");
        std::fs::write(dir.join("gw.yaml"), GATEWAY).unwrap();
        std::fs::write(dir.join("a.yaml"), route("a")).unwrap();
        std::fs::write(dir.join("b.yaml"), route("b")).unwrap();
        let mut source = DirSource::new(&dir);

        let (c, s) = source.load_with_stats().unwrap();
        assert_eq!(route_names(&c), ["a", "b"]);
        assert_eq!((s.files, s.read, s.parsed), (3, 3, 3));

        let (c, s) = source.load_with_stats().unwrap();
        assert_eq!(route_names(&c), ["a", "b"]);
        assert_eq!((s.read, s.parsed), (0, 0), "nothing changed");

        std::fs::write(dir.join("b.yaml"), route("b2")).unwrap();
        let (c, s) = source.load_with_stats().unwrap();
        assert_eq!(route_names(&c), ["a", "b2"]);
        assert_eq!((s.read, s.parsed), (1, 1));

        // Same content written again: read, not parsed.
        std::fs::write(dir.join("b.yaml"), route("b2")).unwrap();
        let s = source.load_with_stats().unwrap().1;
        assert!(s.read <= 1 && s.parsed == 0, "{s:?}");

        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        let (c, s) = source.load_with_stats().unwrap();
        assert_eq!(route_names(&c), ["b2"]);
        assert_eq!(s.files, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_invalid_file_fails_the_load_and_its_fix_parses_only_that_file() {
        let dir = temp_dir("invalid");
        std::fs::write(dir.join("gw.yaml"), GATEWAY).unwrap();
        std::fs::write(dir.join("a.yaml"), route("a")).unwrap();
        let mut source = DirSource::new(&dir);
        source.load().unwrap();

        std::fs::write(dir.join("a.yaml"), "kind: HTTPRoute\napiVersion: [").unwrap();
        match source.load() {
            Err(ConfigError::Invalid(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert!(errors[0].location.file.ends_with("a.yaml"), "{errors:?}");
                assert!(errors[0].message.contains("not valid YAML"), "{errors:?}");
            }
            other => panic!("expected an invalid-config error, got {other:?}"),
        }

        std::fs::write(dir.join("a.yaml"), route("fixed")).unwrap();
        let (c, s) = source.load_with_stats().unwrap();
        assert_eq!(route_names(&c), ["fixed"]);
        assert_eq!(s.parsed, 1, "the valid gateway file is not parsed again");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A route with most of what a route holds: the typed path's work.
    const FULL_ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: full, namespace: apps, labels: {app: x}, generation: 3,
  creationTimestamp: \"2024-01-02T03:04:05Z\"}
spec:
  parentRefs: [{name: gw, namespace: default, sectionName: http, port: 8080}]
  hostnames: [a.example.com, \"*.example.org\"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: svc, port: 8080}]
  - matches: [{path: {type: Exact, value: /health}, headers: [{name: x-probe, value: \"yes\"}],
      queryParams: [{type: RegularExpression, name: q, value: \"^a+$\"}], method: GET}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-route, value: full}], remove: [x-drop]}
    backendRefs: [{name: svc, port: 8080, weight: 3}, {name: other, port: 80}]
    timeouts: {request: 10s}
status: {parents: []}
";

    #[test]
    fn the_typed_route_path_gives_what_the_value_path_gives() {
        let mut typed = validate::Builder::default();
        let location = Location {
            file: PathBuf::from("t.yaml"),
            document: 1,
            object: None,
        };
        assert!(typed.add_route_text(location, FULL_ROUTE), "taken");
        let typed = typed.finish().unwrap();
        let by_value = parse_documents([(Path::new("t.yaml"), FULL_ROUTE)]).unwrap();
        assert_eq!(typed.routes, by_value.routes);
        assert_eq!(typed.routes[0].rules.len(), 2);
        check_typed_routes(Path::new("t.yaml"), &format!("{GATEWAY}---\n{FULL_ROUTE}")).unwrap();
        // Other kinds, and routes with anything to report, take the Value path.
        let mut b = validate::Builder::default();
        let location = Location {
            file: PathBuf::from("t.yaml"),
            document: 1,
            object: None,
        };
        assert!(!b.add_route_text(location.clone(), GATEWAY));
        let bad = FULL_ROUTE.replace("type: Exact", "type: Nope");
        assert!(!b.add_route_text(location, &bad));
    }

    #[test]
    fn a_file_of_routes_is_read_with_one_parser_and_agrees_piece_by_piece() {
        let path = Path::new("t.yaml");
        let file = |third: &str| format!("{FULL_ROUTE}---\n{}---\n{third}", route("b"));
        let text = file(&route("c"));
        let chunks = split_documents(&text);
        let whole = typed_routes_of_file(path, &text, &chunks).expect("all routes");
        let names: Vec<_> = whole
            .iter()
            .map(|r| r.as_ref().map(|r| r.id.name.as_str()))
            .collect();
        assert_eq!(names, [Some("full"), Some("b"), Some("c")]);
        check_typed_routes(path, &text).unwrap();
        assert_eq!(
            route_names(&load_text(path, &text).unwrap()),
            route_names(&parse_documents([(path, text.as_str())]).unwrap())
        );

        // A piece the typed path declines is left to be read alone; its
        // error names its document in the file.
        let text = file(&route("c").replace("name: c,", "name: 9,"));
        let chunks = split_documents(&text);
        let whole = typed_routes_of_file(path, &text, &chunks).expect("all routes");
        assert!(whole[0].is_some() && whole[1].is_some() && whole[2].is_none());
        check_typed_routes(path, &text).unwrap();
        match load_text(path, &text) {
            Err(ConfigError::Invalid(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].location.document, 3, "{errors:?}");
                assert_eq!(errors[0].field, "metadata.name", "{errors:?}");
            }
            other => panic!("expected an invalid-config error, got {other:?}"),
        }

        // Files whose documents might not be exactly their pieces, or with
        // other kinds, are not read this way.
        for text in [
            format!("{GATEWAY}---\n{}", route("a")),
            format!("{}...\n---\n{}", route("a"), route("b")),
            format!("%YAML 1.2\n---\n{}---\n{}", route("a"), route("b")),
            format!("# only a comment\n---\n{}---\n{}", route("a"), route("b")),
            route("a"),
        ] {
            let chunks = split_documents(&text);
            assert!(
                typed_routes_of_file(path, &text, &chunks).is_none(),
                "{text}"
            );
            check_typed_routes(path, &text).unwrap();
        }
    }

    #[test]
    fn the_typed_route_path_refuses_what_the_value_path_refuses() {
        // Plain scalars that are not strings where a string is expected,
        // quoted numbers where a number is, repeated keys: refused as before,
        // with the field and the document named.
        let cases = [
            (
                "name: full,",
                "name: 123,",
                "metadata.name",
                "expected a string",
            ),
            (
                "name: full,",
                "name: true,",
                "metadata.name",
                "expected a string",
            ),
            (
                "name: full,",
                "name: null,",
                "metadata.name",
                "expected a string",
            ),
            (
                "name: full,",
                "name: 1.5,",
                "metadata.name",
                "expected a string",
            ),
            (
                "namespace: apps,",
                "namespace: 7,",
                "metadata.namespace",
                "expected a string",
            ),
            (
                "[a.example.com,",
                "[0x10,",
                "spec.hostnames[0]",
                "expected a string",
            ),
            (
                "value: /api}",
                "value: 12}",
                "spec.rules[0].matches[0].path.value",
                "expected a string",
            ),
            (
                "name: x-probe",
                "name: false",
                "spec.rules[1].matches[0].headers[0].name",
                "expected a string",
            ),
            (
                "port: 8080}]\n  -",
                "port: \"8080\"}]\n  -",
                "spec.rules[0].backendRefs[0].port",
                "invalid type",
            ),
            (
                "weight: 3}",
                "weight: 3.5}",
                "spec.rules[1].backendRefs[0].weight",
                "invalid type",
            ),
            (
                "labels: {app: x}",
                "labels: {app: x, app: y}",
                "",
                "duplicate entry",
            ),
            (
                "status: {parents: []}",
                "status: {a: 1, a: 2}",
                "",
                "duplicate entry",
            ),
        ];
        for (from, to, field, message) in cases {
            assert!(FULL_ROUTE.contains(from), "{from}");
            let bad = FULL_ROUTE.replacen(from, to, 1);
            let text = format!("{GATEWAY}---\n{bad}");
            check_typed_routes(Path::new("t.yaml"), &text).unwrap();
            let errors = match load_text(Path::new("t.yaml"), &text) {
                Err(ConfigError::Invalid(errors)) => errors,
                other => panic!("{to}: expected an invalid-config error, got {other:?}"),
            };
            assert_eq!(errors.len(), 1, "{to}: {errors:?}");
            let e = &errors[0];
            assert_eq!(e.location.document, 2, "{to}: {e}");
            assert_eq!(e.field, field, "{to}: {e}");
            assert!(e.message.contains(message), "{to}: {e}");
            // The same error as reading the file whole.
            match parse_documents([(Path::new("t.yaml"), text.as_str())]) {
                Err(ConfigError::Invalid(whole)) => assert_eq!(&whole, &errors, "{to}"),
                other => panic!("{to}: expected an invalid-config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn documents_split_at_their_markers_only() {
        assert_eq!(split_documents("a: 1\n"), ["a: 1\n"]);
        assert_eq!(
            split_documents("---\na: 1\n---\nb: 2\n"),
            ["---\na: 1\n", "---\nb: 2\n"]
        );
        assert_eq!(
            split_documents("# head\na: 1\n--- # two\nb: |\n  ---x\n---\n"),
            ["# head\na: 1\n", "--- # two\nb: |\n  ---x\n", "---\n"]
        );
        // Not markers: `----`, `---x`, an indented `---`.
        assert_eq!(split_documents("a: ----\n---x: 1\n  ---\n").len(), 1);
        assert_eq!(split_documents(""), [""]);
    }

    #[test]
    fn a_changed_document_is_the_only_one_parsed_and_errors_keep_their_document_number() {
        let dir = temp_dir("docs");
        let routes = |third: &str| {
            format!(
                "{GATEWAY}---\n{}---\n{}---\n{third}",
                route("a"),
                route("b")
            )
        };
        std::fs::write(dir.join("all.yaml"), routes(&route("c"))).unwrap();
        let mut source = DirSource::new(&dir);
        let (c, s) = source.load_with_stats().unwrap();
        assert_eq!(route_names(&c), ["a", "b", "c"]);
        assert_eq!(s.documents_parsed, 4);

        std::fs::write(dir.join("all.yaml"), routes(&route("c2"))).unwrap();
        let (c, s) = source.load_with_stats().unwrap();
        assert_eq!(route_names(&c), ["a", "b", "c2"], "order kept");
        assert_eq!((s.parsed, s.documents_parsed), (1, 1));

        std::fs::write(dir.join("all.yaml"), routes("kind: HTTPRoute\nspec: 7\n")).unwrap();
        match source.load() {
            Err(ConfigError::Invalid(errors)) => {
                assert!(
                    errors.iter().all(|e| e.location.document == 4),
                    "{errors:?}"
                );
            }
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
