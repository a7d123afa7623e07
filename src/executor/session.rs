//! A migration session on one connection: settings, the advisory lock, reading the version rows, and running
//! plan steps so that each revision's SQL and its version-row update commit together.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use super::error::{db_message, ExecError, ExecFailure};
use super::phased::run_phased;
use super::sql::{quote_ident, quote_literal};
use super::store::{Blocked, HistoryEntry, HistoryRow, VersionStore};
use crate::backfill::RowThrottle;
use crate::graph::{Direction, Plan, Step};
use crate::revision::RevisionId;
use crate::script::{Script, Section};

/// How many revisions share one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionPer {
    /// Each revision commits on its own (the default, as Alembic's `transaction_per_migration`).
    #[default]
    Revision,
    /// The whole plan commits or rolls back as one; no-transaction revisions are refused.
    Run,
}

/// When a session is reset to a clean state between pieces of work on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetSession {
    /// Before a connection serves another tenant (always done); session settings a revision makes persist into
    /// that tenant's later revisions of the same run, as in Alembic.
    #[default]
    Tenant,
    /// Also before each revision, so every revision starts from the same clean session. Session advisory locks
    /// a revision takes are still released only when the tenant's work ends (the migration lock is one too).
    Revision,
}

impl ResetSession {
    pub fn parse(s: &str) -> Option<ResetSession> {
        match s {
            "tenant" => Some(ResetSession::Tenant),
            "revision" => Some(ResetSession::Revision),
            _ => None,
        }
    }
}

/// SQL that returns a session to the state of a new connection, as `DISCARD ALL` does, except that statements
/// prepared through the protocol (the driver's own, which it caches) survive: only those a revision made with
/// SQL `PREPARE` are deallocated. `DISCARD ALL` would also invalidate the driver's cached statements, and it
/// cannot share a round trip with other statements. With `is_keeping_advisory_locks` session advisory locks stay
/// (between the revisions of one tenant, whose migration lock is one).
pub fn session_reset_sql(is_keeping_advisory_locks: bool) -> String {
    let mut sql = String::from(
        "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; DISCARD PLANS; DISCARD TEMP; \
         DISCARD SEQUENCES; \
         DO $flotilla$DECLARE n text; BEGIN FOR n IN SELECT name FROM pg_catalog.pg_prepared_statements \
         WHERE from_sql LOOP EXECUTE pg_catalog.format('DEALLOCATE %I', n); END LOOP; END$flotilla$",
    );
    if !is_keeping_advisory_locks {
        sql.push_str("; SELECT pg_catalog.pg_advisory_unlock_all()");
    }
    sql
}

/// Everything the executor needs to know about how to run, resolved by the CLI or the fleet beforehand.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    /// How long to wait for another run's migration lock before giving up with [`ExecError::Locked`].
    pub lock_wait: Duration,
    /// A schema tenant's schema. The session's `search_path` is this schema followed by `shared_schemas`, so
    /// a revision's unqualified names land there, and every bookkeeping statement (version rows, history,
    /// backfill checkpoints, the lock key) names it explicitly, so nothing a revision does to `search_path` can
    /// redirect them. A schema that does not exist fails the session with [`ExecError::SchemaMissing`] before
    /// anything is written.
    pub schema: Option<String>,
    /// Schemas searched after a schema tenant's own (extensions living in `public`, say).
    pub shared_schemas: Vec<String>,
    /// Whether the session is also reset before each revision.
    pub reset_session: ResetSession,
    pub transaction_per: TransactionPer,
    /// SQL run inside every revision's transaction, before and after its own statements.
    pub before_each: Vec<String>,
    pub after_each: Vec<String>,
    /// Backfill rows per second on this database (`None`: unlimited).
    pub backfill_rate: Option<f64>,
    /// The fleet-wide backfill budget, shared by every tenant of a run.
    pub backfill_fleet: Option<Arc<RowThrottle>>,
    /// Waited on before each backfill batch (a fleet run's health throttling of the tenant's server).
    pub batch_gate: Option<Arc<dyn crate::backfill::BatchGate>>,
    /// Downgrade past revisions whose backfill declares no reverse (`--force`).
    pub is_irreversible_allowed: bool,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            lock_timeout: Some(Duration::from_secs(5)),
            statement_timeout: None,
            lock_wait: Duration::from_secs(30),
            schema: None,
            shared_schemas: Vec::new(),
            reset_session: ResetSession::Tenant,
            transaction_per: TransactionPer::Revision,
            before_each: Vec::new(),
            after_each: Vec::new(),
            backfill_rate: None,
            backfill_fleet: None,
            batch_gate: None,
            is_irreversible_allowed: false,
        }
    }
}

