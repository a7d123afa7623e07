//! Commands against one database: upgrade, downgrade, current, stamp, validate, resolve.
//!
//! The commands that write (`upgrade`, `downgrade`, `stamp`, `resolve`, `ensure-version`) hold the migration
//! lock; those that only read (`current`, `validate`) never take it, so a running upgrade cannot hold them up.
//! An upgrade or downgrade stops after the revision in progress on the first SIGINT or SIGTERM and cancels the
//! statement in progress on the second (`crate::signals`), then exits 130 naming the revision the database is at.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;

use super::args::{CurrentArgs, EnsureVersionArgs, Format, GlobalArgs, MigrateArgs, StampArgs};
use super::context::{Ctx, Loaded};
use super::error::CliError;
use super::output::{print_json, tags};
use crate::error::ExitCode;
use crate::executor::{ExecError, ExecEvent, ExecFailure, OfflineInput, ReadSession, Report, Session};
use crate::graph::{Direction, Plan};
use crate::revision::RevisionId;
use crate::signals::{Canceller, Interrupt, Signals};

fn plan_for(loaded: &Loaded, direction: Direction, rows: &[RevisionId], target: &str) -> Result<Plan, CliError> {
    Ok(match direction {
        Direction::Up => loaded.graph.plan_upgrade(rows, target)?,
        Direction::Down => loaded.graph.plan_downgrade_checked(rows, target)?,
    })
}

fn word(direction: Direction) -> &'static str {
    match direction {
        Direction::Up => "upgrade",
        Direction::Down => "downgrade",
    }
}

pub async fn migrate(global: &GlobalArgs, args: MigrateArgs, direction: Direction) -> Result<ExitCode, CliError> {
    let mut ctx = Ctx::load(global)?;
    ctx.exec.backfill_rate = args.backfill.backfill_rate.filter(|r| *r > 0.0);
    ctx.exec.is_irreversible_allowed = args.backfill.force;
    let loaded = ctx.load_scripts()?;
    if args.sql {
        return offline(&ctx, &loaded, &args.target, direction);
    }
    if args.target.contains(':') {
        return Err(CliError::usage(format!(
            "`{}`: a FROM:TO range is only for --sql",
            args.target
        )));
    }
    // Before anything touches the database, so no signal from here on ends the process half way.
    let mut signals = Signals::new();
    let (client, canceller) = ctx.connect_cancellable().await?;
    // A signal while waiting for another run's lock ends the wait: nothing was done yet.
    let mut session = tokio::select! {
        opened = Session::open(&client, ctx.store.as_ref(), &ctx.exec) => opened?,
        _ = signals.recv() => return Err(CliError::new(ExitCode::Interrupted, Interrupted::BeforeLock)),
    };
    let stop = AtomicBool::new(false);
    let mut interrupt = None;
    let outcome = {
        let work = migrate_locked(&ctx, &loaded, &client, &mut session, &args.target, direction, &stop);
        tokio::pin!(work);
        loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                signal = signals.recv() => {
                    interrupt = Some(signal);
                    on_signal(signal, &stop, &canceller).await;
                }
            }
        }
    };
    let closed = session.close().await;
    let (ran, started) = outcome?;
    if let Some(interrupt) = interrupt {
        if let Err(e) = closed {
            // The process exits next, and the connection's end releases the lock anyway.
            tracing::warn!(error = %e, "could not close the session after the interruption");
        }
        return Err(match interrupted(ran, started, interrupt, &loaded) {
            Ok(what) => CliError::new(ExitCode::Interrupted, what),
            Err(failure) => failure.into(),
        });
    }
    let report = ran?;
    closed?;
    match ctx.format {
        Format::Text if report.steps.is_empty() => println!("Nothing to do: already at {}", args.target),
        Format::Text => println!(
            "Done: {} step(s); now at {}",
            report.steps.len(),
            rows_text(&report.rows_after)
        ),
        Format::Json => print_json(&json!({
            "direction": word(direction),
            "steps": report.steps.iter().map(|s| json!({
                "revision": s.revision,
                "direction": s.direction,
                "duration_ms": s.elapsed.as_millis() as u64,
            })).collect::<Vec<_>>(),
            "current": report.rows_after,
        })),
    }
    Ok(ExitCode::Ok)
}

