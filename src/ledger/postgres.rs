//! The PostgreSQL ledger: runs, tenants and runners in the schema `flotilla_ledger` of a control database, shared
//! by every runner of a run.
//!
//! The connection lives on a thread of its own, which runs the synchronous `postgres` client (it drives its own
//! small runtime): callers hand it closures over a channel and wait for the answer. So the [`Ledger`] methods are
//! plain blocking calls that work from a std thread (the fleet's ledger writer) and from code already inside a
//! tokio runtime (`fleet status`, `fleet retry`), where the `postgres` client itself would panic.
//!
//! Every time is the server's (`now()`), never the client's, so runners on machines whose clocks disagree still
//! agree on leases. A claim takes its tenants with `FOR UPDATE SKIP LOCKED`: runners claiming at once never wait
//! for each other and never take the same tenant.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, IsolationLevel, Row, Transaction};

use super::error::LedgerError;
use super::id::RunId;
use super::pg_schema::{MIGRATION_LOCK, PG_MIGRATIONS, PG_SCHEMA_VERSION};
use super::queue::{
    fair_share, Claim, ClaimState, ClaimedTenant, Joined, OpenRun, Placement, RunnerInfo, RunnerRecord, ServerDemand,
    Shares,
};
use super::record::{NewTenant, RunRecord, RunSelector, TenantRecord, TenantUpdate};
use super::status::{StatusCounts, TenantStatus};
use super::store::Ledger;
use crate::config::{DbUrl, TlsMode};

/// How many fresh run ids to try when a generated one is taken (same second, same random suffix).
const ID_ATTEMPTS: usize = 16;

/// How often a transaction that PostgreSQL aborted as a deadlock victim or a serialization failure is tried.
const TX_ATTEMPTS: usize = 3;

/// TCP keepalive idle time and the time unacknowledged data may wait, so a ledger connection whose network
/// went away fails within a minute or so instead of hanging the runner (its lease lapses meanwhile anyway).
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// A timestamp column as the ledger's records carry it: RFC 3339, UTC, milliseconds (as the SQLite ledger).
macro_rules! ts {
    ($col:expr) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

/// The ledger in a PostgreSQL database. `Send`, not `Sync`: one value is one runner.
pub struct PgLedger {
    conn: ConnThread,
    /// The url with any password masked, for messages.
    location: String,
    /// The run this value is a runner of, after [`Ledger::open_run`].
    active: Option<Active>,
}

impl fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLedger")
            .field("location", &self.location)
            .field("active", &self.active)
            .finish()
    }
}

/// The run a [`PgLedger`] is a runner of.
#[derive(Debug, Clone)]
struct Active {
    seq: i64,
    run: RunId,
    runner: RunnerInfo,
}

/// A call on the connection; it answers whether the connection looked broken afterwards.
type Job = Box<dyn FnOnce(&mut Client) -> bool + Send>;

