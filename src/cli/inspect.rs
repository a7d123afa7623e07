//! Commands that read the revision graph: heads, branches, show, history, plan. Only `history
//! --indicate-current`, a range naming `current`, and `plan` without `--current` open a database, and they only
//! read it, without the migration lock.

use serde_json::json;

use super::args::{Format, GlobalArgs, HistoryArgs, PlanArgs, PlanDirection, ShowArgs, VerboseArgs};
use super::context::{Ctx, Loaded};
use super::error::CliError;
use super::output::{print_json, revision_json, revision_line, tags};
use crate::error::ExitCode;
use crate::executor::ReadSession;
use crate::revision::RevisionId;
use anyhow::Context as _;

fn script<'a>(loaded: &'a Loaded, id: &RevisionId) -> &'a crate::script::Script {
    // The graph is built from exactly these scripts, so every id it returns has one.
    &loaded.scripts[id]
}

pub fn heads(global: &GlobalArgs, args: VerboseArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let heads = loaded.graph.heads();
    match ctx.format {
        Format::Json => print_json(&json!(heads
            .iter()
            .map(|h| revision_json(&loaded.graph, script(&loaded, h)))
            .collect::<Vec<_>>())),
        Format::Text => {
            for head in &heads {
                let s = script(&loaded, head);
                if args.verbose {
                    print_verbose(&loaded, s);
                } else {
                    println!("{head}{}", tags(&loaded.graph, head, s));
                }
            }
        }
    }
    Ok(ExitCode::Ok)
}

fn print_verbose(loaded: &Loaded, s: &crate::script::Script) {
    let m = &s.meta;
    println!("Rev: {}{}", m.id, tags(&loaded.graph, &m.id, s));
    let parents: Vec<&str> = m.down_revisions.iter().map(|r| r.as_str()).collect();
    println!(
        "Parent: {}",
        if parents.is_empty() {
            "<base>".to_string()
        } else {
            parents.join(", ")
        }
    );
    if !m.depends_on.is_empty() {
        println!("Also depends on: {}", m.depends_on.join(", "));
    }
    let children: Vec<String> = loaded
        .graph
        .children(&m.id)
        .unwrap_or_default()
        .iter()
        .map(|c| c.to_string())
        .collect();
    if !children.is_empty() {
        println!("Branches into: {}", children.join(", "));
    }
    if !m.branch_labels.is_empty() {
        println!("Branch names: {}", m.branch_labels.join(", "));
    }
    println!("Path: {}", s.path.display());
    if !s.is_transactional {
        println!("Transaction: none (no-transaction revision)");
    }
    if let Some(date) = &s.create_date {
        println!("Create date: {date}");
    }
    println!("\n    {}\n", m.message);
}

pub fn branches(global: &GlobalArgs, args: VerboseArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let points = loaded.graph.branch_points();
    match ctx.format {
        Format::Json => print_json(&json!(points
            .iter()
            .map(|p| {
                let mut v = revision_json(&loaded.graph, script(&loaded, p));
                v["children"] = json!(loaded.graph.children(p));
                v
            })
            .collect::<Vec<_>>())),
        Format::Text => {
            for point in &points {
                let s = script(&loaded, point);
                if args.verbose {
                    print_verbose(&loaded, s);
                } else {
                    println!("{}", revision_line(&loaded.graph, s));
                }
                for child in loaded.graph.children(point).unwrap_or_default() {
                    println!("    -> {}", revision_line(&loaded.graph, script(&loaded, &child)));
                }
            }
        }
    }
    Ok(ExitCode::Ok)
}

pub fn show(global: &GlobalArgs, args: ShowArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let ids = loaded.graph.resolve(&args.revision, &[])?;
    if ctx.format == Format::Json {
        // One document: the revision itself, or `revisions` when the target names several (`heads`).
        let mut docs: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| {
                let s = script(&loaded, id);
                let mut v = revision_json(&loaded.graph, s);
                v["upgrade"] = json!(s.upgrade.text);
                v["downgrade"] = json!(s.downgrade.text);
                v["upgrade_checksum"] = json!(s.upgrade.checksum);
                v
            })
            .collect();
        match docs.len() {
            1 => print_json(&docs.remove(0)),
            _ => print_json(&json!({ "revisions": docs })),
        }
        return Ok(ExitCode::Ok);
    }
    for id in &ids {
        let s = script(&loaded, id);
        match ctx.format {
            Format::Json => {}
            Format::Text => {
                print_verbose(&loaded, s);
                println!(
                    "-- upgrade\n{}\n-- downgrade\n{}",
                    s.upgrade.text.trim_end(),
                    s.downgrade.text.trim_end()
                );
            }
        }
    }
    Ok(ExitCode::Ok)
}

