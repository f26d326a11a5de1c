//! Command-line flags of tracing (flattened into the agent's `run` flags).
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use super::Settings;

/// Tracing flags (README: "Tracing").
#[derive(Debug, Clone, clap::Args)]
pub struct TracingArgs {
    /// Export OpenTelemetry spans over OTLP/HTTP (protobuf) to this URL,
    /// e.g. `http://otel-collector:4318/v1/traces`. Unset: no spans; a
    /// received `traceparent` is still forwarded as it came.
    #[arg(long, value_name = "URL", env = "SLUICE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<Uri>,

    /// Share of new traces recorded, 0.0 to 1.0. Requests that arrive with
    /// a `traceparent` follow their caller's sampling decision.
    #[arg(long, value_name = "RATIO", default_value_t = 0.01, value_parser = parse_ratio)]
    pub trace_sample_ratio: f64,

    /// A header sent with every export request, `name=value` (repeatable;
    /// e.g. a collector's API key).
    #[arg(long = "otlp-header", value_name = "NAME=VALUE", value_parser = parse_header)]
    pub otlp_headers: Vec<(HeaderName, HeaderValue)>,

    /// `service.name` of the exported spans.
    #[arg(long, value_name = "NAME", default_value = "sluice")]
    pub otlp_service_name: String,

    /// Longest a recorded request waits before its batch is posted.
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 1000)]
    pub otlp_flush_ms: u64,
}

impl TracingArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            endpoint: self.otlp_endpoint.clone(),
            sample_ratio: self.trace_sample_ratio,
            service_name: self.otlp_service_name.clone(),
            headers: self.otlp_headers.clone(),
            flush_interval: Duration::from_millis(self.otlp_flush_ms.max(1)),
            ..Settings::default()
        }
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{r} is not between 0.0 and 1.0"))
    }
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected name=value"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} is not a valid header value"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert!(parse_ratio("1.5").unwrap_err().contains("between"));
        assert!(parse_ratio("x").is_err());
        let (n, v) = parse_header("x-api-key = s3cret").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-api-key", "s3cret"));
        assert!(parse_header("novalue").unwrap_err().contains("name=value"));
        assert!(parse_header("bad name=v").is_err());
    }
}