/// The thread that owns the connection, and the channel to it.
struct ConnThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ConnThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop, which drops (and so closes) the connection.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl PgLedger {
    /// Connects to the control database `url` (TLS as its `sslmode` says), creates or upgrades the schema
    /// `flotilla_ledger` to [`super::PG_SCHEMA_VERSION`] under an advisory lock, and returns the ledger.
    ///
    /// Errors: [`LedgerError::Tls`], [`LedgerError::Postgres`] when the server cannot be reached or refuses,
    /// [`LedgerError::SchemaTooNew`] when a newer flotilla migrated it.
    pub fn open(url: &DbUrl) -> Result<PgLedger, LedgerError> {
        let location = url.redacted().to_string();
        let tls = url.tls().map_err(|source| LedgerError::Tls {
            location: location.clone(),
            source,
        })?;
        let mut cfg: postgres::Config = url.pg_config().into();
        cfg.keepalives_idle(KEEPALIVES_IDLE);
        cfg.tcp_user_timeout(TCP_USER_TIMEOUT);
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), LedgerError>>(1);
        let loc = location.clone();
        let thread = std::thread::Builder::new()
            .name("flotilla-ledger-pg".to_string())
            .spawn(move || {
                let mut client = match connect(&cfg, &tls, &loc).and_then(|mut c| migrate(&mut c, &loc).map(|()| c)) {
                    Ok(client) => {
                        let _ = ready_tx.send(Ok(()));
                        client
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut is_broken = false;
                for job in inbox {
                    if is_broken || client.is_closed() {
                        // One reconnect per call after a lost connection; the call fails if that fails too.
                        if let Ok(fresh) = connect(&cfg, &tls, &loc) {
                            client = fresh;
                        }
                    }
                    is_broken = job(&mut client);
                }
            })
            .map_err(|_| LedgerError::ThreadGone {
                location: location.clone(),
            })?;
        let conn = ConnThread {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(PgLedger {
                conn,
                location,
                active: None,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LedgerError::ThreadGone { location }),
        }
    }

    /// The url of the control database, with any password masked.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    fn call<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client, &str) -> Result<T, LedgerError> + Send + 'static,
    {
        let gone = || LedgerError::ThreadGone {
            location: self.location.clone(),
        };
        let (answer_tx, answer_rx) = mpsc::sync_channel(1);
        let location = self.location.clone();
        let job: Job = Box::new(move |client| {
            let answer = f(client, &location);
            let is_broken = matches!(&answer, Err(LedgerError::Postgres { source, .. }) if is_connection_lost(source));
            let _ = answer_tx.send(answer);
            is_broken
        });
        self.conn
            .jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        answer_rx.recv().map_err(|_| gone())?
    }

    /// This runner on `run`.
    fn active(&self, run: &RunId) -> Result<Active, LedgerError> {
        self.active
            .as_ref()
            .filter(|a| &a.run == run)
            .cloned()
            .ok_or_else(|| LedgerError::NotRunner {
                location: self.location.clone(),
                run: run.to_string(),
            })
    }

    /// This runner's id on `run`, if it is one.
    fn me(&self, run: &RunId) -> Option<String> {
        self.active
            .as_ref()
            .filter(|a| &a.run == run)
            .map(|a| a.runner.id.clone())
    }
}

fn connect(cfg: &postgres::Config, tls: &TlsMode, location: &str) -> Result<Client, LedgerError> {
    match tls {
        TlsMode::NoTls => cfg.connect(postgres::NoTls),
        TlsMode::Rustls(connector) => cfg.connect(connector.clone()),
    }
    .map_err(pg_err(location, "connect"))
}

fn pg_err<'a>(location: &'a str, action: &'static str) -> impl FnOnce(postgres::Error) -> LedgerError + 'a {
    move |source| LedgerError::Postgres {
        location: location.to_string(),
        action,
        source,
    }
}

fn bad_row(location: &str, reason: String) -> LedgerError {
    LedgerError::BadRow {
        location: location.to_string(),
        reason,
    }
}

/// The schema version recorded in the control database, `None` when there is no ledger schema yet.
fn read_version(client: &mut impl postgres::GenericClient, location: &str) -> Result<Option<i64>, LedgerError> {
    let err = || pg_err(location, "read the schema version");
    let exists: bool = client
        .query_one("SELECT to_regclass('flotilla_ledger.schema_version') IS NOT NULL", &[])
        .map_err(err())?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let version: i64 = client
        .query_one(
            "SELECT coalesce(max(version), 0)::int8 FROM flotilla_ledger.schema_version",
            &[],
        )
        .map_err(err())?
        .get(0);
    Ok(Some(version))
}

/// Brings the schema to [`PG_SCHEMA_VERSION`], one migration per transaction-held advisory lock, so runners
/// starting at once migrate one after another and the later ones find the work done.
fn migrate(client: &mut Client, location: &str) -> Result<(), LedgerError> {
    let too_new = |found| LedgerError::SchemaTooNew {
        location: location.to_string(),
        found,
        known: PG_SCHEMA_VERSION,
    };
    match read_version(client, location)? {
        Some(found) if found > PG_SCHEMA_VERSION => return Err(too_new(found)),
        Some(found) if found == PG_SCHEMA_VERSION => return Ok(()),
        _ => {}
    }
    let err = |action| pg_err(location, action);
    let mut tx = client.transaction().map_err(err("start the schema migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err("take the migration lock"))?;
    // CREATE SCHEMA checks the database's CREATE privilege even with IF NOT EXISTS, so a schema an
    // administrator created for a role without that privilege is only created when it is missing.
    let has_schema: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'flotilla_ledger')",
            &[],
        )
        .map_err(err("look for the ledger schema"))?
        .get(0);
    if !has_schema {
        tx.batch_execute("CREATE SCHEMA flotilla_ledger")
            .map_err(err("create the schema flotilla_ledger"))?;
    }
    let found = match read_version(&mut tx, location)? {
        Some(found) => found,
        None => {
            tx.batch_execute(
                "CREATE TABLE flotilla_ledger.schema_version (
                     version bigint PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .map_err(err("create the schema version table"))?;
            0
        }
    };
    if found > PG_SCHEMA_VERSION {
        return Err(too_new(found));
    }
    for (i, step) in PG_MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(step).map_err(err("migrate the schema"))?;
        let version = i as i64 + 1;
        tx.execute(
            "INSERT INTO flotilla_ledger.schema_version (version) VALUES ($1)",
            &[&version],
        )
        .map_err(err("record the schema version"))?;
    }
    tx.commit().map_err(err("commit the schema migration"))
}

/// Whether the error means the connection is gone: closed, broken on the network, or ended by the server
/// (shutdown, administrator, failover).
fn is_connection_lost(err: &postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        return code.code().starts_with("08") || code.code().starts_with("57P");
    }
    std::error::Error::source(err).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// Whether PostgreSQL aborted the transaction only because of another one, so that running it again is right.
fn is_retryable(err: &LedgerError) -> bool {
    matches!(err, LedgerError::Postgres { source, .. }
        if source.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
            || source.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE))
}

/// Runs `body` in a read-write transaction and commits it, again when PostgreSQL aborted it as a deadlock victim.
/// An error from `body` rolls everything back.
fn with_tx<T>(
    client: &mut Client,
    location: &str,
    commit_action: &'static str,
    mut body: impl FnMut(&mut Transaction<'_>) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = client
            .transaction()
            .map_err(pg_err(location, "start a transaction"))
            .and_then(|mut tx| {
                let value = body(&mut tx)?;
                tx.commit().map_err(pg_err(location, commit_action))?;
                Ok(value)
            });
        match result {
            Err(e) if attempt < TX_ATTEMPTS && is_retryable(&e) => continue,
            other => return other,
        }
    }
}

/// A read-only transaction on one snapshot, so a run's row, counts and runners agree.
fn read_tx<'a>(client: &'a mut Client, location: &str) -> Result<Transaction<'a>, LedgerError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg_err(location, "start a read transaction"))
}

/// The run's row number and whether it is finished; `lock` takes the run's row lock (`FOR UPDATE`) so that
/// runners finishing at once see each other's ends.
fn locate(tx: &mut Transaction<'_>, location: &str, run: &str, lock: bool) -> Result<(i64, bool), LedgerError> {
    let sql = if lock {
        "SELECT seq, finished_at IS NOT NULL FROM flotilla_ledger.runs WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT seq, finished_at IS NOT NULL FROM flotilla_ledger.runs WHERE id = $1"
    };
    let row = tx
        .query_opt(sql, &[&run])
        .map_err(pg_err(location, "look up the run"))?
        .ok_or_else(|| LedgerError::UnknownRun {
            location: location.to_string(),
            run: run.to_string(),
        })?;
    Ok((row.get(0), row.get(1)))
}

