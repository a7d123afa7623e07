//! Fleet commands: resolve the tenants file, discovery and selectors into a [`FleetRequest`], run it with the
//! sinks the flags ask for, and report. Also `fleet current`, `fleet status` and `fleet retry`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::args::{
    FleetCommand, FleetCurrentArgs, FleetDriftArgs, FleetStatusArgs, Format, GlobalArgs, RunArgs, SelectArgs,
};
use super::context::{Ctx, Loaded};
use super::error::CliError;
use super::output::print_json;
use crate::config::{self, TenantsFile};
use crate::error::ExitCode;
use crate::fleet::{self, Action, Engine, FleetRequest, LedgerSink, Selection, Server, Tenant, TenantLimits};
use crate::ledger::{self, Ledger, NewRun, NewTenant, RunSelector, SqliteLedger};
use crate::observe::{LogRoute, Sink};

pub async fn dispatch(global: &GlobalArgs, command: FleetCommand, route: LogRoute) -> Result<ExitCode, CliError> {
    if global.shared {
        return Err(CliError::usage(
            "--shared is for single-database commands; a fleet upgrade applies the shared revisions to each \
             database before its tenants",
        ));
    }
    match command {
        FleetCommand::Upgrade(a) => migrate(global, Action::Upgrade(a.target), a.select, a.run, route).await,
        FleetCommand::Downgrade(a) => migrate(global, Action::Downgrade(a.target), a.select, a.run, route).await,
        FleetCommand::Stamp(a) => migrate(global, Action::Stamp(a.revisions), a.select, a.run, route).await,
        FleetCommand::Current(a) => current(global, a).await,
        FleetCommand::Status(a) => status(global, a),
        FleetCommand::Retry(a) => retry(global, a.select, a.run, route).await,
        FleetCommand::Drift(a) => drift(global, a).await,
    }
}

/// The tenants file, its servers (connection caps and pools), and every tenant (listed and discovered).
struct FleetSetup {
    file: TenantsFile,
    servers: Vec<Arc<Server>>,
    tenants: Vec<Tenant>,
}

fn usage<E: std::fmt::Display>(e: E) -> CliError {
    CliError::usage(e)
}

fn tenants_path(ctx: &Ctx, select: &SelectArgs) -> PathBuf {
    select.tenants.clone().unwrap_or_else(|| ctx.tenants_file.clone())
}

fn ledger_path(ctx: &Ctx, explicit: Option<&PathBuf>) -> PathBuf {
    explicit.cloned().unwrap_or_else(|| ctx.ledger_file.clone())
}

async fn setup(ctx: &Ctx, path: &Path) -> Result<FleetSetup, CliError> {
    let file = TenantsFile::load(path, &config::process_env)?;
    let mut servers = Vec::with_capacity(file.servers.len());
    let mut index_of = BTreeMap::new();
    for (i, spec) in file.servers.iter().enumerate() {
        let (pg, origin) = spec.pg_config_and_origin(None, &config::process_env)?;
        let tls = spec.tls()?;
        let mut server = Server::new(spec.name.clone(), pg, tls, spec.max_connections).map_err(usage)?;
        server.lock_timeout = spec.lock_timeout;
        server.statement_timeout = spec.statement_timeout;
        server.password_origin = Some(origin);
        servers.push(Arc::new(server));
        index_of.insert(spec.name.clone(), i);
    }
    let _ = ctx;
    let listed: Vec<Tenant> = file
        .tenants
        .iter()
        .map(|spec| Tenant {
            id: spec.id.as_str().to_string(),
            server: index_of[&spec.server],
            place: spec.target.clone(),
            tags: Arc::new(spec.tags.clone()),
        })
        .collect();
    let mut found = Vec::with_capacity(file.sources.len());
    for (i, source) in file.sources.iter().enumerate() {
        let index = index_of[&source.server];
        let tenants = fleet::discover(&servers[index], index, &source.kind, &source.tags)
            .await
            .map_err(|e| CliError::new(ExitCode::Failed, e))?;
        found.push((i, tenants));
    }
    let describe = |origin: fleet::Origin| match origin {
        fleet::Origin::Listed(i) => format!("the [[tenants]] entry at {}", file.tenants[i].at),
        fleet::Origin::Source(i) => fleet::source_origin(&file.sources[i]),
    };
    // A bad set of tenants is a configuration error, as it is when the tenants file lists it.
    let tenants = fleet::merge(listed, found, &describe, &|i| file.servers[i].name.clone())
        .map_err(|e| CliError::new(ExitCode::Usage, e))?;
    Ok(FleetSetup { file, servers, tenants })
}

