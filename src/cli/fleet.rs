//! Fleet commands: resolve the tenants file, discovery and selectors into a [`FleetRequest`], run it with the
//! sinks the flags ask for, and report. Also `fleet current`, `fleet status` and `fleet retry`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::args::{
    FleetCommand, FleetCurrentArgs, FleetDriftArgs, FleetPlanArgs, FleetRollbackArgs, FleetStatusArgs, Format,
    GlobalArgs, RunArgs, SelectArgs,
};
use super::context::{Ctx, Loaded};
use super::error::CliError;
use super::output::print_json;
use super::run_options::{self, RunOptions, RUN_OPTIONS_VERSION};
use crate::config::{self, TenantsFile};
use crate::error::ExitCode;
use crate::fleet::{self, Action, Engine, FleetRequest, LedgerWriter, Selection, Server, Tenant, TenantLimits};
use crate::ledger::{self, Ledger, NewRun, NewTenant, OpenRun, Placement, RunSelector, RunnerInfo};
use crate::observe::LogRoute;
use crate::revision::RevisionId;

pub async fn dispatch(global: &GlobalArgs, command: FleetCommand, route: LogRoute) -> Result<ExitCode, CliError> {
    if global.shared {
        return Err(CliError::usage(
            "--shared is for single-database commands; a fleet upgrade applies the shared revisions to each \
             database before its tenants",
        ));
    }
    // clap cannot hide a global flag on some subcommands only, so a --url that would be ignored is refused.
    if global.url.is_some() && !matches!(command, FleetCommand::Drift(_)) {
        return Err(CliError::usage(
            "--url names the database of single-database commands; fleet commands connect to each tenant's url \
             from the tenants file (--tenants)",
        ));
    }
    match command {
        FleetCommand::Upgrade(a) => migrate(global, Action::Upgrade(a.target), a.select, a.run, route, None).await,
        FleetCommand::Downgrade(a) => migrate(global, Action::Downgrade(a.target), a.select, a.run, route, None).await,
        FleetCommand::Stamp(a) => {
            let action = super::import::fleet_action(a.revisions, &a.from);
            migrate(global, action, a.select, a.run, route, None).await
        }
        FleetCommand::Current(a) => current(global, a).await,
        FleetCommand::Plan(a) => plan(global, a).await,
        FleetCommand::Status(a) => status(global, a),
        FleetCommand::Retry(a) => retry(global, a.run_id, a.select, a.run, route).await,
        FleetCommand::Drift(a) => drift(global, a).await,
        FleetCommand::Rollback(a) => rollback(global, a, route).await,
    }
}

/// The tenants file's defaults, its servers (connection caps and pools), and every tenant (listed and
/// discovered). The rest of the file is dropped once the tenants are built: its entries moved into them.
struct FleetSetup {
    defaults: config::FleetDefaults,
    servers: Vec<Arc<Server>>,
    tenants: Vec<Tenant>,
}

fn usage<E: std::fmt::Display>(e: E) -> CliError {
    CliError::usage(e)
}

fn tenants_path(ctx: &Ctx, select: &SelectArgs) -> PathBuf {
    select.tenants.clone().unwrap_or_else(|| ctx.tenants_file.clone())
}

/// The ledger: `--ledger` (a file or a `postgres://` url), else flotilla.toml's `ledger_url`, else its `ledger`
/// file, with the password settings applied.
fn ledger_path(ctx: &Ctx, explicit: Option<&PathBuf>) -> Result<config::LedgerLocation, CliError> {
    config::resolve_ledger(explicit.map(PathBuf::as_path), &ctx.project, &config::process_env)
        .map_err(|e| CliError::new(ExitCode::Usage, e))
}

async fn setup(ctx: &Ctx, path: &Path) -> Result<FleetSetup, CliError> {
    let TenantsFile {
        defaults,
        servers: server_specs,
        tenants: specs,
        sources,
        ..
    } = TenantsFile::load(path, &config::process_env)?;
    let mut servers = Vec::with_capacity(server_specs.len());
    let mut index_of = BTreeMap::new();
    for (i, spec) in server_specs.iter().enumerate() {
        let (pg, origin) = spec.pg_config_and_origin(None, &config::process_env)?;
        let tls = spec.tls()?;
        let mut server = Server::new(spec.name.clone(), pg, tls, spec.max_connections).map_err(usage)?;
        server.lock_timeout = spec.lock_timeout;
        server.statement_timeout = spec.statement_timeout;
        server.health = fleet::health::ServerHealth::new(spec.health.clone());
        server.password_origin = Some(origin);
        servers.push(Arc::new(server));
        index_of.insert(spec.name.clone(), i);
    }
    let _ = ctx;
    // Each entry moves into its tenant (its strings and its shared tags map), keeping only where it is for
    // messages, so 100,000 listed tenants are held once rather than as entries and tenants (load-tests/FINDINGS.md).
    let mut listed_at = Vec::with_capacity(specs.len());
    let mut listed: Vec<Tenant> = specs
        .into_iter()
        .map(|spec| {
            listed_at.push(spec.at);
            Tenant {
                id: spec.id.0,
                server: spec.server,
                place: spec.target,
                tags: spec.tags,
            }
        })
        .collect();
    listed.shrink_to_fit();
    let mut found = Vec::with_capacity(sources.len());
    for (i, source) in sources.iter().enumerate() {
        let index = index_of[&source.server];
        let tenants = fleet::discover(&servers[index], index, &source.kind, &source.tags)
            .await
            .map_err(|e| CliError::new(ExitCode::Failed, e))?;
        found.push((i, tenants));
    }
    let describe = |origin: fleet::Origin| match origin {
        fleet::Origin::Listed(i) => format!("the [[tenants]] entry at {}", listed_at[i]),
        fleet::Origin::Source(i) => fleet::source_origin(&sources[i]),
    };
    // A bad set of tenants is a configuration error, as it is when the tenants file lists it.
    let tenants = fleet::merge(listed, found, &describe, &|i| server_specs[i].name.clone())
        .map_err(|e| CliError::new(ExitCode::Usage, e))?;
    Ok(FleetSetup {
        defaults,
        servers,
        tenants,
    })
}

fn open_ledger(location: &config::LedgerLocation) -> Result<Box<dyn Ledger>, CliError> {
    ledger::open(location).map_err(|e| CliError::new(ExitCode::Usage, e))
}