fn locate_unfinished(tx: &mut Transaction<'_>, location: &str, run: &str, lock: bool) -> Result<i64, LedgerError> {
    match locate(tx, location, run, lock)? {
        (_, true) => Err(LedgerError::RunFinished {
            location: location.to_string(),
            run: run.to_string(),
        }),
        (seq, false) => Ok(seq),
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Registers `runner` on the run `seq` (a runner joining twice keeps its first row).
fn insert_runner(tx: &mut Transaction<'_>, location: &str, seq: i64, runner: &RunnerInfo) -> Result<(), LedgerError> {
    let placement = serde_json::to_string(&runner.placement).unwrap_or_else(|_| "{}".to_string());
    tx.execute(
        "INSERT INTO flotilla_ledger.runners (run_seq, id, host, pid, placement, lease, lease_until)
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::int8 * interval '1 millisecond', now() + $6::int8 * interval '1 millisecond')
         ON CONFLICT (run_seq, id) DO NOTHING",
        &[
            &seq,
            &runner.id,
            &runner.host,
            &i64::from(runner.pid),
            &placement,
            &lease_ms(runner.lease),
        ],
    )
    .map_err(pg_err(location, "register the runner"))?;
    Ok(())
}

/// A named run as found: its row number, id, command, target and whether it is finished. Takes a share lock
/// on the run's row so that it cannot be finished while this runner joins.
fn find_named(tx: &mut Transaction<'_>, location: &str, name: &str) -> Result<Option<NamedRun>, LedgerError> {
    let row = tx
        .query_opt(
            "SELECT seq, id, command, target, finished_at IS NOT NULL FROM flotilla_ledger.runs
             WHERE name = $1 FOR SHARE",
            &[&name],
        )
        .map_err(pg_err(location, "look up the named run"))?;
    Ok(row.map(|row| NamedRun {
        seq: row.get(0),
        id: row.get(1),
        command: row.get(2),
        target: row.get(3),
        is_finished: row.get(4),
    }))
}

struct NamedRun {
    seq: i64,
    id: String,
    command: String,
    target: String,
    is_finished: bool,
}

/// Owned copies of the new tenants, as the arrays one `INSERT ... SELECT FROM unnest(...)` takes.
#[derive(Default)]
struct TenantArrays {
    ids: Vec<String>,
    servers: Vec<String>,
    kinds: Vec<String>,
    targets: Vec<Option<String>>,
    canaries: Vec<bool>,
    tags: Vec<String>,
    at_target: Vec<Option<String>>,
    /// The first tenant id listed twice.
    duplicate: Option<String>,
}

impl TenantArrays {
    fn of<'t>(tenants: &mut dyn Iterator<Item = NewTenant<'t>>) -> TenantArrays {
        let mut seen = HashSet::with_capacity(tenants.size_hint().0);
        let mut arrays = TenantArrays::default();
        for t in tenants {
            if !seen.insert(t.tenant_id) && arrays.duplicate.is_none() {
                arrays.duplicate = Some(t.tenant_id.to_string());
            }
            arrays.ids.push(t.tenant_id.to_string());
            arrays.servers.push(t.server.to_string());
            arrays.kinds.push(t.kind.to_string());
            arrays.targets.push(t.target.map(str::to_string));
            arrays.canaries.push(t.canary);
            arrays.tags.push(t.tags.unwrap_or("{}").to_string());
            arrays.at_target.push(t.at_target.map(str::to_string));
        }
        arrays
    }
}

/// The columns of [`RunRecord`], in the order [`run_from_row`] reads them.
const RUN_COLUMNS: &str = concat!(
    "seq, id, command, target, options::text, user_name, host, pid, ",
    ts!("started_at"),
    ", ",
    ts!("finished_at"),
    ", exit_code, name, halted"
);

fn run_from_row(row: &Row, location: &str) -> Result<(i64, RunRecord), LedgerError> {
    let options: String = row.get(4);
    let options =
        serde_json::from_str(&options).map_err(|e| bad_row(location, format!("run options are not JSON: {e}")))?;
    let pid: i64 = row.get(7);
    let record = RunRecord {
        id: RunId(row.get(1)),
        command: row.get(2),
        target: row.get(3),
        options,
        user: row.get(5),
        host: row.get(6),
        pid: u32::try_from(pid).unwrap_or(0),
        started_at: row.get(8),
        finished_at: row.get(9),
        exit_code: row.get(10),
        n_tenants: 0,
        counts: StatusCounts::default(),
        name: row.get(11),
        is_halted: row.get(12),
        runners: Vec::new(),
    };
    Ok((row.get(0), record))
}

/// The columns of [`TenantRecord`], in the order [`tenant_from_row`] reads them.
const TENANT_COLUMNS: &str = concat!(
    "tenant_id, server, kind, status, from_revision, to_revision, failed_revision, attempts, duration_ms, error, \
     sqlstate, ",
    ts!("updated_at"),
    ", error_kind, target_revision, runner, position"
);

fn parse_status(text: &str, location: &str) -> Result<TenantStatus, LedgerError> {
    text.parse()
        .map_err(|e| bad_row(location, format!("tenant status: {e}")))
}

fn tenant_from_row(row: &Row, location: &str) -> Result<TenantRecord, LedgerError> {
    let attempts: i32 = row.get(7);
    let duration_ms: Option<i64> = row.get(8);
    Ok(TenantRecord {
        tenant_id: row.get(0),
        server: row.get(1),
        kind: row.get(2),
        status: parse_status(row.get(3), location)?,
        from_revision: row.get(4),
        to_revision: row.get(5),
        failed_revision: row.get(6),
        attempts: u32::try_from(attempts).unwrap_or(0),
        duration_ms: duration_ms.map(|ms| u64::try_from(ms).unwrap_or(0)),
        error: row.get(9),
        sqlstate: row.get(10),
        updated_at: row.get(11),
        error_kind: row.get(12),
        target_revision: row.get(13),
        runner: row.get(14),
        position: usize::try_from(row.get::<_, i32>(15)).unwrap_or(0),
    })
}