fn open_ledger(path: &Path) -> Result<SqliteLedger, CliError> {
    SqliteLedger::open(path).map_err(|e| CliError::new(ExitCode::Usage, e))
}

/// The failed and interrupted tenants of the ledger's latest run.
fn last_failed(path: &Path) -> Result<BTreeSet<String>, CliError> {
    let ledger = open_ledger(path)?;
    let run = ledger
        .run(&RunSelector::Latest)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?
        .ok_or_else(|| CliError::usage(format!("--only-failed: the ledger {} has no run yet", path.display())))?;
    Ok(ledger
        .retry_set(&run.id)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?
        .into_iter()
        .collect())
}

fn selection(ctx: &Ctx, select: &SelectArgs) -> Result<Selection, CliError> {
    let tags = select
        .tag
        .iter()
        .map(|t| fleet::parse_tag(t).map_err(|e| CliError::usage(format!("--tag {e}"))))
        .collect::<Result<_, _>>()?;
    let only = if select.only_failed {
        Some(last_failed(&ledger_path(ctx, select.ledger.as_ref()))?)
    } else {
        None
    };
    Ok(Selection {
        ids: select.tenant.iter().cloned().collect(),
        tags,
        exclude: select.exclude.iter().cloned().collect(),
        only,
    })
}

/// The tenants `selection` chooses, taken out of `all` (a fleet of 10,000 tenants is not copied).
fn select_tenants(all: &mut Vec<Tenant>, selection: &Selection) -> Result<Vec<Tenant>, CliError> {
    let unknown = selection.unknown_ids(all);
    if !unknown.is_empty() {
        return Err(usage(fleet::FleetError::UnknownTenants(
            unknown.iter().map(|s| s.to_string()).collect(),
        )));
    }
    let mut chosen: Vec<Tenant> = std::mem::take(all)
        .into_iter()
        .filter(|t| selection.matches(t))
        .collect();
    // The filter reuses the whole list's buffer, which grew by doubling; the run keeps this list to its end.
    chosen.shrink_to_fit();
    if chosen.is_empty() && selection.only.as_ref().is_none_or(|o| !o.is_empty()) {
        return Err(usage(fleet::FleetError::NothingSelected));
    }
    Ok(chosen)
}

fn parse_rate(text: &str) -> Result<f64, CliError> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(CliError::usage(format!(
            "--max-failure-rate `{text}`: expected a percentage such as 5%"
        ))),
    }
}

/// Check a target against the graph before touching any tenant, when it does not depend on each tenant's state.
fn check_target(loaded: &Loaded, action: &Action) -> Result<(), CliError> {
    let specs: Vec<&str> = match action {
        Action::Upgrade(t) | Action::Downgrade(t) => vec![t.as_str()],
        Action::Stamp(ts) => ts.iter().map(String::as_str).collect(),
    };
    for spec in specs {
        let is_relative = spec.contains('+') || spec.contains('-');
        if !is_relative && spec != "base" {
            loaded.graph.resolve(spec, &[])?;
        }
    }
    Ok(())
}

