//! Answers the gateway makes itself, in the form a gRPC client understands.
//! A gRPC client reads the outcome from `grpc-status`, not from the HTTP
//! status: a bare 404 or 503 reaches the application as an opaque
//! `UNKNOWN`/`UNAVAILABLE` with the HTTP status in the message, and the
//! GRPCRoute specification asks for `UNIMPLEMENTED` when nothing matches.
//! So a rejected gRPC request gets HTTP 200 with a trailers-only response:
//! one HEADERS frame with `grpc-status` and `grpc-message`, ending the stream.
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use super::{full, Body};
use crate::policy::Rejection;

/// gRPC status codes the gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GrpcCode {
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// Whether the request is gRPC (`content-type: application/grpc`, with or
/// without a `+proto`-style suffix or parameters).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
                && matches!(v.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// The gRPC code for a gateway-made HTTP status, after the gRPC project's
/// HTTP-to-gRPC mapping, made more precise where the gateway knows why:
/// no route is `UNIMPLEMENTED`, a timeout `DEADLINE_EXCEEDED`.
pub fn code_for(status: StatusCode) -> GrpcCode {
    match status.as_u16() {
        400 => GrpcCode::InvalidArgument,
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 => GrpcCode::Unimplemented,
        408 | 504 => GrpcCode::DeadlineExceeded,
        413 | 429 | 431 => GrpcCode::ResourceExhausted,
        421 | 502 | 503 => GrpcCode::Unavailable,
        500 => GrpcCode::Internal,
        _ => GrpcCode::Unknown,
    }
}

/// The response for a rejection: as is for other requests; for a gRPC
/// request, a trailers-only response carrying the code and the message
/// (headers the rejection adds, `WWW-Authenticate` say, are kept).
pub fn answer(r: Rejection, grpc: bool) -> Response<Body> {
    if !grpc {
        return r.into_response();
    }
    let code = code_for(r.status);
    let message = percent_encode(&r.message);
    let mut response = r.into_response();
    *response.status_mut() = StatusCode::OK;
    *response.body_mut() = full(bytes::Bytes::new());
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.remove(header::CONTENT_LENGTH);
    h.insert("grpc-status", HeaderValue::from(code as u16));
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", v);
    }
    response
}

/// `grpc-message` encoding: printable ASCII but `%` as is, the rest `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Reason;

    #[test]
    fn recognises_grpc_content_types() {
        let ct = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_grpc(&h)
        };
        assert!(ct("application/grpc"));
        assert!(ct("application/grpc+proto"));
        assert!(ct("Application/GRPC;charset=x"));
        assert!(!ct("application/grpc-web"));
        assert!(!ct("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn rejections_become_trailers_only_grpc_answers() {
        let r = answer(Rejection::new(Reason::NoRoute, "no route: 100%"), true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "12");
        assert_eq!(r.headers()["grpc-message"], "no route: 100%25");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/grpc");
        let r = answer(Rejection::new(Reason::NoRoute, "no route"), false);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        for (reason, code) in [
            (Reason::UpstreamConnect, GrpcCode::Unavailable),
            (Reason::NoReadyEndpoints, GrpcCode::Unavailable),
            (Reason::RequestTimeout, GrpcCode::DeadlineExceeded),
            (Reason::UpstreamTimeout, GrpcCode::DeadlineExceeded),
            (Reason::NoBackends, GrpcCode::Internal),
        ] {
            let r = Rejection::new(reason, "x");
            assert_eq!(code_for(r.status), code, "{reason:?} ({})", r.status);
        }
        assert_eq!(
            code_for(StatusCode::UNAUTHORIZED),
            GrpcCode::Unauthenticated
        );
        assert_eq!(code_for(StatusCode::FORBIDDEN), GrpcCode::PermissionDenied);
    }
}