/// The failed and interrupted tenants of the ledger's latest run.
fn last_failed(path: &config::LedgerLocation) -> Result<BTreeSet<String>, CliError> {
    let ledger = open_ledger(path)?;
    let run = ledger
        .run(&RunSelector::Latest)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?
        .ok_or_else(|| CliError::usage(format!("--only-failed: the ledger {path} has no run yet")))?;
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
        Some(last_failed(&ledger_path(ctx, select.ledger.as_ref())?)?)
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
    let (unknown, unknown_excluded) = selection.unknown_ids(all);
    for (flag, ids) in [("--tenant", unknown), ("--exclude", unknown_excluded)] {
        if !ids.is_empty() {
            return Err(usage(fleet::FleetError::UnknownTenants {
                flag,
                ids: ids.iter().map(|s| s.to_string()).collect(),
            }));
        }
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
        Action::StampFrom(_) => Vec::new(),
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

/// What a retry carries over from the run it repeats.
struct RetryOf {
    /// The tenants to run again.
    only: BTreeSet<String>,
    /// Each tenant's absolute target, resolved when that run first planned it.
    pinned: BTreeMap<String, Vec<RevisionId>>,
    /// How the run is recorded when not as its action's own command (a rollback, and its retries).
    recorded: Option<Recorded>,
    /// The waves the retry continues (a run in waves retried without new `--waves`).
    resume: Option<ResumeWaves>,
}

/// A run's waves and where its retried tenants stood in them, for [`fleet::waves::resume`].
#[derive(Debug, Clone)]
struct ResumeWaves {
    original: fleet::waves::Waves,
    /// Each retried tenant's position in the run's dispatch order.
    positions: BTreeMap<String, usize>,
    /// The wave the run stopped in (0-based): the last one any of its tenants started in.
    stage: usize,
}

impl ResumeWaves {
    /// The stored waves of `run` with its tenant rows, when the run was in waves.
    fn of(options: &RunOptions, records: &[ledger::TenantRecord], only: &BTreeSet<String>) -> Option<ResumeWaves> {
        let original = options.wave_plan.clone().filter(|w| !w.is_empty())?;
        // A tenant some runner took; not one recorded skipped as the run opened (known at its target, in any
        // wave, reached or not), nor one never claimed.
        let last_started = records
            .iter()
            .filter(|t| t.status != ledger::TenantStatus::Pending && t.runner.is_some())
            .map(|t| t.position)
            .max();
        let stage = last_started.map_or(0, |p| original.wave_of(p)).min(original.len() - 1);
        let positions = records
            .iter()
            .filter(|t| only.contains(&t.tenant_id))
            .map(|t| (t.tenant_id.clone(), t.position))
            .collect();
        Some(ResumeWaves {
            original,
            positions,
            stage,
        })
    }
}

/// The command and target a run is recorded under instead of its action's: `fleet rollback` records a downgrade
/// as `rollback` of the run it undoes, so `fleet status` says so and `fleet retry` knows it.
#[derive(Debug, Clone)]
struct Recorded {
    command: &'static str,
    target: String,
}

/// The failed, interrupted and unstarted tenants of `run`, with the targets their plans were made for.
fn retry_of(ledger: &dyn Ledger, last: &ledger::RunRecord) -> Result<RetryOf, CliError> {
    let run = &last.id;
    let only: BTreeSet<String> = ledger
        .retry_set(run)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?
        .into_iter()
        .collect();
    let records = ledger
        .tenants(run, None)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?;
    let pinned = records
        .iter()
        .filter(|t| only.contains(&t.tenant_id))
        .filter_map(|t| {
            let rows = ledger::rows_of(t.target_revision.as_deref()?)
                .into_iter()
                .map(RevisionId::from)
                .collect();
            Some((t.tenant_id.clone(), rows))
        })
        .collect();
    let resume = RunOptions::from_stored(&last.options).and_then(|options| ResumeWaves::of(&options, &records, &only));
    Ok(RetryOf {
        only,
        pinned,
        recorded: None,
        resume,
    })
}

/// The waves `--waves` or `--waves-by` ask for, with `chosen` reordered into them (`None` without those flags);
/// a retry that inherited them continues the retried run's waves where it stopped (`resume`).
fn wave_run(
    run: &RunArgs,
    chosen: &mut [Tenant],
    max_failure_rate: Option<f64>,
    n_canaries: usize,
    resume: Option<&ResumeWaves>,
) -> Result<Option<fleet::WaveRun>, CliError> {
    let spec = match (&run.waves, &run.waves_by) {
        (Some(text), _) => fleet::waves::parse_sizes(text).map_err(|e| CliError::usage(format!("--waves {e}")))?,
        (None, Some(text)) => fleet::waves::parse_by(text).map_err(|e| CliError::usage(format!("--waves-by {e}")))?,
        (None, None) => {
            if run.wave_pause.is_some() || run.wave_gate.is_some() {
                return Err(CliError::usage(
                    "--wave-pause and --wave-gate need --waves or --waves-by",
                ));
            }
            return Ok(None);
        }
    };
    if n_canaries > 0 {
        return Err(CliError::usage(
            "--waves and --waves-by replace --canary and --canary-tag: make the first wave the canaries",
        ));
    }
    if run.run_name.is_some() {
        return Err(CliError::usage(
            "--waves with --run-name is not supported yet: a wave gate would need every runner of the shared run \
             to see the wave end; run the waves with one runner",
        ));
    }
    let waves = match resume {
        Some(r) => fleet::waves::resume(
            &r.original,
            r.stage,
            |t| r.positions.get(&t.id).map(|p| r.original.wave_of(*p)),
            chosen,
        ),
        None => fleet::waves::plan(&spec, chosen),
    };
    Ok(Some(fleet::WaveRun {
        waves,
        max_failure_rate: max_failure_rate.unwrap_or(0.0),
        pause: run.wave_pause.unwrap_or_default(),
        has_gate: run.wave_gate.is_some(),
    }))
}

/// The schema tenants of an upgrade or downgrade run already at their target, read in bulk before the run so
/// the run skips them without a session each (`fleet plan`'s read). Not for a dry run (it shows each plan), a
/// stamp, or a project with shared revisions (a tenant at its target may still need its database's shared ones).
#[allow(clippy::too_many_arguments)]
async fn tenants_at_target(
    ctx: &Ctx,
    loaded: &Loaded,
    action: &Action,
    chosen: &[Tenant],
    servers: &[Arc<Server>],
    pinned: &BTreeMap<usize, Vec<RevisionId>>,
    concurrency: usize,
    is_dry_run: bool,
) -> HashMap<usize, Arc<[RevisionId]>> {
    let is_migration = matches!(action, Action::Upgrade(_) | Action::Downgrade(_));
    if is_dry_run || !is_migration || loaded.shared.is_some() {
        return Default::default();
    }
    let is_done = |rows: &[RevisionId], pin: Option<&Vec<RevisionId>>| {
        fleet::migration_plan(&loaded.graph, action, rows, pin.map(Vec::as_slice))
            .is_some_and(|plan| plan.is_ok_and(|plan| plan.steps.is_empty()))
    };
    // Tenants share a handful of distinct version rows: plan each once (looked up by the borrowed rows, so the
    // 100,000th tenant at the head allocates nothing). Pinned tenants (a retry's) are planned each.
    let mut is_done_at: HashMap<Vec<RevisionId>, bool> = Default::default();
    let at_target = fleet::schema_tenants_at_target(chosen, servers, ctx.store.as_ref(), concurrency, |i, rows| {
        if let Some(pin) = pinned.get(&i) {
            return is_done(rows, Some(pin));
        }
        match is_done_at.get(rows) {
            Some(done) => *done,
            None => *is_done_at.entry(rows.to_vec()).or_insert(is_done(rows, None)),
        }
    })
    .await;
    // The read shares a list per chunk; the run, one per distinct set of rows (their text is written once).
    let mut shared: HashSet<Arc<[RevisionId]>> = HashSet::new();
    at_target
        .into_iter()
        .map(|(i, rows)| match shared.get(&rows) {
            Some(first) => (i, Arc::clone(first)),
            None => {
                shared.insert(Arc::clone(&rows));
                (i, rows)
            }
        })
        .collect()
}

async fn migrate(
    global: &GlobalArgs,
    action: Action,
    select: SelectArgs,
    run: RunArgs,
    route: LogRoute,
    retry: Option<RetryOf>,
) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let recorded = retry.as_ref().and_then(|r| r.recorded.clone());
    // A recorded rollback pins every tenant's target; its action's target only names the run it undoes.
    if recorded.is_none() {
        check_target(&loaded, &action)?;
    }
    // A shared run holds every selected tenant; `--tag` then places this runner instead of selecting.
    let mut placement = Placement {
        servers: run.server.clone(),
        tags: Vec::new(),
    };
    let mut selection = if run.run_name.is_some() {
        let mut select = select.clone();
        placement.tags = std::mem::take(&mut select.tag)
            .iter()
            .map(|t| fleet::parse_tag(t).map_err(|e| CliError::usage(format!("--tag {e}"))))
            .collect::<Result<_, _>>()?;
        selection(&ctx, &select)?
    } else {
        selection(&ctx, &select)?
    };
    let mut pinned = BTreeMap::new();
    let mut resume = None;
    match retry {
        Some(retry) => {
            resume = retry.resume;
            selection.only = Some(retry.only);
            pinned = retry.pinned;
        }
        // `--only-failed` repeating the latest run's command keeps each tenant's resolved target too.
        None if select.only_failed => {
            let ledger = open_ledger(&ledger_path(&ctx, select.ledger.as_ref())?)?;
            if let Some(last) = ledger
                .run(&RunSelector::Latest)
                .map_err(|e| CliError::new(ExitCode::Usage, e))?
            {
                if last.command == action.command() && last.target == action.target() {
                    pinned = retry_of(&*ledger, &last)?.pinned;
                }
            }
        }
        None => {}
    }
    let max_failure_rate = run.max_failure_rate.as_deref().map(parse_rate).transpose()?;
    let canary_tag = run
        .canary_tag
        .as_deref()
        .map(|t| fleet::parse_tag(t).map_err(|e| CliError::usage(format!("--canary-tag {e}"))))
        .transpose()?;
    let tenants_file = tenants_path(&ctx, &select);
    let mut setup = setup(&ctx, &tenants_file).await?;
    if let Some(unknown) = placement
        .servers
        .iter()
        .find(|name| !setup.servers.iter().any(|s| &&s.name == name))
    {
        return Err(CliError::usage(format!(
            "--server {unknown}: no such server in {}",
            tenants_file.display()
        )));
    }
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
    let waves = wave_run(&run, &mut chosen, max_failure_rate, n_canaries, resume.as_ref())?;
    let defaults = &setup.defaults;
    let concurrency = run.concurrency.unwrap_or(defaults.concurrency).max(1);
    let rate = run.rate.unwrap_or(defaults.rate);
    let retries = run.retries.unwrap_or(defaults.retries);
    let tenant_timeout = run.tenant_timeout.or(defaults.tenant_timeout);
    let mut ctx = ctx;
    if let Some(t) = run.lock_timeout.or(defaults.lock_timeout) {
        ctx.exec.lock_timeout = Some(t).filter(|d| !d.is_zero());
    }
    if let Some(t) = run.statement_timeout.or(defaults.statement_timeout) {
        ctx.exec.statement_timeout = Some(t).filter(|d| !d.is_zero());
    }
    ctx.exec.backfill_rate = run.backfill.backfill_rate.filter(|r| *r > 0.0);
    ctx.exec.backfill_fleet = run
        .backfill_fleet_rate
        .and_then(crate::backfill::RowThrottle::new)
        .map(std::sync::Arc::new);
    ctx.exec.is_irreversible_allowed = run.backfill.force;
    let options = RunOptions {
        v: RUN_OPTIONS_VERSION,
        tenants_file: Some(tenants_file.display().to_string()),
        tenant: select.tenant.clone(),
        tags: select.tag.clone(),
        exclude: select.exclude.clone(),
        concurrency: Some(concurrency),
        rate: Some(rate),
        retries: Some(retries),
        canary: run.canary,
        canary_tag: run.canary_tag.clone(),
        max_failures: run.max_failures,
        max_failure_rate: run.max_failure_rate.clone(),
        tenant_timeout_ms: run_options::millis(tenant_timeout),
        lock_timeout_ms: run_options::millis(ctx.exec.lock_timeout),
        statement_timeout_ms: run_options::millis(ctx.exec.statement_timeout),
        backfill_rate: run.backfill.backfill_rate,
        backfill_fleet_rate: run.backfill_fleet_rate,
        force: run.backfill.force,
        stamp_revisions: match &action {
            Action::Stamp(r) => Some(r.clone()),
            _ => None,
        },
        waves: run.waves.clone(),
        waves_by: run.waves_by.clone(),
        wave_pause_ms: run_options::millis(run.wave_pause),
        wave_gate: run.wave_gate.clone(),
        wave_plan: waves.as_ref().map(|w| w.waves.clone()),
    };
    // Each retried tenant keeps the absolute target its first plan was made for.
    let pinned: BTreeMap<usize, Vec<RevisionId>> = chosen
        .iter()
        .enumerate()
        .filter_map(|(i, t)| Some((i, pinned.get(&t.id)?.clone())))
        .collect();
    let mut at_target = tenants_at_target(
        &ctx,
        &loaded,
        &action,
        &chosen,
        &setup.servers,
        &pinned,
        concurrency,
        run.dry_run,
    )
    .await;
    // Only pinned tenants have a target text (a map, not an entry per tenant: 100,000 tenants are a run too).
    let pinned_text: BTreeMap<usize, String> = pinned.iter().map(|(i, rows)| (*i, ledger::rows_text(rows))).collect();
    let mut writer = None;
    let mut rate_share = None;
    let lease = run
        .lease
        .unwrap_or(ledger::DEFAULT_LEASE)
        .max(Duration::from_millis(300));
    let run_id = if run.dry_run {
        "dry-run".to_string()
    } else {
        let path = ledger_path(&ctx, select.ledger.as_ref())?;
        let mut ledger = open_ledger(&path)?;
        // Tenants share their tags maps: each distinct map is written as JSON once.
        let mut tags_text: HashMap<*const BTreeMap<String, String>, String> = HashMap::new();
        for t in &chosen {
            if !t.tags.is_empty() {
                tags_text
                    .entry(Arc::as_ptr(&t.tags))
                    .or_insert_with(|| serde_json::json!(*t.tags).to_string());
            }
        }
        // Likewise the version rows of the tenants known at their target, recorded skipped as the run opens.
        let mut rows_text: HashMap<*const [RevisionId], String> = HashMap::new();
        for rows in at_target.values() {
            rows_text
                .entry(Arc::as_ptr(rows))
                .or_insert_with(|| ledger::rows_column(rows).unwrap_or_default());
        }
        // Made one at a time as the ledger records them: a list of 100,000 would cost about 10 MB at the peak.
        let mut new_tenants = chosen.iter().enumerate().map(|(i, t)| NewTenant {
            tenant_id: &t.id,
            server: &setup.servers[t.server].name,
            kind: fleet::place_kind(&t.place),
            target: pinned_text.get(&i).map(String::as_str),
            canary: i < n_canaries,
            tags: tags_text.get(&Arc::as_ptr(&t.tags)).map(String::as_str),
            at_target: at_target
                .get(&i)
                .and_then(|rows| rows_text.get(&Arc::as_ptr(rows)))
                .map(String::as_str),
        });
        let new_run = NewRun {
            command: recorded.as_ref().map_or(action.command(), |r| r.command).to_string(),
            target: recorded.as_ref().map_or_else(|| action.target(), |r| r.target.clone()),
            options: options.to_value(),
            user: std::env::var("USER").unwrap_or_default(),
            host: hostname(),
        };
        let open = OpenRun {
            runner: RunnerInfo::this_process(&new_run.host, placement, lease),
            run: new_run,
            name: run.run_name.clone(),
        };
        let joined = ledger
            .open_run_iter(&open, &mut new_tenants)
            .map_err(|e| CliError::new(ExitCode::Usage, e))?;
        let name = run.run_name.as_deref().unwrap_or_default();
        if joined.is_finished {
            println!("Nothing to do: run {name} ({}) is finished", joined.run);
            return Ok(ExitCode::Ok);
        }
        if !joined.is_new {
            eprintln!("Joined run {name} ({}) as runner {}", joined.run, open.runner.id);
            // The runner that opened the run recorded its tenants at their target skipped, and reports them.
            at_target.clear();
        }
        // Runners of a named run share each server's max_connections, and the start rate, between them.
        let is_shared = run.run_name.is_some();
        let rate_part = (is_shared && rate > 0.0).then(|| {
            let (tx, rx) = tokio::sync::watch::channel(rate);
            rate_share = Some(rx);
            (rate, tx)
        });
        let duties = fleet::WriterDuties {
            heartbeat: Some(lease / 3),
            share: if is_shared { setup.servers.clone() } else { Vec::new() },
            rate: rate_part,
        };
        writer = Some(LedgerWriter::new(ledger, joined.run.clone(), duties));
        joined.run.to_string()
    };
    // Named by the redacted location: a password given in --ledger never reaches the output.
    let retry_command = match &select.ledger {
        Some(_) => format!(
            "flotilla fleet retry --ledger {} --run {run_id}",
            ledger_path(&ctx, select.ledger.as_ref())?
        ),
        None => format!("flotilla fleet retry --run {run_id}"),
    };
    let sinks = super::watch::sinks(&ctx, &run, route, retry_command).await?;
    let request = FleetRequest {
        run_id: run_id.clone(),
        // A rollback reads `rollback to before RUN` in progress, the summary and metrics.
        shown_as: recorded.as_ref().map(|r| (r.command, format!("before {}", r.target))),
        action,
        tenants: chosen,
        pinned,
        at_target,
        waves,
        wave_gate: run.wave_gate.clone(),
        n_canaries,
        concurrency,
        rate: (rate > 0.0).then_some(rate),
        limits: tenant_limits(retries, tenant_timeout, defaults, &ctx.project),
        max_failures: run.max_failures,
        max_failure_rate,
        lock_requeue_for: ctx.exec.lock_wait,
        is_dry_run: run.dry_run,
        source: if run.dry_run {
            fleet::Source::Local
        } else {
            fleet::Source::Claims {
                poll: (lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(2)),
            }
        },
        ledger: writer,
        rate_share,
    };
    // Only a dry run prints per-tenant plans after the run, so only it keeps a copy of the tenant list.
    let tenants = if run.dry_run {
        request.tenants.clone()
    } else {
        Vec::new()
    };
    let engine = engine(&ctx, loaded);
    let outcome = fleet::run(request, engine.clone(), setup.servers.clone(), sinks).await;
    if let Some(e) = &outcome.ledger_failure {
        return Err(CliError::new(
            ExitCode::LedgerFailed,
            anyhow::anyhow!(
                "{e}; the run stopped starting tenants and may be recorded only in part: check the tenants with \
                 `flotilla fleet current`, then run again"
            ),
        ));
    }
    if run.dry_run {
        print_dry_run(&ctx, &tenants, &outcome, &engine, run.verbose);
    }
    Ok(outcome.exit_code)
}

/// The tenants file's `[defaults]` over `flotilla.toml` over the built-in defaults.
fn tenant_limits(
    retries: u32,
    tenant_timeout: Option<Duration>,
    defaults: &config::FleetDefaults,
    project: &config::ProjectConfig,
) -> TenantLimits {
    let backoff = defaults.backoff.over(project.backoff);
    let backoff_base = backoff.backoff_base.unwrap_or(TenantLimits::DEFAULT_BACKOFF_BASE);
    TenantLimits {
        retries,
        tenant_timeout,
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

fn print_dry_run(ctx: &Ctx, tenants: &[Tenant], outcome: &fleet::FleetOutcome, engine: &Engine, is_verbose: bool) {
    let mut planned = outcome.planned.clone();
    planned.sort_by_key(|(i, _, _)| *i);
    // A dry run's tenants end as skipped (those with a plan, and those already at the target), or failed (no
    // connection, no plan), interrupted or never started (a halt or a signal came first).
    let n_at_target = outcome.n_skipped.saturating_sub(planned.len());
    let (n_failed, n_interrupted) = (outcome.n_failed, outcome.n_interrupted + outcome.n_not_started);
    let rows_text = ledger::rows_text::<RevisionId>;
    // One group per distinct plan (the rows a tenant starts from and the steps), in order of first appearance.
    let mut groups: Vec<(&[RevisionId], &[crate::graph::Step], Vec<usize>)> = Vec::new();
    let mut index_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, from, steps) in &planned {
        let mut key = rows_text(from);
        for s in steps {
            key.push_str(&format!(
                " {}:{}",
                crate::executor::direction_word(s.direction),
                s.revision
            ));
        }
        let g = *index_of.entry(key).or_insert_with(|| {
            groups.push((from, steps, Vec::new()));
            groups.len() - 1
        });
        groups[g].2.push(*i);
    }
    groups.sort_by_key(|(_, _, members)| std::cmp::Reverse(members.len()));
    match ctx.format {
        Format::Json => print_json(&json!({
            "dry_run": true,
            "n_would_change": planned.len(),
            "n_at_target": n_at_target,
            "n_failed": n_failed,
            "n_interrupted": n_interrupted,
            "plans": groups.iter().map(|(from, steps, members)| json!({
                "from": from,
                "steps": steps.iter().map(|s| json!({"revision": s.revision, "direction": s.direction})).collect::<Vec<_>>(),
                "n_tenants": members.len(),
                "tenants": members.iter().map(|i| &tenants[*i].id).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "tenants": planned.iter().map(|(i, from, steps)| json!({
                "id": tenants[*i].id,
                "from": from,
                "steps": steps.iter().map(|s| json!({"revision": s.revision, "direction": s.direction})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            let mut counts = format!(
                "would change {} / at target {n_at_target}",
                crate::observe::count(planned.len(), "tenant")
            );
            if n_failed + n_interrupted > 0 {
                counts.push_str(&format!(" / failed {n_failed} / not planned {n_interrupted}"));
            }
            println!("Dry run: {counts}; nothing was changed");
            for (from, steps, members) in &groups {
                let plan = crate::graph::Plan {
                    direction: steps.first().map_or(crate::graph::Direction::Up, |s| s.direction),
                    steps: steps.to_vec(),
                };
                let mut to = plan.apply_rows(from);
                to.sort();
                println!(
                    "{:>7} from {} to {}: {}",
                    crate::observe::count(members.len(), "tenant"),
                    rows_text(from),
                    rows_text(&to),
                    crate::observe::count(steps.len(), "step")
                );
                for step in steps.iter() {
                    let message = engine
                        .scripts
                        .get(&step.revision)
                        .map(|s| s.meta.message.as_str())
                        .unwrap_or_default();
                    println!(
                        "          {} {} {message}",
                        crate::executor::direction_word(step.direction),
                        step.revision
                    );
                }
                if is_verbose {
                    for i in members {
                        println!("          tenant {}", tenants[*i].id);
                    }
                }
            }
            if !is_verbose && !groups.is_empty() {
                println!("(-v lists the tenants of each plan)");
            }
        }
    }
}

async fn retry(
    global: &GlobalArgs,
    run_id: Option<String>,
    mut select: SelectArgs,
    mut run: RunArgs,
    route: LogRoute,
) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let path = ledger_path(&ctx, select.ledger.as_ref())?;
    let ledger = open_ledger(&path)?;
    let which = match &run_id {
        Some(id) => RunSelector::Id(id.clone()),
        None => RunSelector::Latest,
    };
    let target_run = ledger.run(&which).map_err(|e| CliError::new(ExitCode::Usage, e))?;
    let Some(last) = target_run else {
        return Err(CliError::usage(match &run_id {
            Some(id) => format!("no run `{id}` in the ledger {path}"),
            None => format!("nothing to retry: the ledger {path} has no run"),
        }));
    };
    if last.state(&hostname()) == ledger::RunState::Live {
        return Err(CliError::new(
            ExitCode::Locked,
            anyhow::anyhow!(
                "run {} is still in progress (process {} on {}); retry it once it has ended",
                last.id,
                last.pid,
                last.host
            ),
        ));
    }
    let action = match last.command.as_str() {
        "upgrade" => Action::Upgrade(last.target.clone()),
        "downgrade" => Action::Downgrade(last.target.clone()),
        "stamp" => Action::Stamp(
            RunOptions::from_stored(&last.options)
                .and_then(|o| o.stamp_revisions)
                .unwrap_or_default(),
        ),
        ROLLBACK => rollback_action(&last.target),
        other => {
            return Err(CliError::usage(format!(
                "run {} (`{other}`) cannot be retried",
                last.id
            )))
        }
    };
    let mut retry = retry_of(&*ledger, &last)?;
    if last.command == ROLLBACK {
        retry.recorded = Some(Recorded {
            command: ROLLBACK,
            target: last.target.clone(),
        });
    }
    let text = ctx.format == Format::Text;
    if text {
        for note in hidden_failures(&*ledger, &last, &select)? {
            eprintln!("{note}");
        }
    }
    drop(ledger);
    if retry.only.is_empty() {
        if text {
            println!(
                "Nothing to retry: run {} has no failed, interrupted or unstarted tenant",
                last.id
            );
        }
        return Ok(ExitCode::Ok);
    }
    let stored = RunOptions::from_stored(&last.options).unwrap_or_default();
    let overridden = inherit(&mut select, &mut run, &stored);
    // New --waves plan the retry afresh; inherited ones continue where the run stopped.
    if overridden.contains(&"--waves") {
        retry.resume = None;
    }
    if text {
        let which = if run_id.is_some() { "run" } else { "the latest run," };
        println!(
            "Retrying {} of {which} {} ({} {}), each to the target its plan was made for",
            crate::observe::count(retry.only.len(), "tenant"),
            last.id,
            last.command,
            last.target
        );
        let inherited: Vec<String> = stored
            .describe()
            .into_iter()
            .filter(|d| !overridden.iter().any(|o| d.starts_with(o)))
            .collect();
        if !inherited.is_empty() {
            println!("  inherited: {}", inherited.join(" "));
        }
        if !overridden.is_empty() {
            println!("  overridden on this command line: {}", overridden.join(" "));
        }
    }
    migrate(global, action, select, run, route, Some(retry)).await
}

/// Fill what the retry's command line left unset from the stored run; returns the flags the command line set.
fn inherit(select: &mut SelectArgs, run: &mut RunArgs, stored: &RunOptions) -> Vec<&'static str> {
    let mut overridden = Vec::new();
    macro_rules! take {
        ($flag:literal, $slot:expr, $value:expr) => {
            if $slot.is_some() {
                overridden.push($flag);
            } else {
                $slot = $value;
            }
        };
    }
    take!("--concurrency", run.concurrency, stored.concurrency);
    take!("--rate", run.rate, stored.rate);
    take!("--retries", run.retries, stored.retries);
    take!("--canary", run.canary, stored.canary);
    take!("--canary-tag", run.canary_tag, stored.canary_tag.clone());
    take!("--max-failures", run.max_failures, stored.max_failures);
    if run.waves.is_some() || run.waves_by.is_some() {
        overridden.push("--waves");
    } else {
        run.waves = stored.waves.clone();
        run.waves_by = stored.waves_by.clone();
    }
    take!(
        "--wave-pause",
        run.wave_pause,
        run_options::duration(stored.wave_pause_ms)
    );
    take!("--wave-gate", run.wave_gate, stored.wave_gate.clone());
    take!(
        "--max-failure-rate",
        run.max_failure_rate,
        stored.max_failure_rate.clone()
    );
    take!(
        "--tenant-timeout",
        run.tenant_timeout,
        run_options::duration(stored.tenant_timeout_ms)
    );
    take!(
        "--lock-timeout",
        run.lock_timeout,
        run_options::duration(stored.lock_timeout_ms)
    );
    take!(
        "--statement-timeout",
        run.statement_timeout,
        run_options::duration(stored.statement_timeout_ms)
    );
    take!("--backfill-rate", run.backfill.backfill_rate, stored.backfill_rate);
    take!(
        "--backfill-fleet-rate",
        run.backfill_fleet_rate,
        stored.backfill_fleet_rate
    );
    if run.backfill.force {
        overridden.push("--force");
    } else {
        run.backfill.force = stored.force;
    }
    take!(
        "--tenants",
        select.tenants,
        stored.tenants_file.as_ref().map(PathBuf::from)
    );
    for (flag, slot, value) in [
        ("--tenant", &mut select.tenant, &stored.tenant),
        ("--tag", &mut select.tag, &stored.tags),
        ("--exclude", &mut select.exclude, &stored.exclude),
    ] {
        if slot.is_empty() {
            slot.clone_from(value);
        } else {
            overridden.push(flag);
        }
    }
    overridden
}

/// Notes on earlier runs whose failed or interrupted tenants no later run has migrated, so a retry of the latest
/// run does not hide them.
fn hidden_failures(
    ledger: &dyn Ledger,
    chosen: &ledger::RunRecord,
    select: &SelectArgs,
) -> Result<Vec<String>, CliError> {
    let err = |e| CliError::new(ExitCode::Usage, e);
    let runs = ledger.runs(20).map_err(err)?;
    let mut settled: BTreeSet<String> = BTreeSet::new();
    let mut notes = Vec::new();
    let ledger_flag = select
        .ledger
        .as_ref()
        .map(|p| format!(" --ledger {}", p.display()))
        .unwrap_or_default();
    let mut is_older = false;
    for run in &runs {
        if is_older && run.state(&hostname()) != ledger::RunState::Live {
            let left: Vec<String> = ledger
                .retry_set(&run.id)
                .map_err(err)?
                .into_iter()
                .filter(|t| !settled.contains(t))
                .collect();
            if !left.is_empty() {
                notes.push(format!(
                    "note: earlier run {} ({} {}) still has {} failed, interrupted or unstarted tenant(s) that no \
                     later run migrated; retry them with `flotilla fleet retry --run {}{ledger_flag}`",
                    run.id,
                    run.command,
                    run.target,
                    left.len(),
                    run.id
                ));
            }
        }
        if run.id == chosen.id {
            is_older = true;
        }
        let done = [ledger::TenantStatus::Succeeded, ledger::TenantStatus::Skipped];
        settled.extend(
            ledger
                .tenants(&run.id, Some(&done))
                .map_err(err)?
                .into_iter()
                .map(|t| t.tenant_id),
        );
    }
    Ok(notes)
}

/// `fleet plan TARGET`: every selected tenant's version rows (schema tenants in bulk), grouped by what an upgrade
/// to TARGET would run from there.
async fn plan(global: &GlobalArgs, args: FleetPlanArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let action = Action::Upgrade(args.target.clone());
    check_target(&loaded, &action)?;
    let selection = selection(&ctx, &args.select)?;
    let mut setup = setup(&ctx, &tenants_path(&ctx, &args.select)).await?;
    let chosen = select_tenants(&mut setup.tenants, &selection)?;
    let concurrency = args.concurrency.unwrap_or(setup.defaults.concurrency);
    let versions = fleet::read_versions(&chosen, &setup.servers, ctx.store.as_ref(), concurrency).await;
    // One group per distinct set of current rows (its plan follows from them), in order of first appearance, then
    // largest first.
    struct Group {
        from: Vec<RevisionId>,
        /// The version rows the plan leads to, sorted.
        to: Vec<RevisionId>,
        steps: Vec<crate::graph::Step>,
        members: Vec<usize>,
    }
    let mut groups: Vec<Group> = Vec::new();
    // A plan depends only on the version rows, so tenants at the same rows share a group, planned once.
    let mut group_of: HashMap<Vec<RevisionId>, Result<usize, String>> = Default::default();
    let (mut missing, mut unreachable, mut unplannable) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (tenant, result)) in chosen.iter().zip(&versions).enumerate() {
        let rows = match result {
            fleet::Versions::At(rows) => &rows[..],
            fleet::Versions::Missing(e) => {
                missing.push(json!({"id": tenant.id, "error": e}));
                continue;
            }
            fleet::Versions::Unreachable(e) => {
                unreachable.push(json!({"id": tenant.id, "error": e}));
                continue;
            }
        };
        if !group_of.contains_key(rows) {
            let group = loaded.graph.plan_upgrade(rows, &args.target).map(|plan| {
                let mut to = plan.apply_rows(rows);
                to.sort();
                groups.push(Group {
                    from: rows.to_vec(),
                    to,
                    steps: plan.steps,
                    members: Vec::new(),
                });
                groups.len() - 1
            });
            group_of.insert(rows.to_vec(), group.map_err(|e| e.to_string()));
        }
        match &group_of[rows] {
            Ok(g) => groups[*g].members.push(i),
            Err(e) => unplannable.push(json!({"id": tenant.id, "from": rows, "error": e})),
        }
    }
    groups.sort_by_key(|g| (g.steps.is_empty(), std::cmp::Reverse(g.members.len())));
    let n_would_change: usize = groups
        .iter()
        .filter(|g| !g.steps.is_empty())
        .map(|g| g.members.len())
        .sum();
    let n_at_target: usize = groups
        .iter()
        .filter(|g| g.steps.is_empty())
        .map(|g| g.members.len())
        .sum();
    let step_json = |step: &crate::graph::Step| {
        let script = loaded.scripts.get(&step.revision);
        json!({
            "revision": step.revision,
            "message": script.map(|s| s.meta.message.as_str()),
            "transactional": script.is_none_or(|s| s.is_transactional),
            "backfill": script.is_some_and(|s| s.upgrade.has_backfill()),
        })
    };
    match ctx.format {
        Format::Json => print_json(&json!({
            "v": 1,
            "target": args.target,
            "n_tenants": chosen.len(),
            "n_would_change": n_would_change,
            "n_at_target": n_at_target,
            "plans": groups.iter().map(|g| {
                json!({
                    "from": g.from,
                    "to": g.to,
                    "n_tenants": g.members.len(),
                    "steps": g.steps.iter().map(step_json).collect::<Vec<_>>(),
                    "tenants": if args.verbose {
                        json!(g.members.iter().map(|i| &chosen[*i].id).collect::<Vec<_>>())
                    } else {
                        json!(null)
                    },
                })
            }).collect::<Vec<_>>(),
            "missing": missing,
            "unreachable": unreachable,
            "unplannable": unplannable,
        })),
        Format::Text => {
            println!(
                "Plan to {}: would change {} / at target {n_at_target}; nothing was changed",
                args.target,
                crate::observe::count(n_would_change, "tenant")
            );
            for g in &groups {
                if g.steps.is_empty() {
                    println!(
                        "{:>7} at {} already",
                        crate::observe::count(g.members.len(), "tenant"),
                        ledger::rows_text(&g.from)
                    );
                } else {
                    println!(
                        "{:>7} from {} to {}: {}",
                        crate::observe::count(g.members.len(), "tenant"),
                        ledger::rows_text(&g.from),
                        ledger::rows_text(&g.to),
                        crate::observe::count(g.steps.len(), "step")
                    );
                }
                for step in &g.steps {
                    let v = step_json(step);
                    let mut flags = Vec::new();
                    if v["transactional"] == false {
                        flags.push("no transaction");
                    }
                    if v["backfill"] == true {
                        flags.push("backfill");
                    }
                    let flags = if flags.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", flags.join(", "))
                    };
                    println!(
                        "          upgrade {} {}{flags}",
                        step.revision,
                        v["message"].as_str().unwrap_or_default()
                    );
                }
                if args.verbose {
                    for i in &g.members {
                        println!("          tenant {}", chosen[*i].id);
                    }
                }
            }
            print_problems(&[
                ("missing", &missing),
                ("unreachable", &unreachable),
                ("no plan", &unplannable),
            ]);
        }
    }
    Ok(
        if !missing.is_empty() || !unreachable.is_empty() || !unplannable.is_empty() {
            ExitCode::Failed
        } else if n_would_change > 0 {
            ExitCode::WouldChange
        } else {
            ExitCode::Ok
        },
    )
}

/// Lists of tenants that could not be read or planned (`id`, `error`), under their titles; empty lists print nothing.
fn print_problems(lists: &[(&str, &Vec<serde_json::Value>)]) {
    for (title, list) in lists {
        if list.is_empty() {
            continue;
        }
        println!("{title}: {}", list.len());
        for item in list.iter() {
            println!(
                "    {}: {}",
                item["id"].as_str().unwrap_or_default(),
                item["error"].as_str().unwrap_or_default()
            );
        }
    }
}

async fn current(global: &GlobalArgs, args: FleetCurrentArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let selection = selection(&ctx, &args.select)?;
    let mut setup = setup(&ctx, &tenants_path(&ctx, &args.select)).await?;
    let chosen = select_tenants(&mut setup.tenants, &selection)?;
    let concurrency = args.concurrency.unwrap_or(setup.defaults.concurrency);
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
                let key = ledger::rows_text(rows);
                *at.entry(key.clone()).or_default() += 1;
                let entry = json!({"id": tenant.id, "revisions": &rows[..]});
                if rows.iter().any(|r| !loaded.scripts.contains_key(r)) {
                    ahead.push(entry.clone());
                } else if rows[..] != heads[..] {
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
                "{}; graph heads: {}",
                crate::observe::count(chosen.len(), "tenant"),
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
            print_problems(&[("missing", &missing), ("unreachable", &unreachable)]);
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
    let concurrency = args.concurrency.unwrap_or(setup.defaults.concurrency);
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
    let path = ledger_path(&ctx, args.select.ledger.as_ref())?;
    let ledger = open_ledger(&path)?;
    let selector = if args.run == "latest" {
        RunSelector::Latest
    } else {
        RunSelector::Id(args.run.clone())
    };
    let run = ledger
        .run(&selector)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?
        .ok_or_else(|| CliError::usage(format!("no run {} in the ledger {path}", args.run)))?;
    let state = run.state(&hostname());
    let mut tenants = ledger
        .tenants(&run.id, None)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?;
    let counts = run.counts.settled(state == ledger::RunState::Abandoned);
    // Pending tenants of a finished run never started.
    let n_not_started = if state == ledger::RunState::Finished {
        counts.pending
    } else {
        0
    };
    let is_clean = counts.failed + counts.interrupted + n_not_started == 0 && state == ledger::RunState::Finished;
    // Selectors narrow what is shown; the totals and --exit-code stay the whole run's.
    let select = &args.select;
    if !select.tenant.is_empty() || !select.exclude.is_empty() {
        let recorded: BTreeSet<&str> = tenants.iter().map(|t| t.tenant_id.as_str()).collect();
        for (flag, ids) in [("--tenant", &select.tenant), ("--exclude", &select.exclude)] {
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| !recorded.contains(id.as_str()))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(CliError::usage(format!(
                    "tenant id(s) given with {flag} are not in run {}: {}",
                    run.id,
                    unknown.join(", ")
                )));
            }
        }
        tenants.retain(|t| {
            (select.tenant.is_empty() || select.tenant.contains(&t.tenant_id)) && !select.exclude.contains(&t.tenant_id)
        });
    }
    if !select.tag.is_empty() {
        // Tags live in the tenants file, not in the ledger.
        let tags: Vec<(String, String)> = select
            .tag
            .iter()
            .map(|t| fleet::parse_tag(t).map_err(|e| CliError::usage(format!("--tag {e}"))))
            .collect::<Result<_, _>>()?;
        let file = TenantsFile::load(&tenants_path(&ctx, select), &config::process_env)?;
        let tagged: BTreeSet<&str> = file
            .tenants
            .iter()
            .filter(|spec| tags.iter().all(|(k, v)| spec.tags.get(k) == Some(v)))
            .map(|spec| spec.id.as_str())
            .collect();
        tenants.retain(|t| tagged.contains(t.tenant_id.as_str()));
    }
    if args.failed || select.only_failed {
        tenants.retain(|t| matches!(t.status_label(state), "failed" | "interrupted" | "not_started"));
    }
    // A run in waves: each tenant's wave from its position.
    let waves = RunOptions::from_stored(&run.options).and_then(|o| o.wave_plan);
    match ctx.format {
        Format::Json => {
            let mut value = ledger::status_json(&run, &tenants, state);
            if let Some(waves) = &waves {
                value["run"]["waves"] =
                    serde_json::json!({ "names": waves.names, "numbers": waves.numbers, "of": waves.of });
                if let Some(rows) = value["tenants"].as_array_mut() {
                    for (row, t) in rows.iter_mut().zip(&tenants) {
                        row["wave"] = serde_json::json!(waves.number_at(t.position));
                    }
                }
            }
            print_json(&value);
        }
        Format::Text => {
            println!(
                "Run {}: {} {} started {} {}",
                run.id,
                run.command,
                run.target,
                run.started_at,
                match (&run.finished_at, state) {
                    (Some(f), _) => format!("finished {f}"),
                    (None, ledger::RunState::Abandoned) => format!(
                        "(abandoned: its process {} on {} died before finishing the run; its unfinished tenants are \
                         shown interrupted; `flotilla fleet retry --run {}` runs them again)",
                        run.pid, run.host, run.id
                    ),
                    (None, _) => format!("(in progress: process {} on {})", run.pid, run.host),
                }
            );
            // A shared run lists its runners, and which runner holds or last held each tenant.
            let is_shared = run.name.is_some() || run.runners.len() > 1;
            if is_shared {
                println!(
                    "Shared run {}: {}",
                    run.name.as_deref().unwrap_or("-"),
                    crate::observe::count(run.runners.len(), "runner")
                );
                for r in &run.runners {
                    let placement = if r.placement.is_everything() {
                        "all tenants".to_string()
                    } else {
                        let mut parts: Vec<String> =
                            r.placement.servers.iter().map(|s| format!("server={s}")).collect();
                        parts.extend(r.placement.tags.iter().map(|(k, v)| format!("{k}={v}")));
                        parts.join(" ")
                    };
                    let standing = match (&r.finished_at, r.is_live) {
                        (Some(at), _) => format!("finished {at} (exit {})", r.exit_code.unwrap_or_default()),
                        (None, true) => "live".to_string(),
                        (None, false) => "lease lapsed (its tenants go to other runners)".to_string(),
                    };
                    println!(
                        "  runner {} (pid {} on {}): {placement}; last heartbeat {}; {standing}",
                        r.id, r.pid, r.host, r.heartbeat_at
                    );
                }
            }
            if let Some(waves) = &waves {
                let names: Vec<String> = (0..waves.len())
                    .map(|k| format!("{} ({})", waves.number(k), waves.names[k]))
                    .collect();
                println!("Waves of {}: {}", waves.of, names.join(", "));
            }
            let runner_of = |t: &ledger::TenantRecord| {
                let wave = match &waves {
                    Some(w) => format!(" {:>6}", w.number_at(t.position)),
                    None => String::new(),
                };
                if is_shared {
                    format!(" {:<28}{wave}", t.runner.as_deref().unwrap_or("-"))
                } else {
                    wave
                }
            };
            let runner_head = if is_shared {
                format!(" {:<28}", "runner")
            } else {
                String::new()
            };
            let wave_head = if waves.is_some() { "   wave" } else { "" };
            println!(
                "{:<24} {:<12} {:<14} {:<14} {:>8} {:>9}{runner_head}{wave_head}  error",
                "tenant", "status", "from", "to", "attempts", "duration",
            );
            for t in &tenants {
                println!(
                    "{:<24} {:<12} {:<14} {:<14} {:>8} {:>9}{}  {}",
                    t.tenant_id,
                    t.status_label(state),
                    t.from_revision.as_deref().unwrap_or("-"),
                    t.to_revision.as_deref().unwrap_or("-"),
                    t.attempts,
                    t.duration_ms
                        .map(|d| crate::observe::human::duration(Duration::from_millis(d)))
                        .unwrap_or_else(|| "-".into()),
                    runner_of(t),
                    match (&t.sqlstate, &t.error) {
                        // The error text may end with its SQLSTATE already: show it once.
                        (Some(code), Some(e)) if e.contains(code.as_str()) => e.clone(),
                        (Some(code), Some(e)) => format!("[{code}] {e}"),
                        (None, Some(e)) => e.clone(),
                        _ => String::new(),
                    }
                );
            }
            let mut totals = vec![crate::observe::count(run.n_tenants, "tenant")];
            for (label, n) in [
                ("succeeded", counts.succeeded),
                ("failed", counts.failed),
                ("skipped", counts.skipped),
                ("interrupted", counts.interrupted),
                ("not started", n_not_started),
                ("pending", counts.pending - n_not_started),
                ("running", counts.running),
            ] {
                if n > 0 {
                    totals.push(format!("{n} {label}"));
                }
            }
            println!("total: {}", totals.join(", "));
        }
    }
    Ok(if args.exit_code && !is_clean {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    })
}

/// The ledger command of a rollback run.
const ROLLBACK: &str = "rollback";

/// What stops a rollback before it changes anything, per tenant, as people and scripts read it.
#[derive(Default)]
struct Refusal {
    /// Tenants that moved since the run, or have no way back: never overridden.
    blocking: Vec<serde_json::Value>,
    /// Revisions on a tenant's way back whose downgrade does not undo their upgrade: `--force` overrides.
    irreversible: Vec<serde_json::Value>,
}

impl Refusal {
    fn of(problems: &[(fleet::rollback::Changed, fleet::rollback::Problem)]) -> Refusal {
        use fleet::rollback::Problem;
        let rows_text = ledger::rows_text::<RevisionId>;
        let mut out = Refusal::default();
        for (c, problem) in problems {
            let why = match problem {
                Problem::Irreversible(revision, why) => {
                    out.irreversible.push(json!({
                        "id": c.tenant_id,
                        "revision": revision,
                        "why": format!("revision {revision}: {}", why.describe()),
                    }));
                    continue;
                }
                Problem::Moved(now) => format!(
                    "moved since the run: now at {}, the run left it at {} (roll back the later change first, or \
                     leave it out with --exclude)",
                    rows_text(now),
                    rows_text(&c.to)
                ),
                Problem::Unsure(now) => format!(
                    "the run's process died while this tenant ran (or was about to), so the ledger does not know \
                     what it committed; it was at {} before the run and is now {} (downgrade it explicitly, or \
                     leave it out with --exclude)",
                    rows_text(&c.from),
                    now.as_ref()
                        .map_or_else(|| "unreadable".to_string(), |r| format!("at {}", rows_text(r)))
                ),
                Problem::NoWayBack(e) => format!("no way back to {}: {e}", rows_text(&c.from)),
            };
            out.blocking.push(json!({"id": c.tenant_id, "why": why}));
        }
        out
    }

    fn lines(list: &[serde_json::Value]) -> String {
        list.iter()
            .map(|v| {
                format!(
                    "\n  {}: {}",
                    v["id"].as_str().unwrap_or_default(),
                    v["why"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }
}

/// `fleet rollback --run ID`: downgrade every tenant run ID changed back to its version rows before that run, and
/// only those (`fleet::rollback` decides which and checks the way back), as a run of its own recorded as
/// `rollback ID`, each tenant's target pinned, so `fleet status` shows it and `fleet retry` goes back to the same
/// rows. Refuses with exit 2, changing nothing, when a tenant moved since the run or has no way back, or when a
/// revision on a way back cannot be undone and `--force` is not given; exit 4 while the run is in progress.
async fn rollback(global: &GlobalArgs, args: FleetRollbackArgs, route: LogRoute) -> Result<ExitCode, CliError> {
    let FleetRollbackArgs {
        run_id,
        mut select,
        run,
    } = args;
    if select.only_failed {
        return Err(CliError::usage(
            "--only-failed selects from the latest run; `fleet rollback --run ID` rolls back the tenants run ID \
             changed (narrow them with --tenant, --tag or --exclude)",
        ));
    }
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let path = ledger_path(&ctx, select.ledger.as_ref())?;
    let ledger = open_ledger(&path)?;
    let undone = ledger
        .run(&RunSelector::Id(run_id.clone()))
        .map_err(|e| CliError::new(ExitCode::Usage, e))?
        .ok_or_else(|| CliError::usage(format!("no run `{run_id}` in the ledger {path}")))?;
    if undone.command != "upgrade" {
        return Err(CliError::usage(format!(
            "run {} is a `{}` run; `fleet rollback` undoes upgrade runs only",
            undone.id, undone.command
        )));
    }
    let state = undone.state(&hostname());
    if state == ledger::RunState::Live {
        return Err(CliError::new(
            ExitCode::Locked,
            anyhow::anyhow!(
                "run {} is still in progress (process {} on {}); roll it back once it has ended",
                undone.id,
                undone.pid,
                undone.host
            ),
        ));
    }
    let records = ledger
        .tenants(&undone.id, None)
        .map_err(|e| CliError::new(ExitCode::Usage, e))?;
    drop(ledger);
    let mut changed = fleet::rollback::changed(&records, state == ledger::RunState::Abandoned);
    // --tenant and --exclude name tenants of the run: a typo must not roll back what it meant to leave alone.
    let in_run: BTreeSet<&str> = records.iter().map(|t| t.tenant_id.as_str()).collect();
    for (flag, ids) in [("--tenant", &select.tenant), ("--exclude", &select.exclude)] {
        let unknown: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !in_run.contains(id))
            .collect();
        if !unknown.is_empty() {
            return Err(CliError::usage(format!(
                "tenant id(s) given with {flag} are not in run {}: {}",
                undone.id,
                unknown.join(", ")
            )));
        }
    }
    let unchanged: Vec<&str> = select
        .tenant
        .iter()
        .map(String::as_str)
        .filter(|id| !changed.iter().any(|c| c.tenant_id == *id))
        .collect();
    if !unchanged.is_empty() {
        return Err(CliError::usage(format!(
            "run {} did not change these tenants (they failed or were skipped before any revision committed, or \
             never started), so there is nothing of theirs to roll back: {}",
            undone.id,
            unchanged.join(", ")
        )));
    }
    changed.retain(|c| {
        (select.tenant.is_empty() || select.tenant.contains(&c.tenant_id)) && !select.exclude.contains(&c.tenant_id)
    });
    // The run's own tenants file, unless the command line names one.
    if select.tenants.is_none() {
        select.tenants = RunOptions::from_stored(&undone.options)
            .and_then(|o| o.tenants_file)
            .map(PathBuf::from);
    }
    let tenants_file = tenants_path(&ctx, &select);
    let mut setup = setup(&ctx, &tenants_file).await?;
    let tags = select
        .tag
        .iter()
        .map(|t| fleet::parse_tag(t).map_err(|e| CliError::usage(format!("--tag {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let missing: Vec<&str> = changed
        .iter()
        .map(|c| c.tenant_id.as_str())
        .filter(|id| !setup.tenants.iter().any(|t| t.id == *id))
        .collect();
    if !missing.is_empty() {
        return Err(CliError::usage(format!(
            "run {} changed tenants that {} no longer holds, so they cannot be reached: {} (restore them there, \
             or leave them out with --exclude)",
            undone.id,
            tenants_file.display(),
            missing.join(", ")
        )));
    }
    let by_id: BTreeMap<&str, &Tenant> = setup.tenants.iter().map(|t| (t.id.as_str(), t)).collect();
    changed.retain(|c| {
        tags.iter()
            .all(|(k, v)| by_id[c.tenant_id.as_str()].tags.get(k) == Some(v))
    });
    let text = ctx.format == Format::Text;
    if changed.is_empty() {
        if text {
            println!("Nothing to roll back: run {} changed no selected tenant", undone.id);
        } else {
            print_json(&json!({"run": undone.id, "n_tenants": 0}));
        }
        return Ok(ExitCode::Ok);
    }
    let chosen: Vec<Tenant> = changed.iter().map(|c| by_id[c.tenant_id.as_str()].clone()).collect();
    drop(by_id);
    setup.tenants.clear();
    // Where each tenant is now: one moved since the run would lose more than the run did.
    let concurrency = run.concurrency.unwrap_or(setup.defaults.concurrency).max(1);
    let now = fleet::read_versions(&chosen, &setup.servers, ctx.store.as_ref(), concurrency).await;
    let now: Vec<Option<Vec<RevisionId>>> = now.iter().map(|v| v.rows().map(<[_]>::to_vec)).collect();
    let review = fleet::rollback::review(changed, &now, &loaded.graph, &loaded.scripts);
    let refusal = Refusal::of(&review.problems);
    let (changed, n_unread) = (review.kept, review.n_unread);
    if changed.is_empty() && refusal.blocking.is_empty() {
        if text {
            println!(
                "Nothing to roll back: run {} committed nothing on the selected tenants",
                undone.id
            );
        } else {
            print_json(&json!({"run": undone.id, "n_tenants": 0}));
        }
        return Ok(ExitCode::Ok);
    }
    let is_refused = !refusal.blocking.is_empty() || (!refusal.irreversible.is_empty() && !run.backfill.force);
    if is_refused {
        if !text {
            print_json(&json!({
                "run": undone.id,
                "refused": true,
                "blocking": refusal.blocking,
                "irreversible": refusal.irreversible,
            }));
        }
        let mut message = format!("refusing to roll back run {}; nothing was changed", undone.id);
        if !refusal.blocking.is_empty() {
            message.push_str(&Refusal::lines(&refusal.blocking));
        }
        if !refusal.irreversible.is_empty() {
            message.push_str(&format!(
                "\nrevisions whose downgrade does not undo their upgrade{}:{}",
                if run.backfill.force {
                    " (--force given)"
                } else {
                    " (--force rolls back past them)"
                },
                Refusal::lines(&refusal.irreversible)
            ));
        }
        return Err(CliError::usage(message));
    }
    if text {
        println!(
            "Rollback of run {} ({} {}, started {}): {} go back to their revisions before it",
            undone.id,
            undone.command,
            undone.target,
            undone.started_at,
            crate::observe::count(changed.len(), "tenant")
        );
        if !refusal.irreversible.is_empty() {
            println!(
                "  --force: past revisions whose downgrade does not undo their upgrade:{}",
                Refusal::lines(&refusal.irreversible)
            );
        }
        if n_unread > 0 {
            println!(
                "  {} could not be read now; their workers try again (then `fleet retry`)",
                crate::observe::count(n_unread, "tenant")
            );
        }
    }
    drop(setup);
    let retry = RetryOf {
        only: changed.iter().map(|c| c.tenant_id.clone()).collect(),
        pinned: changed.into_iter().map(|c| (c.tenant_id, c.from)).collect(),
        recorded: Some(Recorded {
            command: ROLLBACK,
            target: undone.id.to_string(),
        }),
        resume: None,
    };
    // `migrate` selects by `only` (and applies --tenant, --tag and --exclude again, to the same tenants; in a run
    // shared with --run-name, --tag places this runner instead).
    migrate(
        global,
        rollback_action(undone.id.as_str()),
        select,
        run,
        route,
        Some(retry),
    )
    .await
}

/// The action of a rollback of `run` and of its retries: a downgrade whose every tenant has its target pinned.
/// The target text is what progress, the summary and metrics show; it names no revision, so a tenant that somehow
/// had no pinned target fails to plan instead of going anywhere.
fn rollback_action(run: &str) -> Action {
    Action::Downgrade(format!("before {run}"))
}
