//! Command glue for autogenerate: resolve the desired schema and the dev server, run the `autogen` pipeline, and
//! print or hand back its result. `revision --autogenerate` writes files through `authoring`; `check` and
//! `fleet drift` report here.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use super::args::{AutogenArgs, CheckArgs, DesiredArgs, Format, GlobalArgs};
use super::context::Ctx;
use super::error::CliError;
use super::output::print_json;
use crate::autogen::{self, Catalog, DevServer, Op, RenderOptions, RenderedRevision, Scope};
use crate::config;
use crate::error::ExitCode;
use crate::fleet::{Engine, Server, Tenant};
use crate::revision::RevisionId;

/// Bad input (the desired schema, a revision target) is a usage error, so `check` keeps exit 1 for differences
/// and failed revisions.
fn failed(e: autogen::AutogenError) -> CliError {
    use autogen::AutogenError as E;
    let code = match &e {
        E::ReadDesired { .. }
        | E::NoDesired { .. }
        | E::LoadDesired { .. }
        | E::Plan { .. }
        | E::BadRename { .. }
        | E::RenameFailed { .. } => ExitCode::Usage,
        _ => ExitCode::Failed,
    };
    CliError::new(code, e)
}

/// `--dev-url`, else flotilla.toml `dev_url`, else the database url (`--url`, `url`, DATABASE_URL, PG*).
pub(super) fn dev_server(ctx: &Ctx, global: &GlobalArgs, flag: Option<&str>) -> Result<DevServer, CliError> {
    let resolved = if flag.is_some() || ctx.project.dev_url.is_some() {
        config::resolve_db_url(flag, ctx.project.dev_url.as_ref(), &config::process_env)?
    } else {
        config::resolve_db_url(global.url.as_deref(), ctx.project.url.as_ref(), &config::process_env)?
    };
    let url = resolved.url;
    Ok(DevServer {
        pg: url.pg_config(),
        tls: url.tls()?,
        target: url.redacted().to_string(),
    })
}

fn desired_path(ctx: &Ctx, source: &DesiredArgs) -> PathBuf {
    source
        .desired_schema
        .clone()
        .unwrap_or_else(|| ctx.project.desired_schema.clone())
}

/// The catalogs of the revisions at `targets` and of the desired schema, both built in scratch databases.
async fn head_and_desired(
    ctx: &Ctx,
    global: &GlobalArgs,
    engine: &Engine,
    targets: &[RevisionId],
    renames: &[autogen::Rename],
    source: &DesiredArgs,
) -> Result<(Catalog, Catalog), CliError> {
    let dev = dev_server(ctx, global, source.dev_url.as_deref())?;
    let path = desired_path(ctx, source);
    // Fail on a missing desired schema before creating any database.
    autogen::desired_files(&path).map_err(|e| CliError::new(ExitCode::Usage, e))?;
    let scope = Scope::database(autogen::store_tables(engine));
    let head = autogen::build_renamed(&dev, engine, targets, renames, std::slice::from_ref(&scope))
        .await
        .map_err(failed)?
        .pop()
        .unwrap_or_default();
    let desired = autogen::load_desired(&dev, &path, &scope).await.map_err(failed)?;
    Ok((head, desired))
}

