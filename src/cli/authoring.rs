//! Commands that write files: init, revision, merge. They never open a database.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::args::{GlobalArgs, InitArgs, MergeArgs, RevisionArgs};
use super::context::{Ctx, Loaded};
use super::error::CliError;
use crate::config::HookCommand;
use crate::error::ExitCode;
use crate::revision::{RevisionId, RevisionMeta};
use crate::script::{self, FileNameParts, NewScript};

/// Name of the optional template for new revision bodies, inside the script directory.
pub const TEMPLATE_FILE: &str = "script.sql.tmpl";

const DEFAULT_TEMPLATE: &str = "-- flotilla:upgrade\n\n\n-- flotilla:downgrade\n\n";

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> CliError {
    move |e| CliError::new(ExitCode::Failed, anyhow::Error::new(e).context(what))
}

pub fn init(global: &GlobalArgs, args: InitArgs) -> Result<ExitCode, CliError> {
    // `init` writes the project file here, not where a search would find one.
    let config = global
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_FILE));
    if config.exists() {
        return Err(CliError::usage(format!(
            "{} already exists: not overwriting it",
            config.display()
        )));
    }
    if args.dir.exists() && args.dir.read_dir().map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(CliError::usage(format!(
            "{} exists and is not empty",
            args.dir.display()
        )));
    }
    std::fs::create_dir_all(&args.dir).map_err(io_error(format!("could not create {}", args.dir.display())))?;
    let template = args.dir.join(TEMPLATE_FILE);
    std::fs::write(&template, DEFAULT_TEMPLATE).map_err(io_error(format!("could not write {}", template.display())))?;
    let readme = args.dir.join("README.md");
    std::fs::write(
        &readme,
        "Revision files for Flotilla: one `*.sql` file per revision.\n\
         Create one with `flotilla revision -m \"message\"`.\n\
         `script.sql.tmpl` is the body every new revision starts from.\n",
    )
    .map_err(io_error(format!("could not write {}", readme.display())))?;
    let script_location = args.dir.display().to_string().replace('\\', "/");
    let body = format!(
        "# Flotilla project file. Every key is optional; see docs/configuration.md.\n\
         script_location = {script_location:?}\n\
         # url = \"postgres://app@localhost/app\"   # or --url, DATABASE_URL, PG* variables\n\
         # version_table = \"flotilla_version\"    # \"alembic_version\" adopts an Alembic-managed database\n\
         # lock_timeout = \"5s\"\n"
    );
    std::fs::write(&config, body).map_err(io_error(format!("could not write {}", config.display())))?;
    println!("Created {} with {TEMPLATE_FILE} and README.md", args.dir.display());
    println!("Wrote {} (script_location = {script_location:?})", config.display());
    println!("Next: flotilla revision -m \"first revision\"");
    Ok(ExitCode::Ok)
}