/// The first signal lets the revision in progress finish (it commits or rolls back whole), then stops; a
/// second cancels the statement in progress, as the fleet coordinator does for its tenants.
async fn on_signal(signal: Interrupt, stop: &AtomicBool, canceller: &Canceller) {
    match signal {
        Interrupt::Stop => {
            stop.store(true, Ordering::Relaxed);
            tracing::warn!("interrupted: stopping after the revision in progress (signal again to cancel it)");
        }
        Interrupt::Cancel => {
            stop.store(true, Ordering::Relaxed);
            tracing::warn!("interrupted again: cancelling the statement in progress");
            if let Err(e) = canceller.cancel().await {
                tracing::warn!(error = %crate::executor::db_message(&e), "could not cancel the statement in progress");
            }
        }
    }
}

/// How a signalled run ended, told from what the executor reports: the database state it names is what the
/// version table says committed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum Interrupted {
    #[error("interrupted while waiting for the migration lock; nothing was changed")]
    BeforeLock,
    #[error("interrupted before any revision ran; the database is at {}", rows_text(.rows))]
    BeforeFirst { rows: Vec<RevisionId> },
    #[error("interrupted: stopped after revision {last}; the database is at {}", rows_text(.rows))]
    Stopped { last: RevisionId, rows: Vec<RevisionId> },
    #[error(
        "interrupted: stopped revision {revision} between backfill batches (its committed batches and phases stay, \
         and the next run resumes it); the database is at {}",
        rows_text(.rows)
    )]
    StoppedInBackfill {
        revision: RevisionId,
        rows: Vec<RevisionId>,
    },
    #[error("cancelled revision {revision} (rolled back); the database is at {}", rows_text(.rows))]
    Cancelled {
        revision: RevisionId,
        rows: Vec<RevisionId>,
    },
    #[error(
        "cancelled revision {revision} part way (its committed backfill batches and phases stay, and the next run \
         resumes it); the database is at {}",
        rows_text(.rows)
    )]
    CancelledBackfill {
        revision: RevisionId,
        rows: Vec<RevisionId>,
    },
    #[error(
        "cancelled no-transaction revision {revision} part way (the statements before the cancelled one stay); the \
         database is at {} and is blocked: inspect it, then run `flotilla resolve` (or `flotilla stamp REV`)",
        rows_text(.rows)
    )]
    CancelledNoTransaction {
        revision: RevisionId,
        rows: Vec<RevisionId>,
    },
}

/// What an interrupted run did, or the run's own failure when that is not the interruption (a revision that
/// failed by itself after the first signal). `started` is the last revision the run started.
fn interrupted(
    ran: Result<Report, ExecFailure>,
    started: Option<RevisionId>,
    signal: Interrupt,
    loaded: &Loaded,
) -> Result<Interrupted, ExecFailure> {
    let stopped = |report: Report| {
        let last = report.steps.last().map(|s| s.revision.clone());
        let rows = report.rows_after;
        match (last, &started) {
            // Only a backfill stops inside a revision (between its batches); any other revision finishes first.
            (last, Some(started)) if last.as_ref() != Some(started) => Interrupted::StoppedInBackfill {
                revision: started.clone(),
                rows,
            },
            (Some(last), _) => Interrupted::Stopped { last, rows },
            (None, _) => Interrupted::BeforeFirst { rows },
        }
    };
    match ran {
        // The signal came during the last revision: it finished and nothing was left to stop.
        Ok(report) => Ok(stopped(report)),
        Err(ExecFailure {
            report,
            error: ExecError::Interrupted,
        }) => Ok(stopped(report)),
        Err(ExecFailure {
            report,
            error:
                ExecError::Step {
                    revision,
                    direction,
                    sqlstate,
                    ..
                },
        }) if signal == Interrupt::Cancel && sqlstate.as_deref() == Some(QUERY_CANCELED) => {
            let rows = report.rows_after;
            Ok(match loaded.scripts.get(&revision) {
                // The executor runs a section with a backfill phase by phase, whatever its transaction header.
                Some(script) if section(script, direction).has_backfill() => {
                    Interrupted::CancelledBackfill { revision, rows }
                }
                Some(script) if !script.is_transactional => Interrupted::CancelledNoTransaction { revision, rows },
                _ => Interrupted::Cancelled { revision, rows },
            })
        }
        Err(failure) => Err(failure),
    }
}

/// SQLSTATE `query_canceled`, what a cancel request makes the running statement fail with.
const QUERY_CANCELED: &str = "57014";

