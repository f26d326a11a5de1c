//! Reading a directory of multi-document YAML files.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{validate, Config, ConfigError, DocumentError, Location};

/// Reads every `*.yaml` / `*.yml` file under `dir` (recursively, in path order)
/// and converts all documents into one validated [`Config`]. Any invalid
/// document fails the whole load, with every error found reported.
pub fn load_dir(dir: &Path) -> Result<Config, ConfigError> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files)?;
    if files.is_empty() {
        return Err(ConfigError::Empty(dir.to_path_buf()));
    }
    files.sort();
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile {
            path: path.clone(),
            source,
        })?;
        sources.push((path, text));
    }
    parse_documents(sources.iter().map(|(p, t)| (p.as_path(), t.as_str())))
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

/// Parses and validates documents from `(file name, text)` pairs.
pub fn parse_documents<'a>(
    sources: impl IntoIterator<Item = (&'a Path, &'a str)>,
) -> Result<Config, ConfigError> {
    let mut builder = validate::Builder::default();
    for (path, text) in sources {
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
    builder.finish()
}

/// Converts and validates one object on its own, for sources that apply
/// object by object (Kubernetes): a bad object is reported and left out
/// without holding back the others. Merge the results with [`Config::merge`].
pub fn convert_object(value: serde_yaml::Value) -> Result<Config, Vec<DocumentError>> {
    let mut builder = validate::Builder::default();
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
