//! The fleet: tenant selection and discovery, per-server connection caps and pools, the coordinator that
//! schedules tenants under the fleet-wide limits, and the workers that run one tenant each with retries.
//!
//! The fleet drives the executor thousands of times; it never parses files or flags (the CLI resolves those)
//! and never renders anything (it emits `observe::FleetEvent`s).

mod breaker;
mod coordinator;
mod current;
mod discover;
mod error;
pub mod health;
mod record;
pub mod rollback;
mod server;
mod shared;
mod tenant;
pub mod waves;
mod worker;

pub use coordinator::{run, run_with_signals, FleetOutcome, FleetRequest, Source, WaveRun};
pub use current::{read_versions, schema_tenants_at_target, Versions};
pub use discover::{discover, merge, source_origin, Origin};
pub use error::{FleetError, TenantProblem};
pub use record::{LedgerQueue, LedgerWriter, WriterDuties};
pub use server::{Conn, ConnectError, Server};
pub use shared::{MissingShared, SharedEngine, SharedError};
pub use tenant::{parse_tag, place_kind, Place, Selection, Tenant};
pub use worker::{migration_plan, Action, Engine, Failure, Outcome, TenantLimits};
