//! The SQLite ledger: one file per project, in WAL mode so readers never wait for the run's writer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use rusqlite::types::Type;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::error::LedgerError;
use super::id::RunId;
use super::queue::{
    fair_share, Claim, ClaimState, ClaimedTenant, Joined, OpenRun, Placement, RunnerInfo, RunnerRecord, ServerDemand,
    Shares,
};
use super::record::{NewTenant, RunRecord, RunSelector, TenantRecord, TenantUpdate};
use super::schema::{MIGRATIONS, SCHEMA_VERSION};
use super::status::{StatusCounts, TenantStatus};
use super::store::Ledger;

/// How long a statement waits for another process's lock before failing with "database is locked". Generous,
/// because the only contention is a reader's brief snapshot or a second writer's short batch.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The page cache, in KiB as `PRAGMA cache_size` takes it (negative: KiB rather than pages).
const CACHE_SIZE_KIB: i64 = -512;

/// How many fresh run ids to try when a generated one is taken (same second, same random suffix).
const ID_ATTEMPTS: usize = 16;

/// The ledger in a SQLite file. `Send`, not `Sync`: give it to one blocking thread.
#[derive(Debug)]
pub struct SqliteLedger {
    conn: Connection,
    path: PathBuf,
    /// The run this value is a runner of, after [`Ledger::open_run`].
    active: Option<Active>,
}

/// The run a [`SqliteLedger`] is a runner of.
#[derive(Debug)]
struct Active {
    seq: i64,
    run: RunId,
    runner: RunnerInfo,
}

impl SqliteLedger {
    /// Opens the ledger at `path`, creating it and its parent directories if missing, and migrates its schema
    /// to [`super::SCHEMA_VERSION`].
    ///
    /// Errors: [`LedgerError::CreateDir`], [`LedgerError::Sqlite`] when the file cannot be opened or set up,
    /// [`LedgerError::SchemaTooNew`] when a newer flotilla wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteLedger, LedgerError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
                location: path.display().to_string(),
                source,
            })?;
        }
        let conn = Connection::open(&path).map_err(sqlite_err(&path, "open the file"))?;
        SqliteLedger::set_up(conn, path)
    }

    /// A private, empty ledger in memory, for tests.
    pub fn open_in_memory() -> Result<SqliteLedger, LedgerError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(sqlite_err(&path, "open the file"))?;
        SqliteLedger::set_up(conn, path)
    }

    /// The file this ledger lives in (`:memory:` for [`SqliteLedger::open_in_memory`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn set_up(mut conn: Connection, path: PathBuf) -> Result<SqliteLedger, LedgerError> {
        let err = |action| sqlite_err(&path, action);
        // The busy timeout comes first: switching to WAL needs a lock another process may hold.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err("set the busy timeout"))?;
        // Runners started at once on a new file race to switch it to WAL, and SQLite does not always wait on the
        // busy timeout for that switch: try again for as long as the busy timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)) {
                Ok(_) => break,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(err("switch to WAL mode")(e)),
            }
        }
        // With WAL, NORMAL loses at most the last commits on power loss, never consistency; the coordinator
        // flushes often, so the ledger is behind by a batch at worst.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err("set synchronous mode"))?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(err("enable foreign keys"))?;
        // SQLite's default page cache (2 MiB) fills up while a run of 10,000 tenants is recorded, and the fleet's
        // peak memory should not grow with the fleet. Runs insert and update in tenant id order, so a small cache
        // holds the pages in use; a transaction larger than it spills to the WAL (issue 8).
        conn.pragma_update(None, "cache_size", CACHE_SIZE_KIB)
            .map_err(err("set the page cache size"))?;
        migrate(&mut conn, &path)?;
        Ok(SqliteLedger {
            conn,
            path,
            active: None,
        })
    }

    /// This runner on `run`.
    fn active(&self, run: &RunId) -> Result<&Active, LedgerError> {
        self.active
            .as_ref()
            .filter(|a| &a.run == run)
            .ok_or_else(|| LedgerError::NotRunner {
                location: self.path.display().to_string(),
                run: run.to_string(),
            })
    }

    fn err(&self, action: &'static str) -> impl FnOnce(rusqlite::Error) -> LedgerError + '_ {
        sqlite_err(&self.path, action)
    }

    /// A write transaction that takes the write lock at once, so it waits on `busy_timeout` instead of
    /// failing when it later upgrades from a read lock.
    fn write_tx(&mut self) -> Result<Transaction<'_>, LedgerError> {
        let path = &self.path;
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_err(path, "start a write transaction"))
    }
}