/// Alembic's `edit`: the one revision REV names, opened in `$VISUAL`, else `$EDITOR`.
pub fn edit(global: &GlobalArgs, args: ShowArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let ids = loaded.graph.resolve(&args.revision, &[])?;
    let [id] = ids.as_slice() else {
        return Err(CliError::usage(format!(
            "`{}` names {} revisions; edit takes one",
            args.revision,
            ids.len()
        )));
    };
    let path = &script(&loaded, id).path;
    if !path.is_file() {
        return Err(CliError::usage(format!(
            "revision {id} has no file to edit ({} does not exist; revision_source does not read files)",
            path.display()
        )));
    }
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()))
        .ok_or_else(|| CliError::usage("set VISUAL or EDITOR to the editor to open revision files with"))?;
    // As git does: the variable may hold arguments (`code --wait`), so a shell splits it.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg({
            let mut script = editor.clone();
            script.push(" \"$1\"");
            script
        })
        .arg("flotilla-edit")
        .arg(path)
        .status()
        .with_context(|| format!("could not start the editor `{}`", editor.to_string_lossy()))
        .map_err(|e| CliError::new(ExitCode::Failed, e))?;
    if !status.success() {
        return Err(CliError::new(
            ExitCode::Failed,
            anyhow::anyhow!(
                "the editor `{}` failed ({status}) on {}",
                editor.to_string_lossy(),
                path.display()
            ),
        ));
    }
    Ok(ExitCode::Ok)
}

async fn current_rows(ctx: &Ctx) -> Result<Vec<RevisionId>, CliError> {
    let client = ctx.connect().await?;
    // Read without the migration lock, so a running upgrade never makes a read wait.
    let session = ReadSession::open(&client, ctx.store.as_ref(), &ctx.exec).await?;
    let rows = session.rows().to_vec();
    session.close().await?;
    Ok(rows)
}

pub async fn history(global: &GlobalArgs, args: HistoryArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let range = args.rev_range.as_deref();
    let needs_db = args.indicate_current || range.is_some_and(|r| r.contains("current"));
    let rows = if needs_db {
        current_rows(&ctx).await?
    } else {
        Vec::new()
    };
    let walk = loaded.graph.walk(range.unwrap_or("base:heads"), &rows)?;
    match ctx.format {
        Format::Json => print_json(&json!(walk
            .iter()
            .map(|id| {
                let mut v = revision_json(&loaded.graph, script(&loaded, id));
                if args.indicate_current {
                    v["is_current"] = json!(rows.contains(id));
                }
                v
            })
            .collect::<Vec<_>>())),
        Format::Text => {
            for id in &walk {
                let s = script(&loaded, id);
                let current = if args.indicate_current && rows.contains(id) {
                    " (current)"
                } else {
                    ""
                };
                if args.verbose {
                    print_verbose(&loaded, s);
                } else {
                    println!("{}{current}", revision_line(&loaded.graph, s));
                }
            }
        }
    }
    Ok(ExitCode::Ok)
}

pub async fn plan(global: &GlobalArgs, args: PlanArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let rows = match &args.current {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(RevisionId::from)
            .collect(),
        None => current_rows(&ctx).await?,
    };
    let plan = match args.direction {
        PlanDirection::Upgrade => loaded.graph.plan_upgrade(&rows, &args.target)?,
        PlanDirection::Downgrade => loaded.graph.plan_downgrade(&rows, &args.target)?,
    };
    match ctx.format {
        Format::Json => print_json(&serde_json::to_value(&plan).unwrap_or_default()),
        Format::Text => {
            if plan.steps.is_empty() {
                println!("Nothing to do");
            }
            for step in &plan.steps {
                let message = &script(&loaded, &step.revision).meta.message;
                println!(
                    "{} {}, {message}",
                    crate::executor::direction_word(step.direction),
                    step.revision
                );
            }
        }
    }
    Ok(ExitCode::Ok)
}