/// What the executor reports while it works.
#[derive(Debug, Clone)]
pub enum ExecEvent {
    StepStarted {
        revision: RevisionId,
        direction: Direction,
    },
    StepFinished {
        revision: RevisionId,
        direction: Direction,
        elapsed: Duration,
    },
    /// A backfill committed a batch (or is about to start): rows done so far in this step, cumulative across
    /// runs, and the estimated total.
    BackfillProgress {
        revision: RevisionId,
        rows_done: u64,
        rows_estimated: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub revision: RevisionId,
    pub direction: Direction,
    pub elapsed: Duration,
}

/// What a run did: the version rows before and after, and each committed step.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows_before: Vec<RevisionId>,
    pub rows_after: Vec<RevisionId>,
    pub steps: Vec<StepRecord>,
}

/// An open migration session. Holds the store's advisory lock from [`Session::open`] until [`Session::close`].
///
/// A session dropped without `close` leaves the lock held by its connection: drop that connection too (never
/// return it to a pool).
pub struct Session<'a> {
    client: &'a Client,
    store: StoreRef<'a>,
    opts: &'a ExecOptions,
    lock_key: (i32, String),
    /// False for the session inside a [`ReadSession`], which holds a read-only transaction instead of the lock.
    is_locked: bool,
    has_tables: bool,
    rows: Vec<RevisionId>,
    blocked: Option<Blocked>,
}

/// The store as given, or placed in a schema tenant's schema.
enum StoreRef<'a> {
    Given(&'a dyn VersionStore),
    Placed(Arc<dyn VersionStore>),
}

impl<'a> StoreRef<'a> {
    /// `store`, placed in a schema tenant's schema when `opts` names one.
    fn place(store: &'a dyn VersionStore, opts: &ExecOptions) -> Self {
        match &opts.schema {
            Some(schema) => StoreRef::Placed(store.in_schema(schema)),
            None => StoreRef::Given(store),
        }
    }
}

impl<'a> std::ops::Deref for StoreRef<'a> {
    type Target = dyn VersionStore + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            StoreRef::Given(store) => *store,
            StoreRef::Placed(store) => store.as_ref(),
        }
    }
}

/// The statements applying `opts`' session settings (after a connect or a reset).
fn settings_sql(opts: &ExecOptions) -> Vec<String> {
    let mut setup = Vec::new();
    if let Some(t) = opts.lock_timeout {
        setup.push(format!("SET lock_timeout = {}", millis(t)));
    }
    if let Some(t) = opts.statement_timeout {
        setup.push(format!("SET statement_timeout = {}", millis(t)));
    }
    if let Some(schema) = &opts.schema {
        setup.push(format!(
            "SET search_path = {}",
            search_path(schema, &opts.shared_schemas)
        ));
    }
    setup
}

/// An SQL boolean: whether `schema` exists. `to_regclass` answers NULL for a table in a missing schema, which
/// must not read as "no version table yet".
/// A boolean SQL expression: whether `schema` exists.
pub fn schema_exists_sql(schema: &str) -> String {
    format!(
        "EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = {})",
        quote_literal(schema)
    )
}

/// A schema tenant's `search_path`: its own schema, then the shared ones.
pub fn search_path(schema: &str, shared_schemas: &[String]) -> String {
    std::iter::once(schema)
        .chain(shared_schemas.iter().map(String::as_str).filter(|s| *s != schema))
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(", ")
}

fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ExecError {
    let context = context.into();
    move |pg| ExecError::Db { context, pg }
}

fn millis(d: Duration) -> String {
    format!("'{}ms'", d.as_millis())
}

/// Rows of a simple query's results, grouped per statement.
fn result_sets(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<Vec<Option<String>>>> {
    let mut sets = vec![Vec::new()];
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => {
                let values = (0..row.len()).map(|i| row.get(i).map(str::to_string)).collect();
                sets.last_mut().expect("sets is never empty").push(values);
            }
            SimpleQueryMessage::CommandComplete(_) => sets.push(Vec::new()),
            _ => {}
        }
    }
    sets
}