fn sqlite_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(rusqlite::Error) -> LedgerError + 'a {
    move |source| LedgerError::Sqlite {
        location: path.display().to_string(),
        action,
        source,
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), LedgerError> {
    let err = |action| sqlite_err(path, action);
    let read_version = |conn: &Connection| {
        conn.pragma_query_value(None, "user_version", |row| row.get::<_, i64>(0))
            .map_err(err("read the schema version"))
    };
    let too_new = |found| LedgerError::SchemaTooNew {
        location: path.display().to_string(),
        found,
        known: SCHEMA_VERSION,
    };
    let found = read_version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(too_new(found));
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("start the schema migration"))?;
    // Another process may have migrated between the first read and taking the write lock.
    let found = read_version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(too_new(found));
    }
    for step in &MIGRATIONS[usize::try_from(found).unwrap_or(0)..] {
        tx.execute_batch(step).map_err(err("migrate the schema"))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err("record the schema version"))?;
    tx.commit().map_err(err("commit the schema migration"))
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Registers `runner` on the run `seq`.
fn insert_runner(tx: &Transaction<'_>, path: &Path, seq: i64, runner: &RunnerInfo) -> Result<(), LedgerError> {
    let placement = serde_json::to_string(&runner.placement).unwrap_or_else(|_| "{}".to_string());
    let at = now();
    let lease = lease_ms(runner.lease);
    tx.execute(
        "INSERT INTO flotilla_runners (run_seq, id, host, pid, placement, lease_ms, started_at, heartbeat_at,
                                       lease_until_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        params![
            seq,
            runner.id,
            runner.host,
            runner.pid,
            placement,
            lease,
            at,
            now_ms() + lease
        ],
    )
    .map_err(sqlite_err(path, "register the runner"))?;
    Ok(())
}

/// Whether a canary of run `?1` is unfinished.
///
/// The claim queries name the index `flotilla_run_tenants_unfinished` (schema version 5): without statistics
/// SQLite prefers the primary key, which reads every tenant of the run. Their `status` condition is the index's,
/// word for word, as a partial index requires.
const CANARY_PHASE_SQL: &str = "SELECT EXISTS (SELECT 1 FROM flotilla_run_tenants
                                  INDEXED BY flotilla_run_tenants_unfinished
                                  WHERE run_seq = ?1 AND canary = 1
                                    AND status IN ('pending', 'running', 'interrupted'))";