/// The selected run with its counts and runners, read in `tx`.
fn read_run(tx: &mut Transaction<'_>, location: &str, which: &RunSelector) -> Result<Option<RunRecord>, LedgerError> {
    let err = |action| pg_err(location, action);
    let found = match which {
        RunSelector::Latest => tx.query_opt(
            &format!("SELECT {RUN_COLUMNS} FROM flotilla_ledger.runs ORDER BY seq DESC LIMIT 1"),
            &[],
        ),
        RunSelector::Id(id) => tx.query_opt(
            &format!("SELECT {RUN_COLUMNS} FROM flotilla_ledger.runs WHERE id = $1"),
            &[id],
        ),
    }
    .map_err(err("read the run"))?;
    let Some(row) = found else {
        return Ok(None);
    };
    let (seq, mut record) = run_from_row(&row, location)?;
    let counts = tx
        .query(
            "SELECT status, count(*) FROM flotilla_ledger.tenants WHERE run_seq = $1 GROUP BY status",
            &[&seq],
        )
        .map_err(err("count the run's tenants"))?;
    for row in counts {
        let n: i64 = row.get(1);
        record
            .counts
            .add(parse_status(row.get(0), location)?, usize::try_from(n).unwrap_or(0));
    }
    record.n_tenants = record.counts.total();
    let runners = tx
        .query(
            concat!(
                "SELECT id, host, pid, placement::text, ",
                ts!("started_at"),
                ", ",
                ts!("heartbeat_at"),
                ", lease_until >= now(), ",
                ts!("finished_at"),
                ", exit_code FROM flotilla_ledger.runners WHERE run_seq = $1 ORDER BY started_at, id"
            ),
            &[&seq],
        )
        .map_err(err("read the run's runners"))?;
    for row in runners {
        let placement: String = row.get(3);
        let placement: Placement = serde_json::from_str(&placement)
            .map_err(|e| bad_row(location, format!("runner placement is not JSON: {e}")))?;
        let pid: i64 = row.get(2);
        record.runners.push(RunnerRecord {
            id: row.get(0),
            host: row.get(1),
            pid: u32::try_from(pid).unwrap_or(0),
            placement,
            started_at: row.get(4),
            heartbeat_at: row.get(5),
            is_live: row.get(6),
            finished_at: row.get(7),
            exit_code: row.get(8),
        });
    }
    Ok(Some(record))
}

