//! The ledger: the record of every fleet run and every tenant in it, so that it survives a crash and so that
//! scripts (and `fleet status`, `fleet retry`, `--only-failed`) can read it. Two backends implement one
//! [`Ledger`] trait: a SQLite file for one runner (the default), and the schema `flotilla_ledger` of a PostgreSQL
//! control database that several runners share ([`PgLedger`]); [`open`] picks one from a [`LedgerLocation`].
//!
//! It owns the ledger's storage, its versioned schemas and the JSON shape of `fleet status --json`. It
//! deliberately leaves to others: deciding what to run (`fleet`), redacting secrets (callers pass redacted text),
//! resolving the location and its password (`config`), and rendering text (`cli`). Only the fleet coordinator
//! writes the ledger; other processes may read it while a run goes on.
//!
//! A run that never reached [`Ledger::finish_run`] reads back with `finished_at = None`. Whether it is still
//! going or its process died is told by [`RunRecord::state`]; [`status_json`] and
//! [`TenantRecord::effective_status`] then show its pending and running tenants as interrupted.

mod error;
mod id;
mod json;
mod open;
mod pg_schema;
mod postgres;
mod queue;
mod record;
mod schema;
mod sqlite;
mod status;
mod store;

pub use error::LedgerError;
pub use id::RunId;
pub use json::status_json;
pub use open::open;
pub use pg_schema::{PG_SCHEMA, PG_SCHEMA_VERSION};
pub use postgres::PgLedger;
pub use queue::{
    fair_share, Claim, ClaimState, ClaimedTenant, Joined, OpenRun, Placement, RunnerInfo, RunnerRecord, ServerDemand,
    Shares,
};
pub use record::{
    rows_column, rows_of, rows_text, NewRun, NewTenant, RunRecord, RunSelector, RunState, TenantRecord, TenantUpdate,
};
pub use schema::SCHEMA_VERSION;
pub use sqlite::SqliteLedger;
pub use status::{ParseStatusError, StatusCounts, TenantStatus};
pub use store::{Ledger, DEFAULT_LEASE};

pub use crate::config::LedgerLocation;

#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
