//! The command line: clap types, resolution of flags and flotilla.toml into requests, one file per command
//! family, and text/JSON rendering. The engine modules never see clap types or environment variables.

mod args;
mod authoring;
mod autogen;
mod context;
mod error;
mod fleet;
mod import;
mod inspect;
mod output;
mod run_options;
mod single;
mod watch;

pub use args::{Cli, ColorArg, Command, Format, GlobalArgs, LogFormat};
pub use error::CliError;

use crate::error::ExitCode;

/// Run one parsed command line to completion and return the exit code to use.
pub async fn run(cli: Cli, route: crate::observe::LogRoute) -> Result<ExitCode, CliError> {
    run_with(cli, route, crate::extend::Registry::standard()).await
}

/// [`run`] with extensions: `flotilla.toml`'s `revision_source`, `version_store` and `offline_renderer` are
/// looked up in `registry`. A program that registers its own implementations calls this from its `main`.
pub async fn run_with(
    mut cli: Cli,
    route: crate::observe::LogRoute,
    registry: crate::extend::Registry,
) -> Result<ExitCode, CliError> {
    cli.global.registry = registry;
    let global = &cli.global;
    let result = match cli.command {
        Command::Init(a) => authoring::init(global, a),
        Command::Revision(a) => authoring::revision(global, a).await,
        Command::Check(a) => autogen::check(global, a).await,
        Command::Merge(a) => authoring::merge(global, a),
        Command::Heads(a) => inspect::heads(global, a),
        Command::Branches(a) => inspect::branches(global, a),
        Command::Show(a) => inspect::show(global, a),
        Command::Edit(a) => inspect::edit(global, a),
        Command::EnsureVersion(a) => single::ensure_version(global, a).await,
        Command::History(a) => inspect::history(global, a).await,
        Command::Plan(a) => inspect::plan(global, a).await,
        Command::Upgrade(a) => single::migrate(global, a, crate::graph::Direction::Up).await,
        Command::Downgrade(a) => single::migrate(global, a, crate::graph::Direction::Down).await,
        Command::Current(a) => single::current(global, a).await,
        Command::Stamp(a) if a.from.from.is_some() => import::stamp(global, a).await,
        Command::Stamp(a) => single::stamp(global, a).await,
        Command::Import(a) => import::import(global, a).await,
        Command::Validate => single::validate(global).await,
        Command::Resolve => single::resolve(global).await,
        Command::Fleet(c) => fleet::dispatch(global, c, route).await,
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(&dir),
    };
    // A run that served /metrics keeps serving them for --metrics-linger, unless a signal already ended it.
    watch::linger(result.as_ref().is_ok_and(|code| *code == ExitCode::Interrupted)).await;
    result
}

/// `man DIR`: one man page per command, generated from the clap definitions.
fn man(dir: &std::path::Path) -> Result<ExitCode, CliError> {
    use clap::CommandFactory as _;
    let written = std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(Cli::command(), dir));
    written.map_err(|e| {
        CliError::usage(format!(
            "cannot write man pages to {}: {}",
            dir.display(),
            crate::observe::os_reason(&e)
        ))
    })?;
    println!(
        "Wrote the man pages to {} (try `man -l {}/flotilla.1`)",
        dir.display(),
        dir.display()
    );
    Ok(ExitCode::Ok)
}

/// `completions SHELL`: the completion script clap derives from the command tree.
fn completions(shell: clap_complete::Shell) -> Result<ExitCode, CliError> {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "flotilla", &mut std::io::stdout());
    Ok(ExitCode::Ok)
}
