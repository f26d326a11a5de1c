#![no_std]
//! Kernel-side programs of Sluice. The programs live in the `sluice` binary target
//! (`main.rs`); this library target only exists so that the agent can name this
//! package as a build dependency (aya-build builds the binary for `bpfel-unknown-none`).
