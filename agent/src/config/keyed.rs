//! Documents from a key-value store (Consul KV, etcd): each key holds the
//! text of one YAML file. Converted with the directory source's per-document
//! cache, so a change to one key re-parses only that key's changed
//! documents, and errors name the key as the directory source names a file.
use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use super::{
    load::{convert_file, digest, Converted},
    Config, ConfigError, LoadStats,
};

/// The per-key conversion cache of a store source.
#[derive(Debug, Default)]
pub struct KeyedDocuments {
    /// Key → (hash of its text, what it converted to).
    keys: BTreeMap<String, (u64, Converted)>,
}

impl KeyedDocuments {
    /// Converts `(key, text)` entries (in key order) into one validated
    /// configuration. Any invalid document fails the whole load with every
    /// error found; the cache is updated either way.
    pub fn load<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(Config, LoadStats), ConfigError> {
        let mut stats = LoadStats::default();
        let mut keys = BTreeMap::new();
        for (key, text) in entries {
            stats.files += 1;
            let d = digest(text);
            let entry = match self.keys.remove(key) {
                Some((old, converted)) if old == d => (old, converted),
                cached => {
                    stats.read += 1;
                    stats.parsed += 1;
                    let previous = match cached {
                        Some((_, Converted::Documents(docs))) => docs.into_iter().collect(),
                        _ => HashMap::new(),
                    };
                    let (converted, parsed) = convert_file(Path::new(key), text, previous);
                    stats.documents_parsed += parsed;
                    (d, converted)
                }
            };
            keys.insert(key.to_owned(), entry);
        }
        // Deleted keys go with the old map.
        self.keys = keys;
        let mut errors = Vec::new();
        let mut config = Config::default();
        for (_, converted) in self.keys.values() {
            match converted {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
        metadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: sluice\n  \
        listeners: [{name: http, port: 8080, protocol: HTTP}]\n";

    fn route(name: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: {name}, namespace: default}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{}}]\n"
        )
    }

    #[test]
    fn keys_convert_like_files_and_errors_name_the_key() {
        let mut cache = KeyedDocuments::default();
        let a = route("a");
        let (c, s) = cache
            .load([("sluice/gw.yaml", GATEWAY), ("sluice/a.yaml", a.as_str())])
            .unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(s.parsed, 2);
        let (_, s) = cache
            .load([("sluice/gw.yaml", GATEWAY), ("sluice/a.yaml", a.as_str())])
            .unwrap();
        assert_eq!(s.parsed, 0, "unchanged keys are not parsed again");
        let err = cache
            .load([
                ("sluice/gw.yaml", GATEWAY),
                ("sluice/a.yaml", "kind: HTTPRoute\nspec: 7\n"),
            ])
            .unwrap_err()
            .to_string();
        assert!(err.contains("sluice/a.yaml: document 1"), "{err}");
        let (c, _) = cache.load([("sluice/gw.yaml", GATEWAY)]).unwrap();
        assert!(c.routes.is_empty(), "a deleted key's documents are gone");
    }
}