/// The operations from the schema at `parents` to the desired schema, rendered; `None` when nothing differs.
pub(super) async fn generate(
    ctx: &Ctx,
    global: &GlobalArgs,
    engine: &Engine,
    parents: &[RevisionId],
    args: &AutogenArgs,
) -> Result<Option<RenderedRevision>, CliError> {
    let renames = args
        .rename
        .iter()
        .map(|r| autogen::Rename::parse(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    let (head, desired) = head_and_desired(ctx, global, engine, parents, &renames, &args.source).await?;
    let options = RenderOptions {
        allow_destructive: args.allow_destructive,
        online: args.online,
    };
    let registry = autogen::Registry::standard(&options);
    // The head was read with the renames applied: they come first, and last in the downgrade.
    let mut ops: Vec<Op> = renames.iter().map(autogen::Rename::op).collect();
    ops.extend(autogen::diff_with(&head, &desired, &registry.comparators));
    for op in &ops {
        let (verb, object) = op.summary();
        let mark = if op.is_destructive() { " (destructive)" } else { "" };
        println!("Detected {verb} {object}{mark}");
    }
    for hint in autogen::rename_suggestions(&ops) {
        println!("Hint: {hint}");
    }
    let roles = autogen::granted_roles(&ops);
    if !roles.is_empty() {
        println!(
            "Note: the revision grants privileges to {}: revisions do not create roles, so they must exist on every \
             server before it runs",
            roles.join(", ")
        );
    }
    if ops.is_empty() && !args.allow_empty {
        return Ok(None);
    }
    let rendered = autogen::render(&ops, &registry, &options);
    if rendered.n_skipped > 0 {
        println!(
            "{} destructive operation(s) written commented out: review them, or pass --allow-destructive",
            rendered.n_skipped
        );
    }
    Ok(Some(rendered))
}

fn describe(ops: &[Op]) -> Vec<serde_json::Value> {
    ops.iter()
        .map(|op| {
            let (verb, object) = op.summary();
            json!({"change": verb, "object": object, "is_destructive": op.is_destructive()})
        })
        .collect()
}

/// `flotilla check`: exit 1 with the difference when the desired schema and the head differ.
pub async fn check(global: &GlobalArgs, args: CheckArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let mut heads = loaded.graph.heads();
    heads.sort();
    let engine = Engine {
        graph: loaded.graph,
        scripts: loaded.scripts,
        store: ctx.store.clone(),
        exec: ctx.exec.clone(),
        shared: loaded.shared.clone(),
    };
    let (head, desired) = head_and_desired(&ctx, global, &engine, &heads, &[], &args.source).await?;
    let ops = autogen::diff(&head, &desired);
    let sql = autogen::upgrade_text(&ops);
    match ctx.format {
        Format::Json => print_json(&json!({
            "is_different": !ops.is_empty(),
            "heads": heads,
            "differences": describe(&ops),
            "upgrade_sql": sql,
        })),
        Format::Text if ops.is_empty() => println!("No differences: the desired schema matches the head"),
        Format::Text => {
            println!("The desired schema differs from the head ({} change(s)):", ops.len());
            for op in &ops {
                let (verb, object) = op.summary();
                println!("    {verb} {object}");
            }
            println!("\nSQL from the head to the desired schema:\n{sql}");
            println!("Write it as a revision with: flotilla revision --autogenerate -m MESSAGE");
        }
    }
    Ok(if ops.is_empty() { ExitCode::Ok } else { ExitCode::Failed })
}

/// `flotilla fleet drift` once the tenants are chosen.
pub(super) async fn drift(
    ctx: &Ctx,
    dev: DevServer,
    engine: Engine,
    servers: &[Arc<Server>],
    tenants: &[Tenant],
    concurrency: usize,
) -> Result<ExitCode, CliError> {
    let target = autogen::DriftTarget {
        engine: &engine,
        dev: &dev,
        concurrency,
    };
    let reports = autogen::drift(&target, tenants, servers).await;
    let n_drifted = reports.iter().filter(|r| r.is_drifted()).count();
    let n_failed = reports.iter().filter(|r| r.error.is_some()).count();
    match ctx.format {
        Format::Json => print_json(&json!({
            "n_tenants": reports.len(),
            "n_drifted": n_drifted,
            "n_failed": n_failed,
            "tenants": reports.iter().map(|r| json!({
                "id": r.tenant,
                "revisions": r.revisions,
                "is_drifted": r.is_drifted(),
                "differences": r.differences,
                "error": r.error,
            })).collect::<Vec<_>>(),
            "groups": autogen::group_drift(&reports),
        })),
        Format::Text => {
            println!(
                "{} tenant(s) compared: {n_drifted} drifted, {n_failed} could not be compared",
                reports.len()
            );
            // Tenants that drifted the same way print as one block: a count, the tenant list, the differences.
            for g in autogen::group_drift(&reports) {
                let at = if g.revisions.is_empty() {
                    "base".to_string()
                } else {
                    g.revisions.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(",")
                };
                let what = if g.error.is_some() {
                    "could not be compared"
                } else {
                    "drifted"
                };
                println!(
                    "\n{} tenant(s) at {at} {what}: {}",
                    g.tenants.len(),
                    g.tenants.join(", ")
                );
                if let Some(e) = &g.error {
                    println!("    error: {e}");
                }
                for d in &g.differences {
                    println!("    {} {}", d.kind, d.object);
                }
            }
        }
    }
    Ok(if n_drifted + n_failed == 0 {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}
