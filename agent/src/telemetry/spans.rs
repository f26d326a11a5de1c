//! A recorded request as OTLP spans: the gateway's server span and a client
//! span per upstream attempt, with the OpenTelemetry HTTP semantic
//! conventions' attribute names and the policy decision as a span event.
//!
//! Built by the exporter thread from the request's access-log [`Entry`],
//! never on the request path.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::{
    common::v1::{any_value::Value, AnyValue, KeyValue},
    trace::v1::{span, status::StatusCode, Span, Status},
};

use super::context::RequestTrace;
use crate::access_log::Entry;

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    kv(key, Value::StringValue(value.into()))
}

fn int(key: &str, value: impl Into<i64>) -> KeyValue {
    kv(key, Value::IntValue(value.into()))
}

fn header_str(v: &http::HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

/// `W3C` trace flags of a recorded span.
const FLAG_SAMPLED: u32 = 0x01;

/// The spans of one recorded request (none when it carries no trace).
pub fn of_entry(e: &Entry) -> Vec<Span> {
    let Some(trace) = &e.trace else {
        return Vec::new();
    };
    let mut spans = Vec::with_capacity(1 + trace.attempts.len());
    spans.push(server_span(e, trace));
    for (i, a) in trace.attempts.iter().enumerate() {
        let mut attributes = vec![
            string("http.request.method", e.method.as_str()),
            string("server.address", a.endpoint.ip().to_string()),
            int("server.port", i64::from(a.endpoint.port())),
            string("network.peer.address", a.endpoint.ip().to_string()),
        ];
        if i > 0 {
            // Semantic conventions: the ordinal of a resent request.
            attributes.push(int("http.request.resend_count", i as i64));
        }
        if let Some(s) = a.status {
            attributes.push(int("http.response.status_code", i64::from(s)));
        }
        if let Some(err) = a.error {
            attributes.push(string("error.type", err));
        }
        let failed = a.error.is_some() || a.status.is_some_and(|s| s >= 500);
        spans.push(Span {
            trace_id: trace.trace_id.to_vec(),
            span_id: a.span_id.to_vec(),
            parent_span_id: trace.span_id.to_vec(),
            flags: FLAG_SAMPLED,
            name: e.method.as_str().to_owned(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: nanos(a.start),
            end_time_unix_nano: nanos(a.end.unwrap_or(a.start)),
            attributes,
            status: Some(status(failed, a.error.unwrap_or_default())),
            ..Default::default()
        });
    }
    spans
}

fn status(failed: bool, message: &str) -> Status {
    Status {
        message: if failed {
            message.to_owned()
        } else {
            String::new()
        },
        code: if failed {
            StatusCode::Error as i32
        } else {
            StatusCode::Unset as i32
        },
    }
}

fn server_span(e: &Entry, trace: &RequestTrace) -> Span {
    let start = e.time;
    let end = start + e.duration.max(Duration::from_nanos(1));
    let mut attributes = vec![
        string("http.request.method", e.method.as_str()),
        string("url.path", e.uri.path()),
        string(
            "url.scheme",
            if e.tls_version.is_some() {
                "https"
            } else {
                "http"
            },
        ),
        int("http.response.status_code", i64::from(e.status)),
        string("client.address", e.client.to_string()),
        string("network.peer.address", e.peer.ip().to_string()),
        int("network.peer.port", i64::from(e.peer.port())),
        string("network.protocol.version", protocol_version(e.version)),
        int("http.request.body.size", e.bytes_in as i64),
        int("http.response.body.size", e.bytes_out as i64),
        string("sluice.gateway", &*e.gateway),
        string("sluice.reason", e.reason),
        string("sluice.response_flag", e.flag),
    ];
    if let Some(a) = e.authority() {
        attributes.push(string(
            "server.address",
            String::from_utf8_lossy(a).into_owned(),
        ));
    }
    if let Some(l) = &e.listener {
        attributes.push(string("sluice.listener", &**l));
    }
    if let Some(r) = &e.route {
        attributes.push(string("http.route", &**r));
    }
    if let Some(r) = e.rule {
        attributes.push(int("sluice.rule", i64::from(r)));
    }
    if let Some(ua) = &e.user_agent {
        attributes.push(string("user_agent.original", header_str(ua)));
    }
    if let Some(id) = &e.request_id {
        attributes.push(string("sluice.request_id", header_str(id)));
    }
    if let Some(v) = e.tls_version {
        attributes.push(string("tls.protocol.version", v));
    }
    if let Some(p) = &e.principal {
        attributes.push(string("enduser.id", p.as_str()));
    }
    if e.incomplete {
        attributes.push(kv("sluice.incomplete", Value::BoolValue(true)));
    }
    let mut events = Vec::new();
    if let Some((policy, section)) = &e.policy {
        // The policy decision that answered the request.
        events.push(span::Event {
            time_unix_nano: nanos(end),
            name: "sluice.policy.rejected".to_owned(),
            attributes: vec![
                string("sluice.policy", policy.as_str()),
                string("sluice.policy.section", *section),
                string("sluice.reason", e.reason),
            ],
            dropped_attributes_count: 0,
        });
    }
    let name = match &e.route {
        Some(r) => format!("{} {r}", e.method),
        None => e.method.as_str().to_owned(),
    };
    Span {
        trace_id: trace.trace_id.to_vec(),
        span_id: trace.span_id.to_vec(),
        parent_span_id: trace.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: FLAG_SAMPLED,
        name,
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: nanos(start),
        end_time_unix_nano: nanos(end),
        attributes,
        events,
        // Server spans are errors for 5xx only (4xx are the client's).
        status: Some(status(e.status >= 500, e.reason)),
        ..Default::default()
    }
}

fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::context::{Attempt, RequestTrace};

    fn entry(trace: Option<RequestTrace>) -> Entry {
        let mut e = crate::access_log::sample_entry();
        e.trace = trace;
        e
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
        s.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_request_without_a_trace_has_no_spans() {
        assert!(of_entry(&entry(None)).is_empty());
    }

    #[test]
    fn server_and_client_spans_are_linked() {
        let t0 = SystemTime::now();
        let trace = RequestTrace {
            trace_id: [7; 16],
            parent: Some([1; 8]),
            span_id: [2; 8],
            sampled: true,
            attempts: vec![
                Attempt {
                    span_id: [3; 8],
                    endpoint: "10.0.0.1:8080".parse().unwrap(),
                    start: t0,
                    end: Some(t0 + Duration::from_millis(1)),
                    status: None,
                    error: Some("connect"),
                },
                Attempt {
                    span_id: [4; 8],
                    endpoint: "10.0.0.2:8080".parse().unwrap(),
                    start: t0 + Duration::from_millis(2),
                    end: Some(t0 + Duration::from_millis(5)),
                    status: Some(200),
                    error: None,
                },
            ],
        };
        let mut e = entry(Some(trace));
        e.policy = Some(("team/auth".into(), "jwt"));
        let spans = of_entry(&e);
        assert_eq!(spans.len(), 3);
        let server = &spans[0];
        assert_eq!(server.kind, span::SpanKind::Server as i32);
        assert_eq!(server.parent_span_id, vec![1; 8]);
        assert_eq!(server.trace_id, vec![7; 16]);
        assert!(server.end_time_unix_nano > server.start_time_unix_nano);
        assert_eq!(server.events[0].name, "sluice.policy.rejected");
        for client in &spans[1..] {
            assert_eq!(client.kind, span::SpanKind::Client as i32);
            assert_eq!(client.parent_span_id, vec![2; 8]);
        }
        assert_eq!(
            spans[1].status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert_eq!(
            attr(&spans[2], "http.response.status_code"),
            Some(&Value::IntValue(200))
        );
        assert_eq!(
            attr(&spans[2], "http.request.resend_count"),
            Some(&Value::IntValue(1))
        );
        assert_eq!(
            attr(&spans[2], "server.address"),
            Some(&Value::StringValue("10.0.0.2".into()))
        );
    }
}
