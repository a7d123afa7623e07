//! The one integration test binary: every module shares one PostgreSQL cluster through `harness`.
//!
//! Run it with `scripts/test` (see `docs/testing.md`); plain `cargo test` starts its own cluster.

// Each test module uses a different part of the harness.
#[allow(dead_code, unused_imports)]
mod harness;

mod autogen_cli;
mod autogen_corpus;
mod harness_tests;
