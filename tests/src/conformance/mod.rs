//! Gateway API conformance runner: replays the upstream GATEWAY-HTTP, GATEWAY-GRPC,
//! GATEWAY-TLS and GATEWAY-TCP scenarios (`tests/conformance/cases/*.yaml` + the upstream manifests)
//! against the `sluice` agent fed from files, one agent per test, with echo
//! backends in process. See `tests/conformance/README.md`.
pub mod cases;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod compare;
pub mod grpc;
pub mod l4;
pub mod manifests;
pub mod network;
pub mod report;
pub mod runner;
pub mod stats;
pub mod status;
pub mod tls_backends;
pub mod websocket;