/// A runner's placement over a tenant row `t`: `?servers` is a JSON array of server names (empty: any server),
/// `?tags` a JSON array of `[key, value]` pairs the tenant's tags (a JSON object of strings) must all have.
macro_rules! placement_sql {
    ($servers:literal, $tags:literal) => {
        concat!(
            "(",
            $servers,
            " = '[]' OR t.server IN (SELECT value FROM json_each(",
            $servers,
            ")))
             AND NOT EXISTS (SELECT 1 FROM json_each(",
            $tags,
            ") p
                             WHERE (SELECT q.value FROM json_each(t.tags) q
                                    WHERE q.key = p.value ->> 0 AND q.type = 'text') IS NOT p.value ->> 1)"
        )
    };
}

/// The tenants of run `?1` a claim takes, at most `?5`, in dispatch order: unfinished, of this runner's
/// placement (`?6` servers, `?7` tags), canaries or not as `?4` says, and either interrupted or held by nobody
/// alive at `?2` (no runner, a finished one, or one whose lease lapsed); this runner's (`?3`) own tenants only
/// when interrupted. It walks `flotilla_run_tenants_unfinished` in position order and stops at the limit.
const CLAIM_SQL: &str = concat!(
    "SELECT t.tenant_id, t.target_revision, t.attempts
     FROM flotilla_run_tenants t INDEXED BY flotilla_run_tenants_unfinished
     WHERE t.run_seq = ?1 AND t.canary = ?4 AND t.status IN ('pending', 'running', 'interrupted')
       AND (t.status = 'interrupted' OR t.runner IS NULL
            OR NOT EXISTS (SELECT 1 FROM flotilla_runners r
                           WHERE r.run_seq = t.run_seq AND r.id = t.runner
                             AND r.finished_at IS NULL AND r.lease_until_ms >= ?2))
       AND (t.runner IS NOT ?3 OR t.status = 'interrupted')
       AND ",
    placement_sql!("?6", "?7"),
    "
     ORDER BY t.position
     LIMIT ?5"
);

/// Whether run `?1` has an unfinished tenant of this runner's placement (`?3` servers, `?4` tags) that is not
/// this runner's (`?2`) to finish: held by another runner, free, or interrupted.
const IS_LEFT_SQL: &str = concat!(
    "SELECT EXISTS (
         SELECT 1 FROM flotilla_run_tenants t INDEXED BY flotilla_run_tenants_unfinished
         WHERE t.run_seq = ?1 AND t.status IN ('pending', 'running', 'interrupted')
           AND (t.runner IS NOT ?2 OR t.status = 'interrupted')
           AND ",
    placement_sql!("?3", "?4"),
    ")"
);

/// [`Placement`] as the claim queries take it: its servers as a JSON array, its tags as a JSON array of pairs.
fn placement_params(placement: &Placement) -> (String, String) {
    let servers = serde_json::Value::from(placement.servers.clone()).to_string();
    let pairs: Vec<[&str; 2]> = placement.tags.iter().map(|(k, v)| [k.as_str(), v.as_str()]).collect();
    let tags = serde_json::to_string(&pairs).unwrap_or_else(|_| "[]".to_string());
    (servers, tags)
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _)
        if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _)
        if e.code == ErrorCode::ConstraintViolation
            && (e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

/// A column that holds text in a fixed vocabulary, parsed while reading the row.
fn parse_column<T>(row: &Row<'_>, idx: usize, parse: impl FnOnce(&str) -> Result<T, String>) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).map_err(|msg| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, msg.into()))
}

fn duration_to_sql(ms: Option<u64>) -> Option<i64> {
    ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

const RUN_COLUMNS: &str =
    "seq, id, command, target, options, user, host, pid, started_at, finished_at, exit_code, name, halted";

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<(i64, RunRecord)> {
    let options = parse_column(row, 4, |text| {
        serde_json::from_str(text).map_err(|e| format!("options are not JSON: {e}"))
    })?;
    let record = RunRecord {
        id: RunId(row.get(1)?),
        command: row.get(2)?,
        target: row.get(3)?,
        options,
        user: row.get(5)?,
        host: row.get(6)?,
        pid: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
        exit_code: row.get(10)?,
        n_tenants: 0,
        counts: StatusCounts::default(),
        name: row.get(11)?,
        is_halted: row.get(12)?,
        runners: Vec::new(),
    };
    Ok((row.get(0)?, record))
}

const TENANT_COLUMNS: &str = "tenant_id, server, kind, status, from_revision, to_revision, failed_revision, \
                              attempts, duration_ms, error, sqlstate, updated_at, error_kind, target_revision, runner, position";

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<TenantRecord> {
    Ok(TenantRecord {
        tenant_id: row.get(0)?,
        server: row.get(1)?,
        kind: row.get(2)?,
        status: parse_column(row, 3, |text| text.parse().map_err(|e| format!("{e}")))?,
        from_revision: row.get(4)?,
        to_revision: row.get(5)?,
        failed_revision: row.get(6)?,
        attempts: row.get(7)?,
        duration_ms: row.get::<_, Option<i64>>(8)?.map(|ms| u64::try_from(ms).unwrap_or(0)),
        error: row.get(9)?,
        sqlstate: row.get(10)?,
        updated_at: row.get(11)?,
        error_kind: row.get(12)?,
        target_revision: row.get(13)?,
        runner: row.get(14)?,
        position: usize::try_from(row.get::<_, i64>(15)?).unwrap_or(0),
    })
}

/// `'a', 'b'` for an SQL `IN` list. Safe to splice: the strings are the fixed status names.
fn status_list(statuses: &[TenantStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Ledger for SqliteLedger {
    fn open_run_iter<'t>(
        &mut self,
        open: &OpenRun,
        tenants: &mut dyn Iterator<Item = NewTenant<'t>>,
    ) -> Result<Joined, LedgerError> {
        let run = &open.run;
        let started = Utc::now();
        let started_at = started.to_rfc3339_opts(SecondsFormat::Millis, true);
        let options = run.options.to_string();
        let pid = std::process::id();
        let path = self.path.clone();
        let err = |action| sqlite_err(&path, action);
        let tx = self.write_tx()?;
        if let Some(name) = &open.name {
            let found = tx
                .query_row(
                    "SELECT seq, id, command, target, finished_at IS NOT NULL FROM flotilla_runs WHERE name = ?1",
                    [name],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, bool>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(err("look up the named run"))?;
            if let Some((seq, id, command, target, is_finished)) = found {
                if command != run.command || target != run.target {
                    return Err(LedgerError::RunMismatch {
                        location: path.display().to_string(),
                        name: name.clone(),
                        found: format!("{command} {target}"),
                        wanted: format!("{} {}", run.command, run.target),
                    });
                }
                if !is_finished {
                    insert_runner(&tx, &path, seq, &open.runner)?;
                }
                tx.commit().map_err(err("commit joining the run"))?;
                let id = RunId(id);
                self.active = Some(Active {
                    seq,
                    run: id.clone(),
                    runner: open.runner.clone(),
                });
                return Ok(Joined {
                    run: id,
                    is_new: false,
                    is_finished,
                    command,
                    target,
                });
            }
        }
        let mut attempt = 0;
        let (id, seq) = loop {
            let id = RunId::generate(started);
            let inserted = tx.execute(
                "INSERT INTO flotilla_runs (id, command, target, options, user, host, pid, started_at, name)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    id.as_str(),
                    run.command,
                    run.target,
                    options,
                    run.user,
                    run.host,
                    pid,
                    started_at,
                    open.name
                ],
            );
            attempt += 1;
            match inserted {
                Ok(_) => break (id, tx.last_insert_rowid()),
                Err(e) if is_unique_violation(&e) && attempt < ID_ATTEMPTS => continue,
                Err(e) => return Err(err("record the run")(e)),
            }
        };
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO flotilla_run_tenants (run_seq, tenant_id, server, kind, status, updated_at,
                                                      target_revision, position, canary, tags, from_revision,
                                                      to_revision)
                     VALUES (?1, ?2, ?3, ?4, CASE WHEN ?10 IS NULL THEN 'pending' ELSE 'skipped' END, ?5, ?6, ?7,
                             ?8, coalesce(?9, '{}'), nullif(?10, ''), nullif(?10, ''))",
                )
                .map_err(err("record the run's tenants"))?;
            for (position, tenant) in tenants.enumerate() {
                insert
                    .execute(params![
                        seq,
                        tenant.tenant_id,
                        tenant.server,
                        tenant.kind,
                        started_at,
                        tenant.target,
                        position as i64,
                        tenant.canary,
                        tenant.tags,
                        tenant.at_target,
                    ])
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            LedgerError::DuplicateTenant {
                                location: path.display().to_string(),
                                tenant: tenant.tenant_id.to_string(),
                            }
                        } else {
                            err("record the run's tenants")(e)
                        }
                    })?;
            }
        }
        insert_runner(&tx, &path, seq, &open.runner)?;
        tx.commit().map_err(err("commit the new run"))?;
        self.active = Some(Active {
            seq,
            run: id.clone(),
            runner: open.runner.clone(),
        });
        Ok(Joined {
            run: id,
            is_new: true,
            is_finished: false,
            command: run.command.clone(),
            target: run.target.clone(),
        })
    }

    fn claim(&mut self, run: &RunId, max: usize) -> Result<Claim, LedgerError> {
        let active = self.active(run)?;
        let (seq, me, placement, lease) = (
            active.seq,
            active.runner.id.clone(),
            active.runner.placement.clone(),
            lease_ms(active.runner.lease),
        );
        let path = self.path.clone();
        let err = |action| sqlite_err(&path, action);
        let tx = self.write_tx()?;
        let (is_finished, is_halted): (bool, bool) = tx
            .query_row(
                "SELECT finished_at IS NOT NULL, halted FROM flotilla_runs WHERE seq = ?1",
                [seq],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(err("read the run"))?;
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
        let now = now_ms();
        tx.execute(
            "UPDATE flotilla_runners SET heartbeat_at = ?3, lease_until_ms = ?4 WHERE run_seq = ?1 AND id = ?2",
            params![seq, me, self::now(), now + lease],
        )
        .map_err(err("renew the lease"))?;
        // While a canary is unfinished, only canaries are handed out; once none is, every unfinished tenant is
        // a non-canary, so each claim reads one side of the index.
        let is_canary_phase: bool = tx
            .query_row(CANARY_PHASE_SQL, [seq], |row| row.get(0))
            .map_err(err("read the canary phase"))?;
        let (servers, tags) = placement_params(&placement);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let claimed: Vec<ClaimedTenant> = tx
            .prepare_cached(CLAIM_SQL)
            .and_then(|mut stmt| {
                stmt.query_map(params![seq, now, me, is_canary_phase, limit, servers, tags], |row| {
                    Ok(ClaimedTenant {
                        tenant_id: row.get(0)?,
                        target_revision: row.get(1)?,
                        attempts: row.get(2)?,
                    })
                })?
                .collect()
            })
            .map_err(err("find claimable tenants"))?;
        {
            let mut take = tx
                .prepare_cached(
                    "UPDATE flotilla_run_tenants SET status = 'pending', runner = ?3, updated_at = ?4
                     WHERE run_seq = ?1 AND tenant_id = ?2",
                )
                .map_err(err("claim tenants"))?;
            let at = self::now();
            for t in &claimed {
                take.execute(params![seq, t.tenant_id, me, at])
                    .map_err(err("claim tenants"))?;
            }
        }
        let state = if claimed.len() == max && max > 0 {
            ClaimState::More
        } else {
            // Anything of this placement still unfinished and not this runner's (the tenants just claimed
            // included): held by others or waiting for the canaries.
            let is_left: bool = tx
                .query_row(IS_LEFT_SQL, params![seq, me, servers, tags], |row| row.get(0))
                .map_err(err("look for tenants left"))?;
            if is_left {
                ClaimState::Wait
            } else {
                ClaimState::Done
            }
        };
        tx.commit().map_err(err("commit the claim"))?;
        Ok(Claim {
            tenants: claimed,
            state,
        })
    }

    fn heartbeat(&mut self, run: &RunId) -> Result<(), LedgerError> {
        let active = self.active(run)?;
        let (seq, me, lease) = (active.seq, active.runner.id.clone(), lease_ms(active.runner.lease));
        let now = now_ms();
        let n = self
            .conn
            .execute(
                "UPDATE flotilla_runners SET heartbeat_at = ?3, lease_until_ms = ?4
                 WHERE run_seq = ?1 AND id = ?2 AND lease_until_ms >= ?5",
                params![seq, me, self::now(), now + lease, now],
            )
            .map_err(self.err("renew the lease"))?;
        if n == 0 {
            return Err(LedgerError::LeaseLost {
                location: self.path.display().to_string(),
                run: run.to_string(),
                runner: me,
            });
        }
        Ok(())
    }

    fn share_connections(&mut self, run: &RunId, demands: &[ServerDemand]) -> Result<Shares, LedgerError> {
        let active = self.active(run)?;
        let (seq, me) = (active.seq, active.runner.id.clone());
        let path = self.path.clone();
        let err = |action| sqlite_err(&path, action);
        let now = now_ms();
        // The write lock serializes every runner's shares, so each sees the others' latest.
        let tx = self.write_tx()?;
        let mut granted = Vec::with_capacity(demands.len());
        {
            let mut others = tx
                .prepare_cached(
                    "SELECT s.granted, s.wants FROM flotilla_connection_shares s
                     JOIN flotilla_runners r ON r.run_seq = s.run_seq AND r.id = s.runner
                     WHERE s.run_seq = ?1 AND s.server = ?2 AND s.runner <> ?3
                       AND r.finished_at IS NULL AND r.lease_until_ms >= ?4",
                )
                .map_err(err("read connection shares"))?;
            let mut record = tx
                .prepare_cached(
                    "INSERT INTO flotilla_connection_shares (run_seq, server, runner, granted, wants)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (run_seq, server, runner) DO UPDATE SET granted = ?4, wants = ?5",
                )
                .map_err(err("record a connection share"))?;
            for demand in demands {
                let held: Vec<(usize, bool)> = others
                    .query_map(params![seq, demand.server, me, now], |row| {
                        Ok((row.get::<_, i64>(0)?.max(0) as usize, row.get::<_, bool>(1)?))
                    })
                    .and_then(|rows| rows.collect())
                    .map_err(err("read connection shares"))?;
                let share = fair_share(demand, &held);
                record
                    .execute(params![seq, demand.server, me, share as i64, demand.want > 0])
                    .map_err(err("record a connection share"))?;
                granted.push(share);
            }
        }
        let n_busy_others: i64 = tx
            .query_row(
                "SELECT COUNT(DISTINCT s.runner) FROM flotilla_connection_shares s
                 JOIN flotilla_runners r ON r.run_seq = s.run_seq AND r.id = s.runner
                 WHERE s.run_seq = ?1 AND s.runner <> ?2 AND s.wants
                   AND r.finished_at IS NULL AND r.lease_until_ms >= ?3",
                params![seq, me, now],
                |row| row.get(0),
            )
            .map_err(err("count busy runners"))?;
        tx.commit().map_err(err("commit connection shares"))?;
        let is_busy = demands.iter().any(|d| d.want > 0);
        Ok(Shares {
            connections: granted,
            n_busy_runners: (n_busy_others as usize + usize::from(is_busy)).max(1),
        })
    }

    fn halt(&mut self, run: &RunId) -> Result<(), LedgerError> {
        let (seq, _) = locate(&self.conn, &self.path, run.as_str())?;
        self.conn
            .execute("UPDATE flotilla_runs SET halted = 1 WHERE seq = ?1", [seq])
            .map_err(self.err("halt the run"))?;
        Ok(())
    }

    fn record(&mut self, run: &RunId, updates: &[TenantUpdate]) -> Result<(), LedgerError> {
        if updates.is_empty() {
            return Ok(());
        }
        let updated_at = now();
        let path = self.path.clone();
        let err = |action| sqlite_err(&path, action);
        let me = self
            .active
            .as_ref()
            .filter(|a| &a.run == run)
            .map(|a| a.runner.id.clone());
        let tx = self.write_tx()?;
        let seq = locate_unfinished(&tx, &path, run)?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE flotilla_run_tenants
                     SET status = ?3, from_revision = ?4, to_revision = ?5, failed_revision = ?6, attempts = ?7,
                         duration_ms = ?8, error = ?9, sqlstate = ?10, updated_at = ?11, error_kind = ?12,
                         target_revision = coalesce(?13, target_revision), runner = coalesce(?14, runner)
                     WHERE run_seq = ?1 AND tenant_id = ?2 AND (?14 IS NULL OR runner IS NULL OR runner = ?14)",
                )
                .map_err(err("record tenant updates"))?;
            for u in updates {
                let n = update
                    .execute(params![
                        seq,
                        u.tenant_id,
                        u.status.as_str(),
                        u.from_revision,
                        u.to_revision,
                        u.failed_revision,
                        u.attempts,
                        duration_to_sql(u.duration_ms),
                        u.error,
                        u.sqlstate,
                        updated_at,
                        u.error_kind,
                        u.target_revision,
                        me,
                    ])
                    .map_err(err("record tenant updates"))?;
                if n == 0 {
                    let holder: Option<Option<String>> = tx
                        .query_row(
                            "SELECT runner FROM flotilla_run_tenants WHERE run_seq = ?1 AND tenant_id = ?2",
                            params![seq, u.tenant_id],
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(err("record tenant updates"))?;
                    return Err(match holder {
                        Some(Some(holder)) => LedgerError::LostClaim {
                            location: path.display().to_string(),
                            run: run.to_string(),
                            tenant: u.tenant_id.clone(),
                            holder,
                        },
                        _ => LedgerError::UnknownTenant {
                            location: path.display().to_string(),
                            run: run.to_string(),
                            tenant: u.tenant_id.clone(),
                        },
                    });
                }
            }
        }
        tx.commit().map_err(err("commit tenant updates"))
    }

    fn finish_run(&mut self, run: &RunId, exit_code: i32) -> Result<(), LedgerError> {
        let finished_at = now();
        let now = now_ms();
        let path = self.path.clone();
        let err = |action| sqlite_err(&path, action);
        let me = self
            .active
            .as_ref()
            .filter(|a| &a.run == run)
            .map(|a| a.runner.id.clone());
        let tx = self.write_tx()?;
        let seq = locate_unfinished(&tx, &path, run)?;
        // This runner's running tenants are interrupted; its claimed but unstarted ones go back to the queue.
        tx.execute(
            "UPDATE flotilla_run_tenants SET status = 'interrupted', updated_at = ?2
             WHERE run_seq = ?1 AND status = 'running' AND (runner IS ?3 OR runner IS NULL)",
            params![seq, finished_at, me],
        )
        .map_err(err("mark unfinished tenants interrupted"))?;
        tx.execute(
            "UPDATE flotilla_run_tenants SET runner = NULL WHERE run_seq = ?1 AND status = 'pending' AND runner IS ?2",
            params![seq, me],
        )
        .map_err(err("give back unstarted tenants"))?;
        tx.execute(
            "DELETE FROM flotilla_connection_shares WHERE run_seq = ?1 AND runner IS ?2",
            params![seq, me],
        )
        .map_err(err("release connection shares"))?;
        tx.execute(
            "UPDATE flotilla_runners SET finished_at = ?3, exit_code = ?4 WHERE run_seq = ?1 AND id IS ?2",
            params![seq, me, finished_at, exit_code],
        )
        .map_err(err("finish the runner"))?;
        let n_others_live: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM flotilla_runners
                 WHERE run_seq = ?1 AND finished_at IS NULL AND lease_until_ms >= ?2",
                params![seq, now],
                |row| row.get(0),
            )
            .map_err(err("count live runners"))?;
        if n_others_live == 0 {
            // The last runner closes the run; tenants of runners that died unfinished are interrupted. Pending
            // tenants never started and stay pending, which a finished run shows as "not started".
            tx.execute(
                "UPDATE flotilla_run_tenants SET status = 'interrupted', updated_at = ?2
                 WHERE run_seq = ?1 AND status = 'running'",
                params![seq, finished_at],
            )
            .map_err(err("mark unfinished tenants interrupted"))?;
            tx.execute(
                "UPDATE flotilla_runs
                 SET finished_at = ?2,
                     exit_code = max(?3, coalesce((SELECT max(exit_code) FROM flotilla_runners WHERE run_seq = ?1), 0))
                 WHERE seq = ?1",
                params![seq, finished_at, exit_code],
            )
            .map_err(err("finish the run"))?;
        }
        tx.commit().map_err(err("commit the finished run"))
    }

    fn run(&self, which: &RunSelector) -> Result<Option<RunRecord>, LedgerError> {
        // One read transaction, so the run row and its counts come from the same snapshot.
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.err("start a read transaction"))?;
        let found = match which {
            RunSelector::Latest => tx
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM flotilla_runs ORDER BY seq DESC LIMIT 1"
                ))
                .and_then(|mut stmt| stmt.query_row([], run_from_row).optional()),
            RunSelector::Id(id) => tx
                .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM flotilla_runs WHERE id = ?1"))
                .and_then(|mut stmt| stmt.query_row([id], run_from_row).optional()),
        }
        .map_err(self.err("read the run"))?;
        let Some((seq, mut record)) = found else {
            return Ok(None);
        };
        let mut stmt = tx
            .prepare_cached("SELECT status, COUNT(*) FROM flotilla_run_tenants WHERE run_seq = ?1 GROUP BY status")
            .map_err(self.err("count the run's tenants"))?;
        let rows = stmt
            .query_map([seq], |row| {
                let status = parse_column(row, 0, |text| text.parse().map_err(|e| format!("{e}")))?;
                Ok((status, row.get::<_, usize>(1)?))
            })
            .map_err(self.err("count the run's tenants"))?;
        for row in rows {
            let (status, n) = row.map_err(self.err("count the run's tenants"))?;
            record.counts.add(status, n);
        }
        record.n_tenants = record.counts.total();
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, host, pid, placement, started_at, heartbeat_at, lease_until_ms >= ?2, finished_at,
                        exit_code
                 FROM flotilla_runners WHERE run_seq = ?1 ORDER BY started_at, id",
            )
            .map_err(self.err("read the run's runners"))?;
        let rows = stmt
            .query_map(params![seq, now_ms()], |row| {
                let placement = parse_column(row, 3, |text| {
                    serde_json::from_str::<Placement>(text).map_err(|e| format!("placement is not JSON: {e}"))
                })?;
                Ok(RunnerRecord {
                    id: row.get(0)?,
                    host: row.get(1)?,
                    pid: row.get(2)?,
                    placement,
                    started_at: row.get(4)?,
                    heartbeat_at: row.get(5)?,
                    is_live: row.get(6)?,
                    finished_at: row.get(7)?,
                    exit_code: row.get(8)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read the run's runners"))?;
        record.runners = rows;
        Ok(Some(record))
    }

    fn tenants(&self, run: &RunId, statuses: Option<&[TenantStatus]>) -> Result<Vec<TenantRecord>, LedgerError> {
        if statuses.is_some_and(|s| s.is_empty()) {
            // Still report an unknown run, as with any other filter.
            locate(&self.conn, &self.path, run.as_str())?;
            return Ok(Vec::new());
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.err("start a read transaction"))?;
        let (seq, _) = locate(&tx, &self.path, run.as_str())?;
        let filter = statuses
            .map(|s| format!(" AND status IN ({})", status_list(s)))
            .unwrap_or_default();
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {TENANT_COLUMNS} FROM flotilla_run_tenants WHERE run_seq = ?1{filter} ORDER BY tenant_id"
            ))
            .map_err(self.err("read the run's tenants"))?;
        let rows = stmt
            .query_map([seq], tenant_from_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(self.err("read the run's tenants"))?;
        Ok(rows)
    }

    fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, LedgerError> {
        let ids: Vec<String> = self
            .conn
            .prepare_cached("SELECT id FROM flotilla_runs ORDER BY seq DESC LIMIT ?1")
            .and_then(|mut stmt| {
                stmt.query_map([limit as i64], |row| row.get(0))?
                    .collect::<Result<Vec<String>, _>>()
            })
            .map_err(self.err("list the runs"))?;
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            runs.extend(self.run(&RunSelector::Id(id))?);
        }
        Ok(runs)
    }

    fn retry_set(&self, run: &RunId) -> Result<Vec<String>, LedgerError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.err("start a read transaction"))?;
        let (seq, is_finished) = locate(&tx, &self.path, run.as_str())?;
        let mut stmt = tx
            .prepare_cached(
                "SELECT tenant_id FROM flotilla_run_tenants
                 WHERE run_seq = ?1
                   AND (status IN ('failed', 'interrupted', 'pending') OR (?2 AND status = 'running'))
                 ORDER BY tenant_id",
            )
            .map_err(self.err("read the retry set"))?;
        let ids = stmt
            .query_map(params![seq, !is_finished], |row| row.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(self.err("read the retry set"))?;
        Ok(ids)
    }
}