fn section(script: &crate::script::Script, direction: Direction) -> &crate::script::Section {
    match direction {
        Direction::Up => &script.upgrade,
        Direction::Down => &script.downgrade,
    }
}

/// Plans and runs under the lock: `Err` when nothing could run (the plan, a missing shared revision), else
/// what the executor did and the last revision it started.
async fn migrate_locked(
    ctx: &Ctx,
    loaded: &Loaded,
    client: &tokio_postgres::Client,
    session: &mut Session<'_>,
    target: &str,
    direction: Direction,
    stop: &AtomicBool,
) -> Result<(Result<Report, ExecFailure>, Option<RevisionId>), CliError> {
    let plan = plan_for(loaded, direction, session.rows(), target)?;
    if let Some(shared) = &loaded.shared {
        let applied = shared
            .read_applied(client)
            .await
            .map_err(|e| CliError::new(ExitCode::Failed, e))?;
        if let Some(missing) = shared.missing(&plan.steps, &applied) {
            return Err(CliError::new(
                ExitCode::Failed,
                anyhow::anyhow!(
                    "revision {} depends on shared revision {}, which this database does not have; nothing was \
                     changed (run `flotilla upgrade --shared` first)",
                    missing.revision,
                    missing.shared
                ),
            ));
        }
    }
    if direction == Direction::Up {
        let checksums = session.applied_checksums().await?;
        for (revision, _) in changed_scripts(loaded, checksums, session.rows()) {
            tracing::warn!(%revision, "revision was applied from a script that has changed since (see `flotilla validate`)");
        }
    }
    let text = ctx.format == Format::Text;
    let mut last_progress: Option<std::time::Instant> = None;
    let mut started = None;
    let mut on_event = |event: ExecEvent| match event {
        ExecEvent::StepStarted { revision, direction } => {
            if text {
                let message = loaded
                    .scripts
                    .get(&revision)
                    .map(|s| s.meta.message.as_str())
                    .unwrap_or_default();
                println!("Running {} {revision}, {message}", word(direction));
            }
            started = Some(revision);
        }
        // At most one line a second, so a long backfill stays readable.
        ExecEvent::BackfillProgress {
            revision,
            rows_done,
            rows_estimated,
        } if text && last_progress.is_none_or(|t| t.elapsed().as_secs() >= 1) => {
            last_progress = Some(std::time::Instant::now());
            let human = crate::observe::human::thousands;
            let of = rows_estimated
                .map(|n| format!(" of about {}", human(n)))
                .unwrap_or_default();
            println!("  backfill {revision}: {}{of} rows done", human(rows_done));
        }
        _ => {}
    };
    let ran = session.run(&plan, &loaded.scripts, &mut on_event, stop).await;
    Ok((ran, started))
}

