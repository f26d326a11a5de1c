//! Test support for Sluice: an echo backend and a network-namespace topology
//! harness for the privileged end-to-end tests.
pub mod conformance;
pub mod echo;
pub mod flood;
pub mod frames;
pub mod grpc;
pub mod kubelite;
pub mod netns;
pub mod process;
pub mod stores;
pub mod ws;