/// A placement's tags as the JSON object a tenant's tags must contain, or `None` when two tags give one key
/// different values (no tenant can carry both).
fn tags_object(placement: &Placement) -> Option<String> {
    let mut object = serde_json::Map::new();
    for (k, v) in &placement.tags {
        match object.get(k) {
            Some(serde_json::Value::String(old)) if old != v => return None,
            _ => {
                object.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
        }
    }
    Some(serde_json::Value::Object(object).to_string())
}

/// Each tenant's last update, in the order the tenants first appear; a `target_revision` given by an earlier
/// update of the same tenant is kept, as applying them one by one would.
fn last_updates(updates: &[TenantUpdate]) -> Vec<TenantUpdate> {
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(updates.len());
    let mut out: Vec<TenantUpdate> = Vec::with_capacity(updates.len());
    for u in updates {
        match index.get(u.tenant_id.as_str()) {
            Some(&i) => {
                let target = u.target_revision.clone().or_else(|| out[i].target_revision.take());
                out[i] = TenantUpdate {
                    target_revision: target,
                    ..u.clone()
                };
            }
            None => {
                index.insert(&u.tenant_id, out.len());
                out.push(u.clone());
            }
        }
    }
    out
}

impl Ledger for PgLedger {
    fn open_run_iter<'t>(
        &mut self,
        open: &OpenRun,
        tenants: &mut dyn Iterator<Item = NewTenant<'t>>,
    ) -> Result<Joined, LedgerError> {
        let open = open.clone();
        let arrays = TenantArrays::of(tenants);
        let runner = open.runner.clone();
        let (joined, seq) = self.call(move |client, location| {
            with_tx(client, location, "commit the new run", |tx| {
                open_run_tx(tx, location, &open, &arrays)
            })
        })?;
        self.active = Some(Active {
            seq,
            run: joined.run.clone(),
            runner,
        });
        Ok(joined)
    }

    fn claim(&mut self, run: &RunId, max: usize) -> Result<Claim, LedgerError> {
        let active = self.active(run)?;
        self.call(move |client, location| {
            with_tx(client, location, "commit the claim", |tx| {
                claim_tx(tx, location, &active, max)
            })
        })
    }

    fn heartbeat(&mut self, run: &RunId) -> Result<(), LedgerError> {
        let active = self.active(run)?;
        self.call(move |client, location| {
            let n = client
                .execute(
                    "UPDATE flotilla_ledger.runners SET heartbeat_at = now(), lease_until = now() + lease
                     WHERE run_seq = $1 AND id = $2 AND lease_until >= now()",
                    &[&active.seq, &active.runner.id],
                )
                .map_err(pg_err(location, "renew the lease"))?;
            if n == 0 {
                return Err(LedgerError::LeaseLost {
                    location: location.to_string(),
                    run: active.run.to_string(),
                    runner: active.runner.id.clone(),
                });
            }
            Ok(())
        })
    }

    fn share_connections(&mut self, run: &RunId, demands: &[ServerDemand]) -> Result<Shares, LedgerError> {
        let active = self.active(run)?;
        let demands = demands.to_vec();
        self.call(move |client, location| {
            with_tx(client, location, "commit connection shares", |tx| {
                share_tx(tx, location, &active, &demands)
            })
        })
    }

    fn halt(&mut self, run: &RunId) -> Result<(), LedgerError> {
        let run = run.to_string();
        self.call(move |client, location| {
            let n = client
                .execute("UPDATE flotilla_ledger.runs SET halted = true WHERE id = $1", &[&run])
                .map_err(pg_err(location, "halt the run"))?;
            if n == 0 {
                return Err(LedgerError::UnknownRun {
                    location: location.to_string(),
                    run,
                });
            }
            Ok(())
        })
    }

    fn record(&mut self, run: &RunId, updates: &[TenantUpdate]) -> Result<(), LedgerError> {
        if updates.is_empty() {
            return Ok(());
        }
        let me = self.me(run);
        let run = run.to_string();
        let updates = last_updates(updates);
        self.call(move |client, location| {
            with_tx(client, location, "commit tenant updates", |tx| {
                record_tx(tx, location, &run, me.as_deref(), &updates)
            })
        })
    }

    fn finish_run(&mut self, run: &RunId, exit_code: i32) -> Result<(), LedgerError> {
        let me = self.me(run);
        let run = run.to_string();
        self.call(move |client, location| {
            with_tx(client, location, "commit the finished run", |tx| {
                finish_tx(tx, location, &run, me.as_deref(), exit_code)
            })
        })
    }

    fn run(&self, which: &RunSelector) -> Result<Option<RunRecord>, LedgerError> {
        let which = which.clone();
        self.call(move |client, location| {
            let mut tx = read_tx(client, location)?;
            read_run(&mut tx, location, &which)
        })
    }

    fn tenants(&self, run: &RunId, statuses: Option<&[TenantStatus]>) -> Result<Vec<TenantRecord>, LedgerError> {
        let run = run.to_string();
        let statuses: Option<Vec<String>> = statuses.map(|s| s.iter().map(|s| s.as_str().to_string()).collect());
        self.call(move |client, location| {
            let mut tx = read_tx(client, location)?;
            let (seq, _) = locate(&mut tx, location, &run, false)?;
            let rows = tx
                .query(
                    &format!(
                        "SELECT {TENANT_COLUMNS} FROM flotilla_ledger.tenants
                         WHERE run_seq = $1 AND ($2::text[] IS NULL OR status = ANY ($2))
                         ORDER BY tenant_id"
                    ),
                    &[&seq, &statuses],
                )
                .map_err(pg_err(location, "read the run's tenants"))?;
            rows.iter().map(|row| tenant_from_row(row, location)).collect()
        })
    }

    fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |client, location| {
            let mut tx = read_tx(client, location)?;
            let ids: Vec<String> = tx
                .query(
                    "SELECT id FROM flotilla_ledger.runs ORDER BY seq DESC LIMIT $1",
                    &[&limit],
                )
                .map_err(pg_err(location, "list the runs"))?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let mut runs = Vec::with_capacity(ids.len());
            for id in ids {
                runs.extend(read_run(&mut tx, location, &RunSelector::Id(id))?);
            }
            Ok(runs)
        })
    }

    fn retry_set(&self, run: &RunId) -> Result<Vec<String>, LedgerError> {
        let run = run.to_string();
        self.call(move |client, location| {
            let mut tx = read_tx(client, location)?;
            let (seq, is_finished) = locate(&mut tx, location, &run, false)?;
            let rows = tx
                .query(
                    "SELECT tenant_id FROM flotilla_ledger.tenants
                     WHERE run_seq = $1
                       AND (status IN ('failed', 'interrupted', 'pending') OR ($2 AND status = 'running'))
                     ORDER BY tenant_id",
                    &[&seq, &!is_finished],
                )
                .map_err(pg_err(location, "read the retry set"))?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }
}

fn joined_existing(
    tx: &mut Transaction<'_>,
    location: &str,
    open: &OpenRun,
    found: NamedRun,
) -> Result<(Joined, i64), LedgerError> {
    let run = &open.run;
    if found.command != run.command || found.target != run.target {
        return Err(LedgerError::RunMismatch {
            location: location.to_string(),
            name: open.name.clone().unwrap_or_default(),
            found: format!("{} {}", found.command, found.target),
            wanted: format!("{} {}", run.command, run.target),
        });
    }
    if !found.is_finished {
        insert_runner(tx, location, found.seq, &open.runner)?;
    }
    Ok((
        Joined {
            run: RunId(found.id),
            is_new: false,
            is_finished: found.is_finished,
            command: found.command,
            target: found.target,
        },
        found.seq,
    ))
}

/// [`Ledger::open_run`] in one transaction: join the named run, or create it (and its tenants) when no one has.
/// Two runners creating one name at once: the second's insert waits for the first's and then finds its run.
fn open_run_tx(
    tx: &mut Transaction<'_>,
    location: &str,
    open: &OpenRun,
    tenants: &TenantArrays,
) -> Result<(Joined, i64), LedgerError> {
    let err = |action| pg_err(location, action);
    let run = &open.run;
    if let Some(name) = &open.name {
        if let Some(found) = find_named(tx, location, name)? {
            return joined_existing(tx, location, open, found);
        }
    }
    if let Some(tenant) = &tenants.duplicate {
        return Err(LedgerError::DuplicateTenant {
            location: location.to_string(),
            tenant: tenant.clone(),
        });
    }
    let now_ms: i64 = tx
        .query_one("SELECT (extract(epoch FROM now()) * 1000)::int8", &[])
        .map_err(err("read the server's clock"))?
        .get(0);
    let started = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_else(Utc::now);
    let options = run.options.to_string();
    let pid = i64::from(std::process::id());
    let mut attempt = 0;
    let (id, seq) = loop {
        attempt += 1;
        let id = RunId::generate(started);
        let params: [&(dyn ToSql + Sync); 8] = [
            &id.as_str(),
            &open.name,
            &run.command,
            &run.target,
            &options,
            &run.user,
            &run.host,
            &pid,
        ];
        let inserted = tx
            .query_opt(
                "INSERT INTO flotilla_ledger.runs (id, name, command, target, options, user_name, host, pid)
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8)
                 ON CONFLICT DO NOTHING
                 RETURNING seq",
                &params,
            )
            .map_err(err("record the run"))?;
        if let Some(row) = inserted {
            break (id, row.get::<_, i64>(0));
        }
        // Either another runner created the run of this name meanwhile (join it), or the id was taken.
        if let Some(name) = &open.name {
            if let Some(found) = find_named(tx, location, name)? {
                return joined_existing(tx, location, open, found);
            }
        }
        if attempt >= ID_ATTEMPTS {
            return Err(bad_row(
                location,
                format!("{ID_ATTEMPTS} generated run ids were all taken"),
            ));
        }
    };
    tx.execute(
        "INSERT INTO flotilla_ledger.tenants
             (run_seq, tenant_id, position, server, kind, target_revision, canary, tags, status, from_revision,
              to_revision)
         SELECT $1, t.id, t.ord - 1, t.server, t.kind, t.target, t.canary, t.tags::jsonb,
                CASE WHEN t.at_target IS NULL THEN 'pending' ELSE 'skipped' END, nullif(t.at_target, ''),
                nullif(t.at_target, '')
         FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::text[])
              WITH ORDINALITY AS t (id, server, kind, target, canary, tags, at_target, ord)",
        &[
            &seq,
            &tenants.ids,
            &tenants.servers,
            &tenants.kinds,
            &tenants.targets,
            &tenants.canaries,
            &tenants.tags,
            &tenants.at_target,
        ],
    )
    .map_err(err("record the run's tenants"))?;
    insert_runner(tx, location, seq, &open.runner)?;
    Ok((
        Joined {
            run: id,
            is_new: true,
            is_finished: false,
            command: run.command.clone(),
            target: run.target.clone(),
        },
        seq,
    ))
}