impl<'a> Session<'a> {
    /// Apply the session settings, take the store's migration lock (waiting up to `lock_wait`), and read the
    /// version rows.
    pub async fn open(
        client: &'a Client,
        store: &'a dyn VersionStore,
        opts: &'a ExecOptions,
    ) -> Result<Self, ExecError> {
        let setup = settings_sql(opts);
        if !setup.is_empty() {
            client
                .batch_execute(&setup.join(";\n"))
                .await
                .map_err(db("could not apply session settings"))?;
        }
        let store = StoreRef::place(store, opts);
        let lock_key = store.lock_key_sql();
        let [version_exists, history_exists] = store.exists_sql();
        let try_lock = format!("pg_try_advisory_lock({}, {})", lock_key.0, lock_key.1);
        // A schema tenant whose schema is missing gets no lock (NULL) and nothing else: to_regclass answers NULL
        // for a missing schema, which must not read as "at base".
        let lock_sql = match &opts.schema {
            Some(schema) => format!(
                "SELECT CASE WHEN {} THEN {try_lock} END, {version_exists}, {history_exists}",
                schema_exists_sql(schema)
            ),
            None => format!("SELECT {try_lock}, {version_exists}, {history_exists}"),
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        let (has_version, has_history) = loop {
            let sets = result_sets(
                client
                    .simple_query(&lock_sql)
                    .await
                    .map_err(db("could not take the migration lock"))?,
            );
            let row = &sets[0][0];
            if let (None, Some(schema)) = (&row[0], &opts.schema) {
                return Err(ExecError::SchemaMissing { schema: schema.clone() });
            }
            if row[0].as_deref() == Some("t") {
                break (row[1].as_deref() == Some("t"), row[2].as_deref() == Some("t"));
            }
            let waited = started.elapsed();
            if waited >= opts.lock_wait {
                return Err(ExecError::Locked { waited });
            }
            tokio::time::sleep(pause.min(opts.lock_wait - waited)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        };
        let mut session = Session {
            client,
            store,
            opts,
            lock_key,
            is_locked: true,
            has_tables: has_version && has_history,
            rows: Vec::new(),
            blocked: None,
        };
        if let Err(e) = session.read_state(has_version, has_history).await {
            let _ = session.unlock().await;
            return Err(e);
        }
        Ok(session)
    }

    /// Apply the session settings and read the version rows inside a read-only repeatable-read transaction,
    /// without the migration lock; see [`ReadSession`].
    async fn open_read_only(
        client: &'a Client,
        store: &'a dyn VersionStore,
        opts: &'a ExecOptions,
    ) -> Result<Self, ExecError> {
        let mut setup = settings_sql(opts);
        setup.push("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY".into());
        client
            .batch_execute(&setup.join(";\n"))
            .await
            .map_err(db("could not apply session settings"))?;
        let store = StoreRef::place(store, opts);
        let [version_exists, history_exists] = store.exists_sql();
        let schema_exists = opts.schema.as_deref().map_or_else(|| "true".into(), schema_exists_sql);
        let mut session = Session {
            client,
            lock_key: store.lock_key_sql(),
            store,
            opts,
            is_locked: false,
            has_tables: false,
            rows: Vec::new(),
            blocked: None,
        };
        let sql = format!("SELECT {schema_exists}, {version_exists}, {history_exists}");
        let outcome = match session.first_rows(&sql, "could not read the version table").await {
            Ok(rows) => {
                let row = rows.into_iter().next().unwrap_or_default();
                let is_true = |i: usize| row.get(i).and_then(|v| v.as_deref()) == Some("t");
                match &opts.schema {
                    Some(schema) if !is_true(0) => Err(ExecError::SchemaMissing { schema: schema.clone() }),
                    _ => {
                        session.has_tables = is_true(1) && is_true(2);
                        session.read_state(is_true(1), is_true(2)).await
                    }
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => Ok(session),
            Err(e) => {
                let _ = session.unlock().await;
                Err(e)
            }
        }
    }

    async fn read_state(&mut self, has_version: bool, has_history: bool) -> Result<(), ExecError> {
        let mut sql = Vec::new();
        if has_version {
            sql.push(self.store.read_rows_sql());
        }
        if has_history {
            sql.push(self.store.last_entry_sql());
        }
        if sql.is_empty() {
            return Ok(());
        }
        let sets = result_sets(
            self.client
                .simple_query(&sql.join(";\n"))
                .await
                .map_err(db("could not read the version table"))?,
        );
        let mut sets = sets.into_iter();
        if has_version {
            self.rows = sets
                .next()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|r| r[0].clone().map(RevisionId))
                .collect();
        }
        if has_history {
            if let Some(row) = sets.next().unwrap_or_default().into_iter().next() {
                let status = row[2].clone().unwrap_or_default();
                // `boolean::text` reads `false`, not the `f` of the boolean's own output format.
                let is_transactional = row[5].as_deref() != Some("false");
                if matches!(status.as_str(), "started" | "failed") && !is_transactional {
                    self.blocked = Some(Blocked {
                        revision: RevisionId(row[0].clone().unwrap_or_default()),
                        direction: row[1].clone().unwrap_or_default(),
                        status,
                        at: row[3].clone().unwrap_or_default(),
                        error: row[4].clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The version rows (the applied heads), sorted.
    pub fn rows(&self) -> &[RevisionId] {
        &self.rows
    }

    /// A no-transaction revision that started or failed and was not resolved since.
    pub fn blocked(&self) -> Option<&Blocked> {
        self.blocked.as_ref()
    }

    /// Create the store's tables unless they exist (`ensure-version`; every write does it first).
    pub async fn ensure_tables(&mut self) -> Result<(), ExecError> {
        if !self.has_tables {
            self.client
                .batch_execute(&self.store.create_sql())
                .await
                .map_err(db("could not create the version tables"))?;
            self.has_tables = true;
        }
        Ok(())
    }

    /// Run every step of `plan`, stopping at the first failure, or before the next step once `stop` is set. Steps before the failure stay committed (or, with
    /// `transaction_per = "run"`, nothing does) and are listed in the failure's report.
    pub async fn run(
        &mut self,
        plan: &Plan,
        scripts: &BTreeMap<RevisionId, Script>,
        on_event: &mut (dyn FnMut(ExecEvent) + Send),
        stop: &AtomicBool,
    ) -> Result<Report, ExecFailure> {
        let mut report = Report {
            rows_before: self.rows.clone(),
            rows_after: self.rows.clone(),
            steps: Vec::new(),
        };
        let fail = |report: &Report, error| {
            Err(ExecFailure {
                report: report.clone(),
                error,
            })
        };
        let mut resolved = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            match scripts.get(&step.revision) {
                Some(script) => resolved.push((step, script)),
                None => return fail(&report, ExecError::MissingScript(step.revision.clone())),
            }
        }
        if let Some(blocked) = self.blocked.clone() {
            let resumable = resolved
                .first()
                .filter(|(step, script)| is_resumable(&blocked, step, script));
            let Some((step, script)) = resumable else {
                return fail(&report, ExecError::Blocked(blocked));
            };
            if let Err(e) = self.resume_index_revision(step, script).await {
                return fail(&report, e);
            }
        }
        let per_run = self.opts.transaction_per == TransactionPer::Run;
        if per_run {
            if let Some((step, _)) = resolved.iter().find(|(_, s)| !s.is_transactional) {
                return fail(&report, ExecError::NoTransactionInRunMode(step.revision.clone()));
            }
        }
        if per_run {
            if let Some((step, _)) = resolved.iter().find(|(st, s)| section(s, st.direction).has_backfill()) {
                return fail(&report, ExecError::BackfillInRunMode(step.revision.clone()));
            }
        }
        // Refuse before changing anything: a downgrade past a backfill without a reverse loses data.
        if !self.opts.is_irreversible_allowed {
            let irreversible = resolved
                .iter()
                .find(|(st, s)| st.direction == Direction::Down && !s.is_data_reversible());
            if let Some((step, script)) = irreversible {
                return fail(
                    &report,
                    ExecError::IrreversibleBackfill {
                        revision: step.revision.clone(),
                        path: script.path.clone(),
                    },
                );
            }
        }
        if resolved.is_empty() {
            return Ok(report);
        }
        if let Err(e) = self.ensure_tables().await {
            return fail(&report, e);
        }
        if per_run {
            if let Err(e) = self
                .client
                .batch_execute("BEGIN")
                .await
                .map_err(db("could not begin the run's transaction"))
            {
                return fail(&report, e);
            }
        }
        for (i, (step, script)) in resolved.into_iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                if per_run {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    report.steps.clear();
                    report.rows_after = report.rows_before.clone();
                    self.rows = report.rows_before.clone();
                }
                return fail(&report, ExecError::Interrupted);
            }
            on_event(ExecEvent::StepStarted {
                revision: step.revision.clone(),
                direction: step.direction,
            });
            let started = Instant::now();
            let reset = if i > 0 && self.opts.reset_session == ResetSession::Revision {
                self.reset().await
            } else {
                Ok(())
            };
            let outcome = if let Err(e) = reset {
                Err(e)
            } else if section(script, step.direction).has_backfill() {
                run_phased(self.client, &*self.store, self.opts, step, script, on_event, stop).await
            } else if script.is_transactional {
                self.run_transactional(step, script, !per_run).await
            } else {
                self.run_without_transaction(step, script).await
            };
            if let Err(error) = outcome {
                if per_run {
                    // Everything in the run rolls back together, so nothing of this report was kept.
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    report.steps.clear();
                    report.rows_after = report.rows_before.clone();
                    self.rows = report.rows_before.clone();
                }
                return fail(&report, error);
            }
            let elapsed = started.elapsed();
            apply_rows(&mut self.rows, step);
            report.rows_after = self.rows.clone();
            report.steps.push(StepRecord {
                revision: step.revision.clone(),
                direction: step.direction,
                elapsed,
            });
            on_event(ExecEvent::StepFinished {
                revision: step.revision.clone(),
                direction: step.direction,
                elapsed,
            });
        }
        if per_run {
            if let Err(e) = self
                .client
                .batch_execute("COMMIT")
                .await
                .map_err(db("could not commit the run's transaction"))
            {
                report.steps.clear();
                report.rows_after = report.rows_before.clone();
                self.rows = report.rows_before.clone();
                return fail(&report, e);
            }
        }
        Ok(report)
    }

    /// Return the session to a clean state between two revisions (`reset_session = "revision"`), keeping the
    /// migration lock, and apply the settings again.
    async fn reset(&self) -> Result<(), ExecError> {
        let mut sql = vec![session_reset_sql(true)];
        sql.extend(settings_sql(self.opts));
        self.client
            .batch_execute(&sql.join(";\n"))
            .await
            .map_err(db("could not reset the session"))
    }

    /// The revision's statements, the version rows and the history row, between BEGIN and COMMIT (when
    /// `own_transaction`), so they commit or roll back together. The statements are pipelined: sent at once
    /// and answered in order, so the whole revision costs about one round trip, and a failure still names its
    /// own statement. After a failure the server answers the rest with "transaction aborted" and turns the
    /// COMMIT into a rollback.
    async fn run_transactional(&self, step: &Step, script: &Script, own_transaction: bool) -> Result<(), ExecError> {
        let section = section(script, step.direction);
        let word = direction_word(step.direction);
        let mut batch: Vec<(String, Option<usize>)> = Vec::with_capacity(section.statements.len() + 8);
        if own_transaction {
            batch.push(("BEGIN".into(), None));
        }
        batch.push((
            format!(
                "SET LOCAL flotilla.revision = {}; SET LOCAL flotilla.direction = {}",
                quote_literal(step.revision.as_str()),
                quote_literal(word)
            ),
            None,
        ));
        batch.extend(self.opts.before_each.iter().map(|s| (s.clone(), None)));
        batch.extend(section.statements.iter().map(|s| (s.sql.clone(), Some(s.line))));
        batch.extend(self.opts.after_each.iter().map(|s| (s.clone(), None)));
        let mut bookkeeping = self.store.rows_sql(&step.delete_rows, &step.insert_rows);
        // transaction_timestamp() is when BEGIN ran, so this measures the revision's own work.
        let duration = "(extract(epoch from clock_timestamp() - transaction_timestamp()) * 1000)::bigint";
        bookkeeping.push(
            self.store.history_sql(
                &HistoryEntry::new(step.revision.as_str(), word, "applied", true)
                    .checksum(&section.checksum)
                    .duration_sql(duration),
            ),
        );
        batch.push((bookkeeping.join(";\n"), None));
        if own_transaction {
            batch.push(("COMMIT".into(), None));
        }
        let results = futures_util::future::join_all(batch.iter().map(|(sql, _)| self.client.batch_execute(sql))).await;
        let first_error = results
            .into_iter()
            .zip(&batch)
            .find_map(|(result, (_, line))| result.err().map(|e| (e, *line)));
        match first_error {
            None => Ok(()),
            Some((source, line)) => Err(step_error(step, script, line, source)),
        }
    }

    /// Statements one by one in autocommit, bracketed by history rows: `started` before (so a crash part way
    /// is visible), then `applied` together with the version rows, or `failed`.
    async fn run_without_transaction(&self, step: &Step, script: &Script) -> Result<(), ExecError> {
        let section = section(script, step.direction);
        let word = direction_word(step.direction);
        let started = self.store.history_sql(
            &HistoryEntry::new(step.revision.as_str(), word, "started", false).checksum(&section.checksum),
        );
        self.client
            .batch_execute(&started)
            .await
            .map_err(|e| step_error(step, script, None, e))?;
        let settings = format!(
            "SET flotilla.revision = {}; SET flotilla.direction = {}",
            quote_literal(step.revision.as_str()),
            quote_literal(word)
        );
        let clock = Instant::now();
        let mut outcome = self
            .client
            .batch_execute(&settings)
            .await
            .map_err(|e| step_error(step, script, None, e));
        let statements = self.opts.before_each.iter().map(|s| (s.as_str(), None));
        let statements = statements
            .chain(section.statements.iter().map(|s| (s.sql.as_str(), Some(s.line))))
            .chain(self.opts.after_each.iter().map(|s| (s.as_str(), None)));
        if outcome.is_ok() {
            for (sql, line) in statements {
                if let Err(e) = self.client.batch_execute(sql).await {
                    outcome = Err(step_error(step, script, line, e));
                    break;
                }
            }
        }
        if let Err(error) = outcome {
            let message = error.to_string();
            let failed = self.store.history_sql(
                &HistoryEntry::new(step.revision.as_str(), word, "failed", false)
                    .checksum(&section.checksum)
                    .error(&message),
            );
            // Best effort: when the connection is gone the `started` row already blocks further runs.
            let _ = self.client.batch_execute(&failed).await;
            return Err(error);
        }
        let mut finish = vec!["BEGIN".to_string()];
        finish.extend(self.store.rows_sql(&step.delete_rows, &step.insert_rows));
        let duration = format!("{}", clock.elapsed().as_millis());
        finish.push(
            self.store.history_sql(
                &HistoryEntry::new(step.revision.as_str(), word, "applied", false)
                    .checksum(&section.checksum)
                    .duration_sql(&duration),
            ),
        );
        finish.push("COMMIT".into());
        finish.push("RESET flotilla.revision; RESET flotilla.direction".into());
        self.client
            .batch_execute(&finish.join(";\n"))
            .await
            .map_err(|e| step_error(step, script, None, e))
    }

    /// Replace the version rows with `rows` without running any SQL of the revisions (Alembic's stamp), and
    /// record it in the history. Also clears a pending no-transaction failure.
    pub async fn stamp(&mut self, rows: &[RevisionId]) -> Result<(), ExecError> {
        self.ensure_tables().await?;
        let mut sql = vec!["BEGIN".to_string()];
        sql.extend(stamp_sql(&*self.store, None, rows));
        sql.push("COMMIT".into());
        if let Err(e) = self.client.batch_execute(&sql.join(";\n")).await {
            let _ = self.client.batch_execute("ROLLBACK").await;
            return Err(ExecError::Db {
                context: "could not stamp the version table".into(),
                pg: e,
            });
        }
        self.rows = rows.to_vec();
        self.rows.sort();
        self.blocked = None;
        Ok(())
    }

    /// Clear the way to re-run an interrupted index-only no-transaction revision: drop the INVALID indexes an
    /// interrupted `CREATE INDEX CONCURRENTLY` leaves behind (`IF NOT EXISTS` would otherwise accept them), then
    /// record the automatic resolution.
    async fn resume_index_revision(&mut self, step: &Step, script: &Script) -> Result<(), ExecError> {
        for statement in &section(script, step.direction).statements {
            let Some(name) = concurrent_index_name(&statement.sql) else {
                continue;
            };
            let probe = format!(
                "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE NOT i.indisvalid AND c.oid = to_regclass({})",
                quote_literal(&name)
            );
            let rows = self.first_rows(&probe, "could not inspect indexes").await?;
            if let Some(invalid) = rows.first().and_then(|r| r[0].clone()) {
                tracing::warn!(revision = %step.revision, index = %invalid, "dropping an invalid index left by an interrupted build");
                let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {invalid}");
                self.client
                    .batch_execute(&drop)
                    .await
                    .map_err(db("could not drop an invalid index"))?;
            }
        }
        let word = direction_word(step.direction);
        let note = "interrupted index build resumed automatically";
        let sql = self
            .store
            .history_sql(&HistoryEntry::new(step.revision.as_str(), word, "resolved", false).error(note));
        self.client
            .batch_execute(&sql)
            .await
            .map_err(db("could not record the resolution"))?;
        self.blocked = None;
        Ok(())
    }

    /// Mark a failed no-transaction revision as dealt with, leaving the version rows as they are.
    pub async fn resolve(&mut self) -> Result<Option<Blocked>, ExecError> {
        let Some(blocked) = self.blocked.take() else {
            return Ok(None);
        };
        let sql = self.store.history_sql(&HistoryEntry::new(
            blocked.revision.as_str(),
            &blocked.direction,
            "resolved",
            false,
        ));
        self.client
            .batch_execute(&sql)
            .await
            .map_err(db("could not record the resolution"))?;
        Ok(Some(blocked))
    }

    /// The rows of the first result of `sql`, as text.
    async fn first_rows(&self, sql: &str, context: &str) -> Result<Vec<Vec<Option<String>>>, ExecError> {
        let messages = self.client.simple_query(sql).await.map_err(db(context))?;
        Ok(result_sets(messages).into_iter().next().unwrap_or_default())
    }

    /// The newest `limit` history rows, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryRow>, ExecError> {
        if !self.has_tables {
            return Ok(Vec::new());
        }
        let sql = self.store.history_rows_sql(limit);
        Ok(self
            .first_rows(&sql, "could not read the history table")
            .await?
            .into_iter()
            .map(|r| HistoryRow {
                revision: r[0].clone().unwrap_or_default(),
                direction: r[1].clone().unwrap_or_default(),
                status: r[2].clone().unwrap_or_default(),
                checksum: r[3].clone(),
                applied_at: r[4].clone().unwrap_or_default(),
                duration_ms: r[5].as_deref().and_then(|d| d.parse().ok()),
                tool_version: r[6].clone().unwrap_or_default(),
            })
            .collect())
    }

    /// The checksum each revision was last applied (up) with, for `validate`; revisions whose last step was a
    /// downgrade are left out.
    pub async fn applied_checksums(&self) -> Result<BTreeMap<RevisionId, String>, ExecError> {
        if !self.has_tables {
            return Ok(BTreeMap::new());
        }
        // A revision whose last applied step was a downgrade is not applied any more, so its script may change.
        let sql = self.store.applied_checksums_sql();
        Ok(self
            .first_rows(&sql, "could not read the history table")
            .await?
            .into_iter()
            .filter_map(|r| Some((RevisionId(r[0].clone()?), r[1].clone()?)))
            .collect())
    }

    async fn unlock(&self) -> Result<(), ExecError> {
        let mut sql = if self.is_locked {
            format!("SELECT pg_advisory_unlock({}, {})", self.lock_key.0, &self.lock_key.1)
        } else {
            // A read-only session holds no lock, only its transaction (COMMIT ends an aborted one too).
            "COMMIT".to_string()
        };
        if self.opts.lock_timeout.is_some() {
            sql.push_str("; RESET lock_timeout");
        }
        if self.opts.statement_timeout.is_some() {
            sql.push_str("; RESET statement_timeout");
        }
        if self.opts.schema.is_some() {
            sql.push_str("; RESET search_path");
        }
        self.client
            .batch_execute(&sql)
            .await
            .map_err(db("could not release the migration lock"))
    }

    /// Release the lock and reset the session settings, so a pooled connection goes back clean.
    pub async fn close(self) -> Result<(), ExecError> {
        self.unlock().await
    }
}

/// The version rows, the blocked state and the history of one database, read without the migration lock, for
/// the commands that only look (`current`, `validate`, `history --indicate-current`, `plan`): a run holding the
/// lock never makes them wait. Everything is read in one read-only repeatable-read transaction, so the rows, the
/// blocked state and the history agree with each other (a revision commits its version rows and history row
/// together). It cannot write: it has no `run`, `stamp`, `resolve` or `ensure_tables`.
///
/// [`ReadSession::close`] ends the transaction and resets the session settings; a read session dropped without
/// it leaves the transaction open on its connection, so drop that connection too.
pub struct ReadSession<'a>(Session<'a>);

impl<'a> ReadSession<'a> {
    /// Apply the session settings, begin the read-only transaction, and read the version rows and blocked state.
    /// Fails with [`ExecError::SchemaMissing`] for a schema tenant whose schema does not exist.
    pub async fn open(
        client: &'a Client,
        store: &'a dyn VersionStore,
        opts: &'a ExecOptions,
    ) -> Result<Self, ExecError> {
        Session::open_read_only(client, store, opts).await.map(ReadSession)
    }

    /// The version rows (the applied heads), sorted.
    pub fn rows(&self) -> &[RevisionId] {
        self.0.rows()
    }

    /// A no-transaction revision that started or failed and was not resolved since.
    pub fn blocked(&self) -> Option<&Blocked> {
        self.0.blocked()
    }

    /// The newest `limit` history rows, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryRow>, ExecError> {
        self.0.history(limit).await
    }

    /// The checksum each revision was last applied (up) with; see [`Session::applied_checksums`].
    pub async fn applied_checksums(&self) -> Result<BTreeMap<RevisionId, String>, ExecError> {
        self.0.applied_checksums().await
    }

    /// End the read-only transaction and reset the session settings.
    pub async fn close(self) -> Result<(), ExecError> {
        self.0.close().await
    }
}

/// Whether a blocked no-transaction revision may be re-run without an operator: it was interrupted (its process or
/// connection died, so only the `started` row exists; a failed statement writes `failed`), it is the next step,
/// and every statement is an index statement that is safe to repeat (`CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT
/// EXISTS`, `DROP INDEX CONCURRENTLY IF EXISTS`).
fn is_resumable(blocked: &Blocked, step: &Step, script: &Script) -> bool {
    let section = section(script, step.direction);
    blocked.status == "started"
        && blocked.revision == step.revision
        && blocked.direction == direction_word(step.direction)
        && !script.is_transactional
        && !section.statements.is_empty()
        && section.statements.iter().all(|s| {
            let words = normalised_words(&s.sql);
            concurrent_index_name(&s.sql).is_some() || words.starts_with("DROP INDEX CONCURRENTLY IF EXISTS ")
        })
}

fn normalised_words(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase()
}

/// The index name of `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name ON ...`, as written.
fn concurrent_index_name(sql: &str) -> Option<String> {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
    let prefix: &[&str] = if upper.get(1).map(String::as_str) == Some("UNIQUE") {
        &["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY", "IF", "NOT", "EXISTS"]
    } else {
        &["CREATE", "INDEX", "CONCURRENTLY", "IF", "NOT", "EXISTS"]
    };
    let matches = prefix
        .iter()
        .enumerate()
        .all(|(i, w)| upper.get(i).map(String::as_str) == Some(*w));
    let name = words.get(prefix.len())?;
    (matches && upper.get(prefix.len() + 1).map(String::as_str) == Some("ON")).then(|| name.to_string())
}

fn section(script: &Script, direction: Direction) -> &Section {
    match direction {
        Direction::Up => &script.upgrade,
        Direction::Down => &script.downgrade,
    }
}

pub fn direction_word(direction: Direction) -> &'static str {
    match direction {
        Direction::Up => "up",
        Direction::Down => "down",
    }
}

/// The statements of a stamp to `rows` and a history entry naming them (`base` when none). Without `from`
/// every version row is replaced; with the rows the database is known to hold (offline `FROM:TO`), only the
/// difference is deleted and inserted, so rows of other branches stay. Online and offline stamps share it.
pub fn stamp_sql(store: &dyn VersionStore, from: Option<&[RevisionId]>, rows: &[RevisionId]) -> Vec<String> {
    let label = if rows.is_empty() {
        "base".to_string()
    } else {
        rows.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
    };
    let mut sql = match from {
        None => store.replace_rows_sql(rows),
        Some(from) => {
            let delete: Vec<RevisionId> = from.iter().filter(|r| !rows.contains(r)).cloned().collect();
            let insert: Vec<RevisionId> = rows.iter().filter(|r| !from.contains(r)).cloned().collect();
            store.rows_sql(&delete, &insert)
        }
    };
    sql.push(store.history_sql(&HistoryEntry::new(&label, "stamp", "applied", true)));
    sql
}

/// Apply a step's version-row effect to an in-memory copy of the rows.
fn apply_rows(rows: &mut Vec<RevisionId>, step: &Step) {
    rows.retain(|r| !step.delete_rows.contains(r));
    rows.extend(step.insert_rows.iter().cloned());
    rows.sort();
}

pub(super) fn step_error(
    step: &Step,
    script: &Script,
    line: Option<usize>,
    source: tokio_postgres::Error,
) -> ExecError {
    ExecError::Step {
        revision: step.revision.clone(),
        direction: step.direction,
        path: Some(script.path.clone()),
        line,
        sqlstate: source.code().map(|c| c.code().to_string()),
        message: db_message(&source),
        pg: source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_index_names() {
        let check =
            |sql: &str, expected: Option<&str>| assert_eq!(concurrent_index_name(sql).as_deref(), expected, "{sql}");
        check("CREATE INDEX CONCURRENTLY IF NOT EXISTS a_idx ON t (a)", Some("a_idx"));
        check("create unique index concurrently if not exists \"A b\" on t (a)", None);
        check(
            "create unique index concurrently if not exists \"Ab\"\n  on t (a)",
            Some("\"Ab\""),
        );
        check("CREATE INDEX CONCURRENTLY a_idx ON t (a)", None);
        check("CREATE INDEX IF NOT EXISTS a_idx ON t (a)", None);
        check("SELECT 1", None);
    }
}