fn engine(ctx: &Ctx, loaded: Loaded) -> Arc<Engine> {
    Arc::new(Engine {
        graph: loaded.graph,
        scripts: loaded.scripts,
        store: ctx.store.clone(),
        exec: ctx.exec.clone(),
        shared: loaded.shared.clone(),
    })
}

async fn migrate(
    global: &GlobalArgs,
    action: Action,
    select: SelectArgs,
    run: RunArgs,
    route: LogRoute,
) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    check_target(&loaded, &action)?;
    let selection = selection(&ctx, &select)?;
    let max_failure_rate = run.max_failure_rate.as_deref().map(parse_rate).transpose()?;
    let canary_tag = run
        .canary_tag
        .as_deref()
        .map(|t| fleet::parse_tag(t).map_err(|e| CliError::usage(format!("--canary-tag {e}"))))
        .transpose()?;
    let tenants_file = tenants_path(&ctx, &select);
    let mut setup = setup(&ctx, &tenants_file).await?;
    let mut chosen = select_tenants(&mut setup.tenants, &selection)?;
    if chosen.is_empty() {
        println!("Nothing to do: no failed or interrupted tenant in the last run");
        return Ok(ExitCode::Ok);
    }
    // Canaries go first, in a group of their own.
    let n_canaries = match (&canary_tag, run.canary) {
        (Some((k, v)), _) => {
            chosen.sort_by_key(|t| t.tags.get(k) != Some(v));
            chosen.iter().filter(|t| t.tags.get(k) == Some(v)).count()
        }
        (None, Some(n)) => n.min(chosen.len()),
        (None, None) => 0,
    };
    let defaults = &setup.file.defaults;
    let concurrency = run.concurrency.unwrap_or(defaults.concurrency).max(1);
    let rate = run.rate.unwrap_or(defaults.rate);
    let retries = run.retries.unwrap_or(defaults.retries);
    let mut ctx = ctx;
    if let Some(t) = defaults.lock_timeout {
        ctx.exec.lock_timeout = Some(t);
    }
    if let Some(t) = defaults.statement_timeout {
        ctx.exec.statement_timeout = Some(t);
    }
    ctx.exec.backfill_rate = run.backfill.backfill_rate.filter(|r| *r > 0.0);
    ctx.exec.backfill_fleet = run
        .backfill_fleet_rate
        .and_then(crate::backfill::RowThrottle::new)
        .map(std::sync::Arc::new);
    ctx.exec.is_irreversible_allowed = run.backfill.force;
    let options = json!({
        "tenants_file": tenants_file.display().to_string(),
        "concurrency": concurrency,
        "rate": rate,
        "retries": retries,
        "canary": run.canary,
        "canary_tag": run.canary_tag,
        "max_failures": run.max_failures,
        "max_failure_rate": run.max_failure_rate,
        "tags": select.tag,
        "stamp_revisions": match &action { Action::Stamp(r) => json!(r), _ => json!(null) },
    });
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let run_id = if run.dry_run {
        "dry-run".to_string()
    } else {
        let path = ledger_path(&ctx, select.ledger.as_ref());
        let mut ledger = open_ledger(&path)?;
        let new_tenants: Vec<NewTenant> = chosen
            .iter()
            .map(|t| NewTenant {
                tenant_id: &t.id,
                server: &setup.servers[t.server].name,
                kind: fleet::place_kind(&t.place),
            })
            .collect();
        let new_run = NewRun {
            command: action.command().to_string(),
            target: action.target(),
            options,
            user: std::env::var("USER").unwrap_or_default(),
            host: hostname(),
        };
        let id = ledger
            .begin_run(&new_run, &new_tenants)
            .map_err(|e| CliError::new(ExitCode::Failed, e))?;
        let sink = LedgerSink::new(Box::new(ledger), id.clone());
        sinks.push(Box::new(sink));
        id.to_string()
    };
    let retry_command = match &select.ledger {
        Some(path) => format!("flotilla fleet retry --ledger {}", path.display()),
        None => "flotilla fleet retry".to_string(),
    };
    sinks.extend(super::watch::sinks(&ctx, &run, route, retry_command).await?);
    let request = FleetRequest {
        run_id: run_id.clone(),
        action,
        tenants: chosen,
        n_canaries,
        concurrency,
        rate: (rate > 0.0).then_some(rate),
        limits: tenant_limits(retries, defaults, &ctx.project),
        max_failures: run.max_failures,
        max_failure_rate,
        lock_requeue_for: ctx.exec.lock_wait,
        is_dry_run: run.dry_run,
    };
    // Only a dry run prints per-tenant plans after the run, so only it keeps a copy of the tenant list.
    let tenants = if run.dry_run {
        request.tenants.clone()
    } else {
        Vec::new()
    };
    let engine = engine(&ctx, loaded);
    let outcome = fleet::run(request, engine.clone(), setup.servers.clone(), sinks).await;
    if run.dry_run {
        print_dry_run(&ctx, &tenants, &outcome, &engine);
    }
    Ok(outcome.exit_code)
}