const UNFINISHED: &str = "('pending', 'running', 'interrupted')";

/// [`Ledger::claim`] in one transaction.
fn claim_tx(tx: &mut Transaction<'_>, location: &str, active: &Active, max: usize) -> Result<Claim, LedgerError> {
    let err = |action| pg_err(location, action);
    let seq = active.seq;
    let me = &active.runner.id;
    // One round trip: the run's state, and this runner's lease renewed unless the run is over.
    let row = tx
        .query_one(
            "WITH renew AS (
                 UPDATE flotilla_ledger.runners SET heartbeat_at = now(), lease_until = now() + lease
                 WHERE run_seq = $1 AND id = $2
                   AND NOT EXISTS (SELECT 1 FROM flotilla_ledger.runs
                                   WHERE seq = $1 AND (finished_at IS NOT NULL OR halted))
             )
             SELECT finished_at IS NOT NULL, halted FROM flotilla_ledger.runs WHERE seq = $1",
            &[&seq, me],
        )
        .map_err(err("read the run"))?;
    let (is_finished, is_halted): (bool, bool) = (row.get(0), row.get(1));
    if is_finished || is_halted {
        return Ok(Claim {
            tenants: Vec::new(),
            state: if is_halted {
                ClaimState::Halted
            } else {
                ClaimState::Done
            },
        });
    }
    let placement = &active.runner.placement;
    let Some(tags) = tags_object(placement) else {
        return Ok(Claim {
            tenants: Vec::new(),
            state: ClaimState::Done,
        });
    };
    let servers = &placement.servers;
    let limit = i64::try_from(max).unwrap_or(i64::MAX);
    // First lock the candidates in dispatch order, skipping rows other claims hold locked right now: tenants
    // nobody holds, interrupted ones, and those of runners that finished or whose lease lapsed; only canaries
    // while a canary is unfinished. PostgreSQL checks a row that another claim changed meanwhile against its
    // newest version but with this statement's snapshot of the runners, which may be stale (a runner whose
    // lease lapsed renews it with its next claim), so the second step below decides.
    let picked: Vec<String> = tx
        .query(
            &format!(
                "SELECT tenant_id FROM flotilla_ledger.tenants
                 WHERE run_seq = $1 AND status IN {UNFINISHED}
                   AND (cardinality($2::text[]) = 0 OR server = ANY ($2))
                   AND tags @> $3::text::jsonb
                   AND (status = 'interrupted' OR runner IS NULL
                        OR runner IN (SELECT id FROM flotilla_ledger.runners
                                      WHERE run_seq = $1 AND (finished_at IS NOT NULL OR lease_until < now())))
                   AND (canary OR NOT EXISTS (SELECT 1 FROM flotilla_ledger.tenants
                                              WHERE run_seq = $1 AND canary AND status IN {UNFINISHED}))
                 ORDER BY position
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED"
            ),
            &[&seq, servers, &tags, &limit],
        )
        .map_err(err("claim tenants"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Then take those that are still free, judged on a fresh snapshot of the runners: the rows are locked now,
    // so their holders cannot change before this transaction ends.
    let rows = tx
        .query(
            "UPDATE flotilla_ledger.tenants t
             SET status = 'pending', runner = $3, updated_at = now()
             WHERE t.run_seq = $1 AND t.tenant_id = ANY ($2)
               AND (t.status = 'interrupted' OR t.runner IS NULL
                    OR NOT EXISTS (SELECT 1 FROM flotilla_ledger.runners r
                                   WHERE r.run_seq = t.run_seq AND r.id = t.runner
                                     AND r.finished_at IS NULL AND r.lease_until >= now()))
             RETURNING t.tenant_id, t.target_revision, t.attempts, t.position",
            &[&seq, &picked, me],
        )
        .map_err(err("claim tenants"))?;
    let mut claimed: Vec<(i32, ClaimedTenant)> = rows
        .iter()
        .map(|row| {
            let attempts: i32 = row.get(2);
            (
                row.get(3),
                ClaimedTenant {
                    tenant_id: row.get(0),
                    target_revision: row.get(1),
                    attempts: u32::try_from(attempts).unwrap_or(0),
                },
            )
        })
        .collect();
    claimed.sort_by_key(|(position, _)| *position);
    let tenants: Vec<ClaimedTenant> = claimed.into_iter().map(|(_, t)| t).collect();
    let state = if tenants.len() == max && max > 0 {
        ClaimState::More
    } else {
        // Anything of this placement still unfinished and not this runner's: held by others, waiting for the
        // canaries, or locked by a claim going on now. One row answers, so this stays cheap on a large run.
        let is_left: bool = tx
            .query_one(
                &format!(
                    "SELECT EXISTS (
                         SELECT 1 FROM flotilla_ledger.tenants
                         WHERE run_seq = $1 AND status IN {UNFINISHED}
                           AND (cardinality($2::text[]) = 0 OR server = ANY ($2))
                           AND tags @> $3::text::jsonb
                           AND (runner IS DISTINCT FROM $4 OR status = 'interrupted'))"
                ),
                &[&seq, servers, &tags, me],
            )
            .map_err(err("look for tenants left"))?
            .get(0);
        if is_left {
            ClaimState::Wait
        } else {
            ClaimState::Done
        }
    };
    Ok(Claim { tenants, state })
}

