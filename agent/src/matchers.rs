//! Value matchers shared by routing and policy: exact, prefix and regular
//! expression matches over paths and header or query values, as the Gateway
//! API defines them. Plain data with their semantics, so both the route
//! table and the policy rules use one implementation.

/// How a header or query value is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    /// Must match the whole value.
    Regex(Pattern),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => s == value,
            StringMatch::Regex(p) => p.is_match(value),
        }
    }
}

/// A regular expression (RE2 syntax, as the Gateway API asks) anchored to match
/// a whole value; compared by its source text.
///
/// Behind one pointer: inline, the source and the compiled expression made
/// every path, header and query match (regular expression or not) 32 bytes
/// larger, and a clone now shares the compiled expression.
#[derive(Clone)]
pub struct Pattern(std::sync::Arc<(String, regex::Regex)>);

impl Pattern {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::Regex::new(&format!("^(?:{source})$"))?;
        Ok(Self(std::sync::Arc::new((source.to_owned(), regex))))
    }

    pub fn as_str(&self) -> &str {
        &self.0 .0
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.0 .1.is_match(value)
    }
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pattern")
            .field("source", &self.0 .0)
            .field("regex", &self.0 .1)
            .finish()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Element-wise prefix, stored without a trailing slash (except `/` itself).
    Prefix(String),
    /// Whole-path regular expression.
    Regex(Pattern),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                p == "/"
                    || (path.starts_with(p.as_str())
                        && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}