/// The tenants file's `[defaults]` over `flotilla.toml` over the built-in defaults.
fn tenant_limits(retries: u32, defaults: &config::FleetDefaults, project: &config::ProjectConfig) -> TenantLimits {
    let backoff = defaults.backoff.over(project.backoff);
    let backoff_base = backoff.backoff_base.unwrap_or(TenantLimits::DEFAULT_BACKOFF_BASE);
    TenantLimits {
        retries,
        tenant_timeout: defaults.tenant_timeout,
        backoff_base,
        // A cap below the first delay would make every delay the cap; the first delay wins.
        backoff_max: backoff
            .backoff_max
            .unwrap_or(TenantLimits::DEFAULT_BACKOFF_MAX)
            .max(backoff_base),
        backoff_jitter: backoff.backoff_jitter.unwrap_or(TenantLimits::DEFAULT_BACKOFF_JITTER),
        outage_budget: backoff.outage_budget.unwrap_or(TenantLimits::DEFAULT_OUTAGE_BUDGET),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn print_dry_run(ctx: &Ctx, tenants: &[Tenant], outcome: &fleet::FleetOutcome, engine: &Engine) {
    let mut planned = outcome.planned.clone();
    planned.sort_by_key(|(i, _, _)| *i);
    // A dry run's tenants end as skipped (those with a plan, and those already at the target), or failed (no
    // connection, no plan) or interrupted (a halt or a signal came first).
    let n_at_target = outcome.n_skipped.saturating_sub(planned.len());
    let (n_failed, n_interrupted) = (outcome.n_failed, outcome.n_interrupted);
    match ctx.format {
        Format::Json => print_json(&json!({
            "dry_run": true,
            "n_would_change": planned.len(),
            "n_at_target": n_at_target,
            "n_failed": n_failed,
            "n_interrupted": n_interrupted,
            "tenants": planned.iter().map(|(i, from, steps)| json!({
                "id": tenants[*i].id,
                "from": from,
                "steps": steps.iter().map(|s| json!({"revision": s.revision, "direction": s.direction})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            for (i, from, steps) in &planned {
                let from = if from.is_empty() {
                    "base".to_string()
                } else {
                    from.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
                };
                println!("{} (at {from}): {} step(s)", tenants[*i].id, steps.len());
                for step in steps {
                    let message = engine
                        .scripts
                        .get(&step.revision)
                        .map(|s| s.meta.message.as_str())
                        .unwrap_or_default();
                    println!("    {:?} {}, {message}", step.direction, step.revision);
                }
            }
            let mut counts = format!(
                "{} tenant(s) would change, {n_at_target} already at the target",
                planned.len()
            );
            if n_failed + n_interrupted > 0 {
                counts.push_str(&format!(
                    ", {n_failed} failed, {n_interrupted} not planned (interrupted)"
                ));
            }
            println!("Dry run: {counts}; nothing was changed");
        }
    }
}

async fn retry(
    global: &GlobalArgs,
    mut select: SelectArgs,
    mut run: RunArgs,
    route: LogRoute,
) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let path = ledger_path(&ctx, select.ledger.as_ref());
    let ledger = open_ledger(&path)?;
    let last = ledger
        .run(&RunSelector::Latest)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?
        .ok_or_else(|| CliError::usage(format!("nothing to retry: the ledger {} has no run", path.display())))?;
    drop(ledger);
    let opts = &last.options;
    let action = match last.command.as_str() {
        "upgrade" => Action::Upgrade(last.target.clone()),
        "downgrade" => Action::Downgrade(last.target.clone()),
        "stamp" => Action::Stamp(
            opts["stamp_revisions"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                .unwrap_or_default(),
        ),
        other => {
            return Err(CliError::usage(format!(
                "the last run's command `{other}` cannot be retried"
            )))
        }
    };
    select.only_failed = true;
    if select.tenants.is_none() {
        select.tenants = opts["tenants_file"].as_str().map(PathBuf::from);
    }
    if select.tag.is_empty() {
        select.tag = opts["tags"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default();
    }
    run.concurrency = run.concurrency.or(opts["concurrency"].as_u64().map(|v| v as usize));
    run.rate = run.rate.or(opts["rate"].as_f64());
    run.retries = run.retries.or(opts["retries"].as_u64().map(|v| v as u32));
    run.max_failures = run.max_failures.or(opts["max_failures"].as_u64().map(|v| v as usize));
    if run.max_failure_rate.is_none() {
        run.max_failure_rate = opts["max_failure_rate"].as_str().map(String::from);
    }
    if ctx.format == Format::Text {
        println!(
            "Retrying the failed and interrupted tenants of run {} ({} {})",
            last.id, last.command, last.target
        );
    }
    migrate(global, action, select, run, route).await
}

async fn current(global: &GlobalArgs, args: FleetCurrentArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let selection = selection(&ctx, &args.select)?;
    let mut setup = setup(&ctx, &tenants_path(&ctx, &args.select)).await?;
    let chosen = select_tenants(&mut setup.tenants, &selection)?;
    let concurrency = args.concurrency.unwrap_or(setup.file.defaults.concurrency);
    let versions = fleet::read_versions(&chosen, &setup.servers, ctx.store.as_ref(), concurrency).await;
    let mut heads = loaded.graph.heads();
    heads.sort();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    let (mut behind, mut ahead, mut unreachable, mut current) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut missing = Vec::new();
    for (tenant, result) in chosen.iter().zip(&versions) {
        match result {
            fleet::Versions::Unreachable(e) => unreachable.push(json!({"id": tenant.id, "error": e})),
            fleet::Versions::Missing(e) => missing.push(json!({"id": tenant.id, "error": e})),
            fleet::Versions::At(rows) => {
                let key = if rows.is_empty() {
                    "base".to_string()
                } else {
                    rows.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
                };
                *at.entry(key.clone()).or_default() += 1;
                let entry = json!({"id": tenant.id, "revisions": rows});
                if rows.iter().any(|r| !loaded.scripts.contains_key(r)) {
                    ahead.push(entry.clone());
                } else if *rows != heads {
                    behind.push(entry.clone());
                }
                current.push(entry);
            }
        }
    }
    match ctx.format {
        Format::Json => print_json(&json!({
            "heads": heads,
            "n_tenants": chosen.len(),
            "at": at,
            "behind": behind,
            "ahead": ahead,
            "unreachable": unreachable,
            "missing": missing,
            "tenants": if args.verbose { json!(current) } else { json!(null) },
        })),
        Format::Text => {
            println!(
                "{} tenant(s); graph heads: {}",
                chosen.len(),
                heads.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", ")
            );
            for (revision, n) in &at {
                let marker = if *revision == heads.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(",") {
                    " (head)"
                } else {
                    ""
                };
                println!("  {n:>6}  at {revision}{marker}");
            }
            let show = |title: &str, list: &[serde_json::Value]| {
                if !list.is_empty() {
                    println!("{title}: {}", list.len());
                    for item in list.iter().take(if args.verbose { usize::MAX } else { 20 }) {
                        println!("    {}", item["id"].as_str().unwrap_or_default());
                    }
                }
            };
            show("behind", &behind);
            show("ahead (revisions this migration set does not know)", &ahead);
            for (title, list) in [("missing", &missing), ("unreachable", &unreachable)] {
                if list.is_empty() {
                    continue;
                }
                println!("{title}: {}", list.len());
                for item in list {
                    println!(
                        "    {}: {}",
                        item["id"].as_str().unwrap_or_default(),
                        item["error"].as_str().unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(if unreachable.is_empty() && missing.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

/// `fleet drift`: each selected tenant's schema against the schema at its own revisions (see `cli::autogen`).
async fn drift(global: &GlobalArgs, args: FleetDriftArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let dev = super::autogen::dev_server(&ctx, global, args.dev_url.as_deref())?;
    let selection = selection(&ctx, &args.select)?;
    let mut setup = setup(&ctx, &tenants_path(&ctx, &args.select)).await?;
    let chosen = select_tenants(&mut setup.tenants, &selection)?;
    let concurrency = args.concurrency.unwrap_or(setup.file.defaults.concurrency);
    let engine = Engine {
        graph: loaded.graph,
        scripts: loaded.scripts,
        store: ctx.store.clone(),
        exec: ctx.exec.clone(),
        shared: loaded.shared.clone(),
    };
    super::autogen::drift(&ctx, dev, engine, &setup.servers, &chosen, concurrency).await
}

fn status(global: &GlobalArgs, args: FleetStatusArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let path = ledger_path(&ctx, args.ledger.as_ref());
    let ledger = open_ledger(&path)?;
    let selector = if args.run == "latest" {
        RunSelector::Latest
    } else {
        RunSelector::Id(args.run.clone())
    };
    let run = ledger
        .run(&selector)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?
        .ok_or_else(|| CliError::usage(format!("no run {} in the ledger {}", args.run, path.display())))?;
    let state = run.state(&hostname());
    let mut tenants = ledger
        .tenants(&run.id, None)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?;
    if args.failed {
        tenants.retain(|t| {
            matches!(
                t.effective_status(state),
                ledger::TenantStatus::Failed | ledger::TenantStatus::Interrupted
            )
        });
    }
    match ctx.format {
        Format::Json => print_json(&ledger::status_json(&run, &tenants, state)),
        Format::Text => {
            println!(
                "Run {}: {} {} started {} {}",
                run.id,
                run.command,
                run.target,
                run.started_at,
                run.finished_at
                    .as_deref()
                    .map(|f| format!("finished {f}"))
                    .unwrap_or_else(|| format!("({state:?})").to_lowercase())
            );
            println!(
                "{:<24} {:<12} {:<14} {:<14} {:>8} {:>9}  error",
                "tenant", "status", "from", "to", "attempts", "ms"
            );
            for t in &tenants {
                println!(
                    "{:<24} {:<12} {:<14} {:<14} {:>8} {:>9}  {}",
                    t.tenant_id,
                    t.effective_status(state).as_str(),
                    t.from_revision.as_deref().unwrap_or("-"),
                    t.to_revision.as_deref().unwrap_or("-"),
                    t.attempts,
                    t.duration_ms.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                    match (&t.sqlstate, &t.error) {
                        (Some(code), Some(e)) => format!("[{code}] {e}"),
                        (None, Some(e)) => e.clone(),
                        _ => String::new(),
                    }
                );
            }
        }
    }
    Ok(ExitCode::Ok)
}
