//! What the fuzz targets share: request heads written as text, so the seed
//! corpora are readable requests and the fuzzer mutates text.
//!
//! ```text
//! GET /v1/users/7?tenant=acme HTTP/1.1
//! Host: api.example.com
//! :authority: api.example.com      (HTTP/2's pseudo-header, or with HTTP/1.1 an absolute-form target)
//! x-version: 2
//!
//! body (free text, for targets that want more input)
//! ```
//!
//! Lines end with `\n` or `\r\n`. Lines whose name starts with `:` other
//! than `:authority` are the target's own parameters ([`Head::param`]).
//! This is the targets' input encoding, not an HTTP parser under test:
//! hyper parses real requests; the targets fuzz what the gateway does next.
use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};

/// A request head and the parameters and body that came with it.
#[derive(Debug)]
pub struct Head<'a> {
    pub request: Request<()>,
    params: Vec<(&'a str, &'a str)>,
    pub body: &'a str,
}

impl<'a> Head<'a> {
    /// Parses the text form; `None` when it does not make a request (a
    /// method, target or header the `http` crate refuses).
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = match text.split_once("\n\n") {
            Some(split) => split,
            None => match text.split_once("\r\n\r\n") {
                Some(split) => split,
                None => (text, ""),
            },
        };
        let mut lines = head.lines();
        let mut first = lines.next()?.splitn(3, ' ');
        let method = Method::from_bytes(first.next()?.as_bytes()).ok()?;
        let target = first.next()?;
        let version = match first.next() {
            Some("HTTP/2") => Version::HTTP_2,
            _ => Version::HTTP_11,
        };
        let mut authority = None;
        let mut headers = Vec::new();
        let mut params = Vec::new();
        for line in lines {
            let (name, value) = match line.strip_prefix(':') {
                Some(rest) => {
                    let (n, v) = rest.split_once(':')?;
                    (&line[..n.len() + 1], v)
                }
                None => line.split_once(':')?,
            };
            let value = value.trim_start_matches(' ');
            match name {
                ":authority" => authority = Some(value),
                n if n.starts_with(':') => params.push((&n[1..], value)),
                n => headers.push((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                )),
            }
        }
        let uri = match authority {
            Some(a) => Uri::try_from(format!("http://{a}{target}")).ok()?,
            None => Uri::try_from(target).ok()?,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .version(version)
            .body(())
            .ok()?;
        for (n, v) in headers {
            request.headers_mut().append(n, v);
        }
        Some(Head {
            request,
            params,
            body,
        })
    }

    /// The value of a `:name: value` parameter line.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}