/// [`Ledger::share_connections`] in one transaction. The run's row lock serializes the runners' shares, so each
/// sees the others' latest grants (as SQLite's write lock does).
fn share_tx(
    tx: &mut Transaction<'_>,
    location: &str,
    active: &Active,
    demands: &[ServerDemand],
) -> Result<Shares, LedgerError> {
    let err = |action| pg_err(location, action);
    let (seq, me) = (active.seq, &active.runner.id);
    tx.execute(
        "SELECT 1 FROM flotilla_ledger.runs WHERE seq = $1 FOR NO KEY UPDATE",
        &[&seq],
    )
    .map_err(err("lock the run's shares"))?;
    let servers: Vec<&str> = demands.iter().map(|d| d.server.as_str()).collect();
    let mut held: HashMap<String, Vec<(usize, bool)>> = HashMap::new();
    for row in tx
        .query(
            "SELECT s.server, s.granted, s.wants FROM flotilla_ledger.connection_shares s
             JOIN flotilla_ledger.runners r ON r.run_seq = s.run_seq AND r.id = s.runner
             WHERE s.run_seq = $1 AND s.server = ANY ($2) AND s.runner <> $3
               AND r.finished_at IS NULL AND r.lease_until >= now()",
            &[&seq, &servers, me],
        )
        .map_err(err("read connection shares"))?
    {
        let granted: i32 = row.get(1);
        held.entry(row.get(0))
            .or_default()
            .push((usize::try_from(granted).unwrap_or(0), row.get(2)));
    }
    let granted: Vec<usize> = demands
        .iter()
        .map(|d| fair_share(d, held.get(&d.server).map_or(&[][..], Vec::as_slice)))
        .collect();
    let granted_sql: Vec<i32> = granted.iter().map(|g| i32::try_from(*g).unwrap_or(i32::MAX)).collect();
    let wants: Vec<bool> = demands.iter().map(|d| d.want > 0).collect();
    tx.execute(
        "INSERT INTO flotilla_ledger.connection_shares (run_seq, server, runner, granted, wants)
         SELECT $1, u.server, $2, u.granted, u.wants FROM unnest($3::text[], $4::int4[], $5::bool[])
              AS u (server, granted, wants)
         ON CONFLICT (run_seq, server, runner) DO UPDATE SET granted = excluded.granted, wants = excluded.wants",
        &[&seq, me, &servers, &granted_sql, &wants],
    )
    .map_err(err("record a connection share"))?;
    let n_busy_others: i64 = tx
        .query_one(
            "SELECT count(DISTINCT s.runner) FROM flotilla_ledger.connection_shares s
             JOIN flotilla_ledger.runners r ON r.run_seq = s.run_seq AND r.id = s.runner
             WHERE s.run_seq = $1 AND s.runner <> $2 AND s.wants
               AND r.finished_at IS NULL AND r.lease_until >= now()",
            &[&seq, me],
        )
        .map_err(err("count busy runners"))?
        .get(0);
    let is_busy = demands.iter().any(|d| d.want > 0);
    Ok(Shares {
        connections: granted,
        n_busy_runners: (usize::try_from(n_busy_others).unwrap_or(0) + usize::from(is_busy)).max(1),
    })
}