fn rows_text(rows: &[RevisionId]) -> String {
    if rows.is_empty() {
        "base".into()
    } else {
        rows.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// `FROM:TO` (or just `TO` for an upgrade from base) rendered as SQL.
fn offline(ctx: &Ctx, loaded: &Loaded, target: &str, direction: Direction) -> Result<ExitCode, CliError> {
    let (from, to) = match target.split_once(':') {
        Some((from, to)) => (Some(from), to),
        None if direction == Direction::Up => (None, target),
        None => {
            return Err(CliError::usage(format!(
                "downgrade --sql needs a range FROM:TO (for example `head:{target}`): offline there is no database to read the current revision from"
            )))
        }
    };
    let rows = offline_start(loaded, from)?;
    let plan = plan_for(loaded, direction, &rows, to)?;
    let create_tables = direction == Direction::Up && rows.is_empty();
    let input = OfflineInput {
        plan: &plan,
        graph: &loaded.graph,
        scripts: &loaded.scripts,
        store: ctx.store.as_ref(),
        opts: &ctx.exec,
        create_tables,
    };
    print!("{}", ctx.renderer.render_plan(&input)?);
    Ok(ExitCode::Ok)
}

/// The version rows an offline script starts from: those of FROM in a `FROM:TO` range, none for base.
fn offline_start(loaded: &Loaded, from: Option<&str>) -> Result<Vec<RevisionId>, CliError> {
    Ok(match from {
        None | Some("") | Some("base") => Vec::new(),
        Some(from) => loaded.graph.resolve(from, &[])?,
    })
}

/// Revisions whose applied (up) checksum differs from the script's upgrade checksum today, with their paths.
fn changed_scripts(
    loaded: &Loaded,
    checksums: BTreeMap<RevisionId, String>,
    rows: &[RevisionId],
) -> Vec<(RevisionId, String)> {
    // Only what the version rows say is applied now: a revision stamped away may change freely.
    let applied = loaded.graph.applied(rows).unwrap_or_default();
    checksums
        .into_iter()
        .filter(|(revision, _)| applied.contains(revision))
        .filter_map(|(revision, checksum)| {
            let script = loaded.scripts.get(&revision)?;
            (script.upgrade.checksum != checksum).then(|| (revision, script.path.display().to_string()))
        })
        .collect()
}

pub async fn current(global: &GlobalArgs, args: CurrentArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let client = ctx.connect().await?;
    // Read without the migration lock: a running upgrade must not make `current` wait.
    let session = ReadSession::open(&client, ctx.store.as_ref(), &ctx.exec).await?;
    let rows = session.rows().to_vec();
    let blocked = session.blocked().cloned();
    let history = if args.verbose {
        session.history(10).await?
    } else {
        Vec::new()
    };
    session.close().await?;
    match ctx.format {
        Format::Json => print_json(&json!({
            "current": rows.iter().map(|r| json!({
                "revision": r,
                "message": loaded.scripts.get(r).map(|s| s.meta.message.clone()),
                "is_head": loaded.graph.heads().contains(r),
                "is_known": loaded.scripts.contains_key(r),
            })).collect::<Vec<_>>(),
            "blocked": blocked.as_ref().map(|b| json!({
                "revision": b.revision, "direction": b.direction, "status": b.status, "at": b.at, "error": b.error,
            })),
            "history": history,
        })),
        Format::Text => {
            if rows.is_empty() {
                println!("base (no revision applied)");
            }
            for row in &rows {
                match loaded.scripts.get(row) {
                    Some(script) if args.verbose => {
                        println!("Rev: {row}{}", tags(&loaded.graph, row, script));
                        println!("Path: {}", script.path.display());
                        println!("Message: {}\n", script.meta.message);
                    }
                    Some(script) => println!("{row}{}", tags(&loaded.graph, row, script)),
                    None => println!("{row} (unknown: no revision file has this id)"),
                }
            }
            if let Some(b) = &blocked {
                println!(
                    "BLOCKED: no-transaction revision {} ({}) {} at {}{}; inspect the database, then run `flotilla resolve`",
                    b.revision,
                    b.direction,
                    b.status,
                    b.at,
                    b.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                );
            }
            for h in &history {
                println!(
                    "{}  {:<7} {:<8} {}{}",
                    h.applied_at,
                    h.direction,
                    h.status,
                    h.revision,
                    h.duration_ms.map(|d| format!(" ({d} ms)")).unwrap_or_default()
                );
            }
        }
    }
    Ok(if blocked.is_some() {
        ExitCode::NeedsResolve
    } else {
        ExitCode::Ok
    })
}

pub async fn stamp(global: &GlobalArgs, args: StampArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let mut targets: Vec<&str> = Vec::new();
    let mut from: Option<&str> = None;
    for revision in &args.revisions {
        match revision.split_once(':') {
            None => targets.push(revision),
            Some(_) if !args.sql => {
                return Err(CliError::usage(format!(
                "`{revision}`: a FROM:TO range is only for `stamp --sql`; online the rows are read from the database"
            )))
            }
            // As Alembic: several ranges may repeat one starting revision, not name two.
            Some((start, _)) if from.is_some_and(|f| f != start) => {
                return Err(CliError::usage(
                    "stamp --sql takes one starting revision at a time (FROM:TO ranges with different FROMs)",
                ))
            }
            Some((start, to)) => {
                from = Some(start);
                if !targets.contains(&to) {
                    targets.push(to);
                }
            }
        }
    }
    if args.sql {
        if args.purge {
            return Err(CliError::usage(
                "--purge cannot be used with --sql (as in Alembic): offline, give the starting revision as FROM:TO",
            ));
        }
        // With no FROM, from base: the store's DDL, then every row replaced. With a FROM (even one with no
        // rows, such as `label@base`), only the rows that move: the other branches' rows stay.
        let start = offline_start(&loaded, from)?;
        let rows = loaded.graph.stamp(&start, &targets, start.is_empty())?;
        let known = from.map(|_| start.as_slice());
        print!("{}", ctx.renderer.render_stamp(ctx.store.as_ref(), known, &rows)?);
        return Ok(ExitCode::Ok);
    }
    let client = ctx.connect().await?;
    let mut session = Session::open(&client, ctx.store.as_ref(), &ctx.exec).await?;
    let outcome = match loaded.graph.stamp(session.rows(), &targets, args.purge) {
        Ok(rows) => session.stamp(&rows).await.map(|()| rows).map_err(CliError::from),
        Err(e) => Err(e.into()),
    };
    let closed = session.close().await;
    let rows = outcome?;
    closed?;
    match ctx.format {
        Format::Text => println!("Stamped: now at {}", rows_text(&rows)),
        Format::Json => print_json(&json!({ "current": rows })),
    }
    Ok(ExitCode::Ok)
}

/// Alembic's `ensure_version`: the store's tables, created if missing under the migration lock, and nothing else.
pub async fn ensure_version(global: &GlobalArgs, args: EnsureVersionArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    if args.sql {
        println!("{}", ctx.store.create_sql());
        return Ok(ExitCode::Ok);
    }
    let client = ctx.connect().await?;
    let mut session = Session::open(&client, ctx.store.as_ref(), &ctx.exec).await?;
    let outcome = session.ensure_tables().await;
    let rows = session.rows().to_vec();
    let closed = session.close().await;
    outcome?;
    closed?;
    match ctx.format {
        Format::Text => println!("The version tables exist; current: {}", rows_text(&rows)),
        Format::Json => print_json(&json!({ "current": rows })),
    }
    Ok(ExitCode::Ok)
}

pub async fn validate(global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let client = ctx.connect().await?;
    // Read without the migration lock, as `current`: checksums of committed revisions are all it needs.
    let session = ReadSession::open(&client, ctx.store.as_ref(), &ctx.exec).await?;
    let checksums = session.applied_checksums().await;
    let rows = session.rows().to_vec();
    session.close().await?;
    let changed = changed_scripts(&loaded, checksums?, &rows);
    match ctx.format {
        Format::Json => print_json(&json!({
            "changed": changed.iter().map(|(r, p)| json!({"revision": r, "path": p})).collect::<Vec<_>>(),
        })),
        Format::Text if changed.is_empty() => {
            println!("OK: every applied revision matches its script")
        }
        Format::Text => {
            for (revision, path) in &changed {
                println!("changed since applied: {revision} ({path})");
            }
        }
    }
    Ok(if changed.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

pub async fn resolve(global: &GlobalArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let client = ctx.connect().await?;
    let mut session = Session::open(&client, ctx.store.as_ref(), &ctx.exec).await?;
    let outcome = session.resolve().await;
    let rows = session.rows().to_vec();
    session.close().await?;
    match (outcome?, ctx.format) {
        (Some(b), Format::Text) => println!(
            "Resolved the failed no-transaction revision {} ({}); version rows unchanged: {}",
            b.revision,
            b.direction,
            rows_text(&rows)
        ),
        (None, Format::Text) => println!("Nothing to resolve"),
        (b, Format::Json) => print_json(&json!({
            "resolved": b.map(|b| json!({"revision": b.revision, "direction": b.direction})),
            "current": rows,
        })),
    }
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_messages_name_the_revision_the_database_is_at() {
        let check = |what: Interrupted, expected: &str| assert_eq!(what.to_string(), expected);
        let ids = |ids: &[&str]| ids.iter().map(|id| RevisionId::from(*id)).collect::<Vec<_>>();
        check(
            Interrupted::Stopped {
                last: "b".into(),
                rows: ids(&["b", "x"]),
            },
            "interrupted: stopped after revision b; the database is at b, x",
        );
        check(
            Interrupted::BeforeFirst { rows: ids(&[]) },
            "interrupted before any revision ran; the database is at base",
        );
        check(
            Interrupted::Cancelled {
                revision: "b".into(),
                rows: ids(&["a"]),
            },
            "cancelled revision b (rolled back); the database is at a",
        );
        let blocked = Interrupted::CancelledNoTransaction {
            revision: "b".into(),
            rows: ids(&["a"]),
        };
        assert!(blocked.to_string().contains("`flotilla resolve`"), "{blocked}");
    }
}
