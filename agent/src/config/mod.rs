//! Configuration: the directory source, conversion and validation into the
//! domain types of [`model`]. Nothing outside this module sees YAML.
mod annotations;
mod backend_tls;
mod backends;
mod consul;
pub mod delegation;
mod filter;
mod gateway;
mod grpc_route;
pub mod identity;
mod keyed;
mod l4_route;
mod listener_set;
mod load;
pub mod model;
mod names;
pub mod policy;
mod refs;
mod resources;
mod route;
mod strict;
mod time;
mod validate;
mod watch;

use std::{fmt, path::PathBuf};

pub use annotations::{port_range_overlaps, PORT_RANGES_ANNOTATION};
pub use delegation::{Ancestor, Delegation, DELEGATE_ALL, DELEGATION_KIND};
pub use identity::NamespaceIdentity;
pub use keyed::KeyedDocuments;
pub use load::{
    check_typed_routes, convert_object, load_dir, load_text, parse_documents, DirSource, LoadStats,
};
pub use model::*;
pub use policy::SluicePolicy;
pub use refs::NAMESPACE_NAME_LABEL;
pub use watch::{settle, DirWatcher};

/// Where in the input a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// `Kind namespace/name`, when the document got far enough to tell.
    pub object: Option<String>,
}

impl Location {
    /// An object read from the Kubernetes API: no file and no document
    /// index; the object (`Kind namespace/name`) is filled in on conversion.
    pub fn api_object() -> Self {
        Self {
            file: PathBuf::new(),
            document: 0,
            object: None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.as_os_str().is_empty() {
            // From the Kubernetes API: the object is the whole location.
            return write!(
                f,
                "{}",
                self.object.as_deref().unwrap_or("<unknown object>")
            );
        }
        write!(f, "{}: document {}", self.file.display(), self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        Ok(())
    }
}

/// One problem in one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub location: Location,
    /// Dotted field path, e.g. `spec.listeners[0].port`; empty for the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(
                f,
                "{}: field {}: {}",
                self.location, self.field, self.message
            )
        }
    }
}

/// Errors of the configuration module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read configuration file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration directory {0} contains no YAML files (*.yaml, *.yml)")]
    Empty(PathBuf),
    #[error("cannot watch configuration directory {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("{} invalid configuration document(s):\n{}", .0.len(), join_lines(.0))]
    Invalid(Vec<DocumentError>),
}

fn join_lines(errors: &[DocumentError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}
