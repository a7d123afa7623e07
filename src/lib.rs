//! Flotilla: Alembic-style versioned PostgreSQL migrations on a revision graph, run against one database or
//! fanned out across a fleet of tenant databases and schemas.
//!
//! The crate is a library with a thin binary on top (`src/main.rs`). See `ARCHITECTURE.md` for the code map.

// Errors carry facts (paths, lines, SQLSTATEs, the partial report) and travel only on cold paths.
#![allow(clippy::result_large_err)]

pub mod autogen;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod error;
pub mod executor;
pub mod extend;
pub mod fleet;
pub mod graph;
pub mod import;
pub mod ledger;
pub mod observe;
pub mod revision;
pub mod script;
pub mod signals;