/// The run's row number and whether it is finished.
fn locate(conn: &Connection, path: &Path, run: &str) -> Result<(i64, bool), LedgerError> {
    conn.prepare_cached("SELECT seq, finished_at IS NOT NULL FROM flotilla_runs WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([run], |row| Ok((row.get(0)?, row.get(1)?))).optional())
        .map_err(sqlite_err(path, "look up the run"))?
        .ok_or_else(|| LedgerError::UnknownRun {
            location: path.display().to_string(),
            run: run.to_string(),
        })
}

/// Like [`locate`], for a write that a finished run must refuse.
fn locate_unfinished(conn: &Connection, path: &Path, run: &RunId) -> Result<i64, LedgerError> {
    match locate(conn, path, run.as_str())? {
        (_, true) => Err(LedgerError::RunFinished {
            location: path.display().to_string(),
            run: run.to_string(),
        }),
        (seq, false) => Ok(seq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `detail` column of SQLite's plan for `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt.query_map(params, |row| row.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    /// A claim walks the index of unfinished tenants in dispatch order and stops at its limit: no step reads
    /// every unfinished tenant of the run or sorts them (issue 16).
    #[test]
    fn claims_walk_the_unfinished_tenants_in_order() {
        let ledger = SqliteLedger::open_in_memory().unwrap();
        let placement = Placement {
            servers: vec!["eu-1".to_string()],
            tags: vec![("ring".to_string(), "1".to_string())],
        };
        let (servers, tags) = placement_params(&placement);
        assert_eq!((servers.as_str(), tags.as_str()), (r#"["eu-1"]"#, r#"[["ring","1"]]"#));
        let claim = plan(&ledger.conn, CLAIM_SQL, params![1, 0, "me", false, 10, servers, tags]);
        assert!(
            claim.contains("USING INDEX flotilla_run_tenants_unfinished (run_seq=? AND canary=?)"),
            "{claim}"
        );
        assert!(!claim.contains("TEMP B-TREE"), "{claim}");
        let canary = plan(&ledger.conn, CANARY_PHASE_SQL, [1]);
        assert!(
            canary.contains("flotilla_run_tenants_unfinished (run_seq=? AND canary=?)"),
            "{canary}"
        );
        let left = plan(&ledger.conn, IS_LEFT_SQL, params![1, "me", servers, tags]);
        assert!(left.contains("flotilla_run_tenants_unfinished (run_seq=?)"), "{left}");
    }

    /// A ledger written before the claim index (schema version 4) is migrated on open, through schema 6, and keeps
    /// its runs.
    #[test]
    fn version_4_ledgers_get_the_claim_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        {
            let conn = Connection::open(&path).unwrap();
            for step in &MIGRATIONS[..4] {
                conn.execute_batch(step).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            conn.execute_batch(
                "INSERT INTO flotilla_runs (id, command, target, options, user, host, pid, started_at)
                 VALUES ('r1', 'upgrade', 'head', '{}', 'u', 'h', 1, '2026-12-04T00:00:00Z');
                 INSERT INTO flotilla_run_tenants (run_seq, tenant_id, server, kind, status, updated_at)
                 VALUES (1, 't1', 's', 'schema', 'pending', '2026-12-04T00:00:00Z');",
            )
            .unwrap();
        }
        let ledger = SqliteLedger::open(&path).unwrap();
        let version: i64 = ledger
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let has_index = |name: &str| -> bool {
            ledger
                .conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1",
                    [name],
                    |row| row.get::<_, i64>(0),
                )
                .unwrap()
                == 1
        };
        assert!(has_index("flotilla_run_tenants_unfinished"));
        // Schema 6 dropped the (run_seq, status) index: a lookup by status uses the claim index instead.
        assert!(!has_index("flotilla_run_tenants_status"));
        let by_status = plan(
            &ledger.conn,
            "SELECT tenant_id FROM flotilla_run_tenants WHERE run_seq = ?1 AND status IN ('failed', 'interrupted')",
            [1],
        );
        assert!(
            by_status.contains("INDEX flotilla_run_tenants_claim (run_seq=? AND status=?)"),
            "{by_status}"
        );
        let run = ledger.run(&RunSelector::Latest).unwrap().expect("the run");
        assert_eq!(run.id.to_string(), "r1");
        assert_eq!(ledger.tenants(&run.id, None).unwrap().len(), 1);
    }
}
