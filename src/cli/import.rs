//! `import FORMAT` and `stamp --from FORMAT`: adopting another tool's history (see `crate::import` and
//! docs/import.md). `fleet stamp --from` builds its action here and runs through the fleet runner.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::args::{Format, GlobalArgs, ImportArgs, StampArgs, StampFromArgs};
use super::context::Ctx;
use super::error::{exec_code, CliError};
use super::output::print_json;
use crate::error::ExitCode;
use crate::executor::Session;
use crate::fleet::Action;
use crate::import::{self, ImportError, SourceFormat, StampFromError, TableRef};

fn import_error(e: ImportError) -> CliError {
    CliError::new(ExitCode::Usage, e)
}

fn table_ref(from: &StampFromArgs) -> Option<TableRef> {
    Some(TableRef {
        format: from.from?.source(),
        table: from.from_table.clone(),
    })
}

/// The directory imported files go to without `--into`: the project's first version location, else
/// `migrations`.
fn default_into(global: &GlobalArgs) -> Result<PathBuf, CliError> {
    let cwd =
        std::env::current_dir().map_err(|e| CliError::usage(format!("cannot read the current directory: {e}")))?;
    let has_project = global.config.is_some() || crate::config::find_project_file(&cwd, Path::exists).is_some();
    if !has_project {
        return Ok(PathBuf::from("migrations"));
    }
    let ctx = Ctx::load(global)?;
    Ok(ctx
        .locations
        .dirs
        .first()
        .cloned()
        .unwrap_or_else(|| ctx.script_dir.clone()))
}

/// `flotilla import FORMAT --from DIR [--into DIR]`.
pub async fn import(global: &GlobalArgs, args: ImportArgs) -> Result<ExitCode, CliError> {
    let format = args.tool.source();
    let into = match &args.into {
        Some(into) => into.clone(),
        None => default_into(global)?,
    };
    let report = match format {
        SourceFormat::Alembic => {
            let options = import::alembic::Options {
                python: args.python.clone(),
                ini: args.alembic_ini.clone(),
            };
            import::alembic::import(&args.from, &into, &options)
                .await
                .map_err(import_error)?
        }
        _ => import::import_plain(format, &args.from, &into).map_err(import_error)?,
    };
    import::write(&report).map_err(import_error)?;
    match global.format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => print_json(&report.to_json()),
    }
    Ok(ExitCode::Ok)
}

fn stamp_error(e: StampFromError) -> CliError {
    match e {
        StampFromError::Exec(e) => CliError::new(exec_code(&e), e),
        // The database's state, not the command line, is what does not fit: exit 1 as a failed tenant would.
        StampFromError::Adopt(e) => CliError::new(ExitCode::Failed, e),
    }
}

/// `flotilla stamp --from FORMAT`: one database.
pub async fn stamp(global: &GlobalArgs, args: StampArgs) -> Result<ExitCode, CliError> {
    let Some(table) = table_ref(&args.from) else {
        return Err(CliError::usage("stamp --from needs a format"));
    };
    let ctx = Ctx::load(global)?;
    let loaded = ctx.load_scripts()?;
    let client = ctx.connect().await?;
    let mut session = Session::open(&client, ctx.store.as_ref(), &ctx.exec).await?;
    let outcome = import::stamp_from(&client, &mut session, None, &loaded.graph, &table, false).await;
    let closed = session.close().await;
    let report = outcome.map_err(stamp_error)?;
    closed?;
    for ignored in &report.ignored {
        eprintln!("note: {} version {}: {}", table.name(), ignored.version, ignored.why);
    }
    let rows = crate::import::revision_rows_text(&report.to);
    match ctx.format {
        Format::Text if report.is_changed => println!(
            "Stamped from {} ({} revision(s) applied there): now at {rows}",
            table.name(),
            report.n_applied
        ),
        Format::Text => println!("Nothing to do: already at {rows}, as {} says", table.name()),
        Format::Json => print_json(&json!({
            "v": 1,
            "from": table.format,
            "table": table.name(),
            "n_applied": report.n_applied,
            "changed": report.is_changed,
            "previous": report.from,
            "current": report.to,
            "ignored": report.ignored.iter().map(|i| json!({"version": i.version, "why": i.why})).collect::<Vec<_>>(),
        })),
    }
    Ok(ExitCode::Ok)
}

/// The action of `fleet stamp`: the named revisions, or what each tenant's other tool recorded.
pub fn fleet_action(revisions: Vec<String>, from: &StampFromArgs) -> Action {
    match table_ref(from) {
        Some(table) => Action::StampFrom(table),
        None => Action::Stamp(revisions),
    }
}