/// [`Ledger::record`] in one transaction: every update or none.
fn record_tx(
    tx: &mut Transaction<'_>,
    location: &str,
    run: &str,
    me: Option<&str>,
    updates: &[TenantUpdate],
) -> Result<(), LedgerError> {
    let err = |action| pg_err(location, action);
    let seq = locate_unfinished(tx, location, run, false)?;
    let ids: Vec<&str> = updates.iter().map(|u| u.tenant_id.as_str()).collect();
    let statuses: Vec<&str> = updates.iter().map(|u| u.status.as_str()).collect();
    let froms: Vec<Option<&str>> = updates.iter().map(|u| u.from_revision.as_deref()).collect();
    let tos: Vec<Option<&str>> = updates.iter().map(|u| u.to_revision.as_deref()).collect();
    let faileds: Vec<Option<&str>> = updates.iter().map(|u| u.failed_revision.as_deref()).collect();
    let attempts: Vec<i32> = updates
        .iter()
        .map(|u| i32::try_from(u.attempts).unwrap_or(i32::MAX))
        .collect();
    let durations: Vec<Option<i64>> = updates
        .iter()
        .map(|u| u.duration_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
        .collect();
    let errors: Vec<Option<&str>> = updates.iter().map(|u| u.error.as_deref()).collect();
    let sqlstates: Vec<Option<&str>> = updates.iter().map(|u| u.sqlstate.as_deref()).collect();
    let kinds: Vec<Option<&str>> = updates.iter().map(|u| u.error_kind.as_deref()).collect();
    let targets: Vec<Option<&str>> = updates.iter().map(|u| u.target_revision.as_deref()).collect();
    let params: [&(dyn ToSql + Sync); 13] = [
        &seq, &me, &ids, &statuses, &froms, &tos, &faileds, &attempts, &durations, &errors, &sqlstates, &kinds,
        &targets,
    ];
    let updated: HashSet<String> = tx
        .query(
            "UPDATE flotilla_ledger.tenants t
             SET status = u.status, from_revision = u.from_revision, to_revision = u.to_revision,
                 failed_revision = u.failed_revision, attempts = u.attempts, duration_ms = u.duration_ms,
                 error = u.error, sqlstate = u.sqlstate, error_kind = u.error_kind, updated_at = now(),
                 target_revision = coalesce(u.target_revision, t.target_revision),
                 runner = coalesce($2, t.runner)
             FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int4[], $9::int8[],
                         $10::text[], $11::text[], $12::text[], $13::text[])
                  AS u (tenant_id, status, from_revision, to_revision, failed_revision, attempts, duration_ms,
                        error, sqlstate, error_kind, target_revision)
             WHERE t.run_seq = $1 AND t.tenant_id = u.tenant_id
               AND ($2::text IS NULL OR t.runner IS NULL OR t.runner = $2)
             RETURNING t.tenant_id",
            &params,
        )
        .map_err(err("record tenant updates"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if updated.len() == updates.len() {
        return Ok(());
    }
    // Name the first update that did not land; returning the error rolls the whole batch back.
    let Some(missed) = updates.iter().find(|u| !updated.contains(&u.tenant_id)) else {
        return Ok(());
    };
    let holder: Option<Option<String>> = tx
        .query_opt(
            "SELECT runner FROM flotilla_ledger.tenants WHERE run_seq = $1 AND tenant_id = $2",
            &[&seq, &missed.tenant_id],
        )
        .map_err(err("record tenant updates"))?
        .map(|row| row.get(0));
    Err(match holder {
        Some(Some(holder)) => LedgerError::LostClaim {
            location: location.to_string(),
            run: run.to_string(),
            tenant: missed.tenant_id.clone(),
            holder,
        },
        _ => LedgerError::UnknownTenant {
            location: location.to_string(),
            run: run.to_string(),
            tenant: missed.tenant_id.clone(),
        },
    })
}

/// [`Ledger::finish_run`] in one transaction, holding the run's row lock so that of two runners finishing at
/// once, the second sees the first finished and closes the run.
fn finish_tx(
    tx: &mut Transaction<'_>,
    location: &str,
    run: &str,
    me: Option<&str>,
    exit_code: i32,
) -> Result<(), LedgerError> {
    let err = |action| pg_err(location, action);
    let seq = locate_unfinished(tx, location, run, true)?;
    // This runner's running tenants are interrupted; its claimed but unstarted ones go back to the queue.
    tx.execute(
        "UPDATE flotilla_ledger.tenants SET status = 'interrupted', updated_at = now()
         WHERE run_seq = $1 AND status = 'running' AND (runner IS NOT DISTINCT FROM $2 OR runner IS NULL)",
        &[&seq, &me],
    )
    .map_err(err("mark unfinished tenants interrupted"))?;
    tx.execute(
        "UPDATE flotilla_ledger.tenants SET runner = NULL
         WHERE run_seq = $1 AND status = 'pending' AND runner IS NOT DISTINCT FROM $2",
        &[&seq, &me],
    )
    .map_err(err("give back unstarted tenants"))?;
    tx.execute(
        "DELETE FROM flotilla_ledger.connection_shares WHERE run_seq = $1 AND runner IS NOT DISTINCT FROM $2",
        &[&seq, &me],
    )
    .map_err(err("release connection shares"))?;
    tx.execute(
        "UPDATE flotilla_ledger.runners SET finished_at = now(), exit_code = $3
         WHERE run_seq = $1 AND id IS NOT DISTINCT FROM $2",
        &[&seq, &me, &exit_code],
    )
    .map_err(err("finish the runner"))?;
    let n_live: i64 = tx
        .query_one(
            "SELECT count(*) FROM flotilla_ledger.runners
             WHERE run_seq = $1 AND finished_at IS NULL AND lease_until >= now()",
            &[&seq],
        )
        .map_err(err("count live runners"))?
        .get(0);
    if n_live == 0 {
        // The last runner closes the run; tenants of runners that died unfinished are interrupted. Pending
        // tenants never started and stay pending, which a finished run shows as "not started".
        tx.execute(
            "UPDATE flotilla_ledger.tenants SET status = 'interrupted', updated_at = now()
             WHERE run_seq = $1 AND status = 'running'",
            &[&seq],
        )
        .map_err(err("mark unfinished tenants interrupted"))?;
        tx.execute(
            "UPDATE flotilla_ledger.runs
             SET finished_at = now(),
                 exit_code = greatest($2, coalesce((SELECT max(exit_code) FROM flotilla_ledger.runners
                                                    WHERE run_seq = $1), 0))
             WHERE seq = $1",
            &[&seq, &exit_code],
        )
        .map_err(err("finish the run"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_tags_admit_nothing() {
        let placement = |tags: &[(&str, &str)]| Placement {
            servers: vec![],
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        assert_eq!(tags_object(&placement(&[])).as_deref(), Some("{}"));
        assert_eq!(
            tags_object(&placement(&[("region", "eu"), ("tier", "gold"), ("region", "eu")])).as_deref(),
            Some(r#"{"region":"eu","tier":"gold"}"#)
        );
        assert_eq!(tags_object(&placement(&[("region", "eu"), ("region", "us")])), None);
    }

    #[test]
    fn repeated_updates_keep_the_last_and_an_earlier_target() {
        let planned = TenantUpdate {
            target_revision: Some("abc".to_string()),
            ..TenantUpdate::new("t1", TenantStatus::Running)
        };
        let updates = [
            planned,
            TenantUpdate::new("t2", TenantStatus::Running),
            TenantUpdate::new("t1", TenantStatus::Succeeded),
        ];
        let last = last_updates(&updates);
        assert_eq!(last.len(), 2);
        assert_eq!(
            (last[0].tenant_id.as_str(), last[0].status),
            ("t1", TenantStatus::Succeeded)
        );
        assert_eq!(last[0].target_revision.as_deref(), Some("abc"));
        assert_eq!(last[1].tenant_id, "t2");
    }
}