/// Parents for a new revision from `--head`: the single head by default, none for `base`.
fn parents(loaded: &Loaded, head: Option<&str>, splice: bool) -> Result<Vec<RevisionId>, CliError> {
    let heads = loaded.graph.heads();
    match head {
        Some("base") => Ok(Vec::new()),
        None | Some("head") if heads.len() > 1 => Err(CliError::usage(format!(
            "multiple heads ({}): pass --head to choose the one to build on, or merge them first with `flotilla merge -m MSG heads`",
            heads.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        None | Some("head") => Ok(heads),
        Some(spec) => {
            let ids = loaded.graph.resolve(spec, &[])?;
            for id in &ids {
                if !splice && !heads.contains(id) {
                    return Err(CliError::usage(format!(
                        "revision {id} is not a head: pass --splice to start a new branch from it"
                    )));
                }
            }
            Ok(ids)
        }
    }
}

pub async fn revision(global: &GlobalArgs, args: RevisionArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    ctx.check_writable_source("revision")?;
    let loaded = ctx.load_scripts()?;
    let down_revisions = parents(&loaded, args.head.as_deref(), args.splice)?;
    for dep in &args.depends_on {
        loaded.graph.resolve(dep, &[])?;
    }
    let meta = RevisionMeta {
        id: RevisionId::default(),
        down_revisions,
        branch_labels: args.branch_labels,
        depends_on: args.depends_on,
        message: args.message,
    };
    let dir = revision_dir(&ctx, &loaded, &meta.down_revisions, args.version_path.as_deref())?;
    if !args.autogen.autogenerate {
        write_revision(&ctx, &loaded, &dir, meta, args.rev_id, !args.no_transaction, None)?;
        return Ok(ExitCode::Ok);
    }
    let engine = crate::fleet::Engine {
        graph: loaded.graph,
        scripts: loaded.scripts,
        store: ctx.store.clone(),
        exec: ctx.exec.clone(),
        shared: loaded.shared.clone(),
    };
    let generated = super::autogen::generate(&ctx, global, &engine, &meta.down_revisions, &args.autogen).await?;
    let loaded = Loaded {
        graph: engine.graph,
        scripts: engine.scripts,
        shared: engine.shared,
    };
    let Some(rendered) = generated else {
        println!(
            "No changes detected: the desired schema matches the head; no revision written (--allow-empty writes one)"
        );
        return Ok(ExitCode::Ok);
    };
    let message = meta.message.clone();
    let body = (rendered.upgrade.as_str(), rendered.downgrade.as_str());
    let id = write_revision(&ctx, &loaded, &dir, meta, args.rev_id, !args.no_transaction, Some(body))?;
    if let Some((upgrade, downgrade)) = &rendered.concurrent {
        // Concurrent index builds cannot run in a transaction: they get a no-transaction revision of their own.
        let meta = RevisionMeta {
            id: RevisionId::default(),
            down_revisions: vec![id],
            branch_labels: Vec::new(),
            depends_on: Vec::new(),
            message: format!("{message} (concurrent indexes)"),
        };
        write_revision(&ctx, &loaded, &dir, meta, None, false, Some((upgrade, downgrade)))?;
    }
    Ok(ExitCode::Ok)
}

pub fn merge(global: &GlobalArgs, args: MergeArgs) -> Result<ExitCode, CliError> {
    let ctx = Ctx::load(global)?;
    ctx.check_writable_source("merge")?;
    let loaded = ctx.load_scripts()?;
    let mut down_revisions: Vec<RevisionId> = Vec::new();
    for spec in &args.revisions {
        for id in loaded.graph.resolve(spec, &[])? {
            if !down_revisions.contains(&id) {
                down_revisions.push(id);
            }
        }
    }
    if down_revisions.len() < 2 {
        return Err(CliError::usage("a merge needs at least two revisions to join"));
    }
    let meta = RevisionMeta {
        id: RevisionId::default(),
        down_revisions,
        branch_labels: args.branch_labels,
        depends_on: Vec::new(),
        message: args.message,
    };
    let dir = revision_dir(&ctx, &loaded, &meta.down_revisions, None)?;
    write_revision(&ctx, &loaded, &dir, meta, args.rev_id, true, None)?;
    Ok(ExitCode::Ok)
}

/// The directory a new revision's file goes to: `--version-path` (one of `version_locations`, or below one when
/// they are searched recursively), else the only location, else the directory of its first parent's file, as
/// Alembic does.
fn revision_dir(
    ctx: &Ctx,
    loaded: &Loaded,
    parents: &[RevisionId],
    version_path: Option<&Path>,
) -> Result<PathBuf, CliError> {
    let locations = &ctx.locations;
    let listed = || {
        locations
            .dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(wanted) = version_path {
        let canonical = std::fs::canonicalize(wanted)
            .map_err(|e| CliError::usage(format!("--version-path {}: {e}", wanted.display())))?;
        // The location itself, or (searched recursively) a directory below it that the loader reads: not hidden.
        let is_read = |d: PathBuf| match canonical.strip_prefix(&d) {
            Ok(below) => {
                below.as_os_str().is_empty()
                    || (locations.recursive && !below.iter().any(|c| c.to_string_lossy().starts_with('.')))
            }
            Err(_) => false,
        };
        let is_listed = locations
            .dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .any(is_read);
        if !is_listed {
            return Err(CliError::usage(format!(
                "--version-path {} is not one of version_locations ({})",
                wanted.display(),
                listed()
            )));
        }
        return Ok(wanted.to_path_buf());
    }
    if let [only] = locations.dirs.as_slice() {
        return Ok(only.clone());
    }
    match parents.first().and_then(|p| loaded.scripts.get(p)) {
        Some(parent) => Ok(parent
            .path
            .parent()
            .map_or_else(|| locations.first().to_path_buf(), Path::to_path_buf)),
        None => Err(CliError::usage(format!(
            "a new root revision with several version_locations: choose its directory with --version-path (one of {})",
            listed()
        ))),
    }
}

fn write_revision(
    ctx: &Ctx,
    loaded: &Loaded,
    dir: &Path,
    mut meta: RevisionMeta,
    rev_id: Option<String>,
    is_transactional: bool,
    body: Option<(&str, &str)>,
) -> Result<RevisionId, CliError> {
    let id = RevisionId(rev_id.unwrap_or_else(script::new_revision_id));
    if loaded.scripts.contains_key(&id) {
        return Err(CliError::usage(format!("revision {id} already exists")));
    }
    for label in &meta.branch_labels {
        if loaded.scripts.values().any(|s| s.meta.branch_labels.contains(label)) {
            return Err(CliError::usage(format!("branch label {label} is already used")));
        }
    }
    meta.id = id.clone();
    let now = chrono::Local::now().naive_local();
    let name = script::render_file_name(
        &ctx.file_template,
        &FileNameParts {
            rev: id.to_string(),
            slug: script::slugify(&meta.message),
            date: now,
        },
    )
    .map_err(|e| CliError::usage(format!("file_template: {e}")))?;
    let path = dir.join(&name);
    let mut text = script::render_script(&NewScript {
        meta,
        create_date: now.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        is_transactional,
        upgrade_sql: body.map(|b| b.0.to_string()).unwrap_or_default(),
        downgrade_sql: body.map(|b| b.1.to_string()).unwrap_or_default(),
    });
    let template = ctx.script_dir.join(TEMPLATE_FILE);
    if template.exists() && body.is_none() {
        let body =
            std::fs::read_to_string(&template).map_err(io_error(format!("could not read {}", template.display())))?;
        if let Some(cut) = text.find("-- flotilla:upgrade") {
            text.truncate(cut);
        }
        text.push_str(&body.replace("${revision}", id.as_str()));
    }
    // A broken template must not produce a file the next command refuses to load.
    script::parse_script(&path, &text)?;
    if path.exists() {
        return Err(CliError::usage(format!("{} already exists", path.display())));
    }
    std::fs::write(&path, &text).map_err(io_error(format!("could not write {}", path.display())))?;
    println!("Generating {} ... done", path.display());
    // The hooks run in the project directory, so they get the file's path from anywhere.
    let absolute = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
    run_post_write(&ctx.post_write, &absolute, &ctx.project_dir)?;
    Ok(id)
}

/// Run each `post_write` hook on the new file, from the project directory.
fn run_post_write(hooks: &[HookCommand], file: &Path, cwd: &Path) -> Result<(), CliError> {
    for hook in hooks {
        let argv = hook.argv(file);
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        let status = std::process::Command::new(program)
            .args(args)
            .current_dir(cwd)
            .status()
            .with_context(|| format!("post_write hook `{program}` could not start"))
            .map_err(|e| CliError::new(ExitCode::Failed, e))?;
        if !status.success() {
            return Err(CliError::new(
                ExitCode::Failed,
                anyhow::anyhow!(
                    "post_write hook `{}` failed ({status}) on {}",
                    argv.join(" "),
                    file.display()
                ),
            ));
        }
        println!("Running post_write hook {program} ... done");
    }
    Ok(())
}
