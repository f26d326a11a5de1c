//! W3C `traceparent` parsing: never panics, and what parses survives a round
//! trip through the formatter the gateway forwards requests with.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use sluice::telemetry::{context::format_traceparent, TraceParent};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let Some(parsed) = TraceParent::parse(&value) else {
        return;
    };
    // What the specification requires of a valid value.
    assert!(data.len() >= 55, "{value:?}");
    assert_ne!(parsed.trace_id, [0; 16], "{value:?}");
    assert_ne!(parsed.parent_id, [0; 8], "{value:?}");
    // The formatter writes version 00 and only the sampled flag.
    let formatted = format_traceparent(&parsed.trace_id, &parsed.parent_id, parsed.sampled());
    assert_eq!(formatted.len(), 55);
    let again = TraceParent::parse(&formatted).expect("a formatted traceparent parses");
    assert_eq!(again.trace_id, parsed.trace_id);
    assert_eq!(again.parent_id, parsed.parent_id);
    assert_eq!(again.sampled(), parsed.sampled());
    assert_eq!(again.flags, parsed.flags & 0x01);
    // A version 00 value is exactly what the formatter writes for it.
    if data.starts_with(b"00-") && parsed.flags <= 1 {
        assert_eq!(formatted.as_bytes(), data);
    }
});
