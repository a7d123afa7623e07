//! The shared revision set: revisions that belong to a database rather than to any tenant (extensions, shared
//! lookup tables and types), with a version table of their own in a schema flotilla.toml names.
//!
//! A fleet upgrade applies it once per database, under the shared version table's advisory lock (which every
//! runner and tenant of that database contends for), before any tenant of that database starts: once per
//! server database for schema tenants, and in each tenant's own database for database tenants. Tenant revisions
//! may `depends_on` a shared revision by id; such a tenant is not started in a database that lacks it.
//! Scheduling (once per server) is the worker's; this module knows one connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio_postgres::Client;

use crate::executor::{db_message, ExecError, ExecOptions, Session, VersionStore};
use crate::graph::{Direction, RevisionGraph, Step};
use crate::revision::RevisionId;
use crate::script::Script;

/// The shared revision set as loaded, and what the tenant revisions require of it.
pub struct SharedEngine {
    pub graph: RevisionGraph,
    pub scripts: BTreeMap<RevisionId, Script>,
    /// Placed in its own schema, so every tenant of a database reads the same rows.
    pub store: Arc<dyn VersionStore>,
    /// Tenant revision -> the shared revisions it depends on.
    pub requires: BTreeMap<RevisionId, Vec<RevisionId>>,
}

/// Why the shared set could not be applied or read.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("shared revisions could not be applied: {0}")]
    Exec(#[source] ExecError),
    #[error("shared revisions could not be planned: {0}")]
    Plan(#[source] crate::graph::GraphError),
    #[error("could not read the shared version table: {0}")]
    Read(String),
}

impl SharedError {
    pub fn is_transient(&self) -> bool {
        match self {
            SharedError::Exec(e) => e.is_transient(),
            SharedError::Plan(_) | SharedError::Read(_) => false,
        }
    }
}

/// A tenant step that needs a shared revision the database does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingShared {
    pub revision: RevisionId,
    pub shared: RevisionId,
}

impl SharedEngine {
    /// Upgrade the shared set of the database `client` is connected to, to every shared head, waiting up to
    /// `opts.lock_wait` for another run applying it; returns the shared revisions the database then has and how
    /// many steps ran. `opts` must not name a tenant schema: the shared store names its own.
    pub async fn upgrade(
        &self,
        client: &Client,
        opts: &ExecOptions,
        stop: &AtomicBool,
    ) -> Result<(BTreeSet<RevisionId>, usize), SharedError> {
        let mut opts = opts.clone();
        opts.schema = None;
        let mut session = Session::open(client, self.store.as_ref(), &opts)
            .await
            .map_err(SharedError::Exec)?;
        let rows = session.rows().to_vec();
        let plan = match self.graph.plan_upgrade(&rows, "heads") {
            Ok(plan) => plan,
            Err(e) => {
                let _ = session.close().await;
                return Err(SharedError::Plan(e));
            }
        };
        let mut ignore = |_| {};
        let result = session.run(&plan, &self.scripts, &mut ignore, stop).await;
        let closed = session.close().await;
        let report = result.map_err(|f| SharedError::Exec(f.error))?;
        closed.map_err(SharedError::Exec)?;
        let applied = self.graph.applied(&report.rows_after).map_err(SharedError::Plan)?;
        Ok((applied, report.steps.len()))
    }

    /// The shared revisions the database has, read without the lock (and without creating anything).
    pub async fn read_applied(&self, client: &Client) -> Result<BTreeSet<RevisionId>, SharedError> {
        let [exists, _] = self.store.exists_sql();
        let present: bool = client
            .query_one(&format!("SELECT {exists}"), &[])
            .await
            .map_err(|e| SharedError::Read(db_message(&e)))?
            .get(0);
        if !present {
            return Ok(BTreeSet::new());
        }
        let rows: Vec<RevisionId> = client
            .simple_query(&self.store.read_rows_sql())
            .await
            .map_err(|e| SharedError::Read(db_message(&e)))?
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(RevisionId::from),
                _ => None,
            })
            .collect();
        self.graph.applied(&rows).map_err(SharedError::Plan)
    }

    /// The first upgrade step of `steps` that depends on a shared revision missing from `applied`.
    pub fn missing(&self, steps: &[Step], applied: &BTreeSet<RevisionId>) -> Option<MissingShared> {
        steps.iter().filter(|s| s.direction == Direction::Up).find_map(|step| {
            let needed = self.requires.get(&step.revision)?;
            needed.iter().find(|n| !applied.contains(*n)).map(|n| MissingShared {
                revision: step.revision.clone(),
                shared: n.clone(),
            })
        })
    }
}
