//! The raw command line: clap types only. `context` resolves them (with flotilla.toml and the environment)
//! into typed requests before any engine code runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_CODES_HELP;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Versioned, reversible PostgreSQL migrations on a revision graph, for one database or a fleet of tenants",
    after_long_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

// A heading of their own in `--help`, so a command's own options are not lost among them.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Database URL (else flotilla.toml `url`, DATABASE_URL, or libpq's PG* variables). Single-database commands
    /// and `fleet drift` (its scratch server) only: a fleet's databases come from the tenants file.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Project file (default: flotilla.toml in the current directory or the nearest parent, up to a repository
    /// root).
    #[arg(long, global = true, value_name = "PATH", env = "FLOTILLA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Named environment from flotilla.toml (`[env.NAME]`).
    #[arg(long, global = true, value_name = "NAME", env = "FLOTILLA_ENV")]
    pub env: Option<String>,
    /// Output format of reporting commands: text, or one JSON document with a version field "v" (docs/json.md).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Log line format (logs go to stderr; filter with RUST_LOG, e.g. RUST_LOG=flotilla=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FLOTILLA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Colour in logs, progress bars and the summary: `auto` colours a terminal unless NO_COLOR is set to a
    /// non-empty value; `always` and `never` override NO_COLOR.
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto, value_name = "WHEN")]
    pub color: ColorArg,
    /// Act on the shared revision set (`[shared]` in flotilla.toml: what belongs to a database rather than to a
    /// tenant) instead of the tenant revisions. Single-database commands only; fleet runs apply it by themselves.
    #[arg(long, global = true)]
    pub shared: bool,
    /// The extension registry the names in flotilla.toml are looked up in: the built-in one, or what a program
    /// embedding Flotilla passed to `cli::run_with`. Not a flag.
    #[arg(skip)]
    pub registry: crate::extend::Registry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[value(alias = "table")]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a migrations directory with its template and write flotilla.toml in the current directory.
    #[command(after_help = "Examples:\n  flotilla init migrations\n  flotilla init db/revisions")]
    Init(InitArgs),
    /// Write a new revision file.
    #[command(
        after_help = "Examples:\n  flotilla revision -m \"add orders\"\n  flotilla revision -m \"billing root\" --head base --branch-label billing\n  flotilla revision -m \"audit trigger\" --head audit@head --depends-on 3f2a9c"
    )]
    Revision(RevisionArgs),
    /// Write a revision that merges several heads into one.
    #[command(
        after_help = "Examples:\n  flotilla merge -m \"merge billing\" heads\n  flotilla merge -m \"join\" 3f2a 9c8b"
    )]
    Merge(MergeArgs),
    /// Upgrade to a later revision (online, or print SQL with --sql).
    #[command(
        after_help = "Examples:\n  flotilla upgrade head\n  flotilla upgrade +1\n  flotilla upgrade billing@head\n  flotilla upgrade base:head --sql > upgrade.sql"
    )]
    Upgrade(MigrateArgs),
    /// Revert to an earlier revision (online, or print SQL with --sql FROM:TO).
    #[command(
        after_help = "Examples:\n  flotilla downgrade -1\n  flotilla downgrade base\n  flotilla downgrade head:3f2a --sql"
    )]
    Downgrade(MigrateArgs),
    /// Show the database's current revisions.
    #[command(after_help = "Examples:\n  flotilla current\n  flotilla current --verbose --format json")]
    Current(CurrentArgs),
    /// List revisions, newest first.
    #[command(
        after_help = "Examples:\n  flotilla history\n  flotilla history -r base:head --verbose\n  flotilla history -r -3: --indicate-current"
    )]
    History(HistoryArgs),
    /// Show the heads of the revision graph.
    #[command(after_help = "Examples:\n  flotilla heads\n  flotilla heads --format json")]
    Heads(VerboseArgs),
    /// Show branch points.
    Branches(VerboseArgs),
    /// Show one revision.
    #[command(after_help = "Examples:\n  flotilla show head\n  flotilla show 3f2a")]
    Show(ShowArgs),
    /// Open a revision file in $VISUAL or $EDITOR.
    #[command(
        after_help = "Examples:\n  flotilla edit head\n  flotilla edit 3f2a\n  EDITOR=nano flotilla edit billing@head"
    )]
    Edit(ShowArgs),
    /// Create the version and history tables if they are missing, nothing else (or print their DDL with --sql).
    #[command(after_help = "Examples:\n  flotilla ensure-version\n  flotilla ensure-version --sql")]
    EnsureVersion(EnsureVersionArgs),
    /// Set the version table to the given revisions without running any SQL.
    #[command(
        after_help = "Examples:\n  flotilla stamp head\n  flotilla stamp base\n  flotilla stamp 3f2a --purge\n  flotilla stamp 1d9b:8a4c --sql     # offline, from a known revision: only the rows that move\n  flotilla stamp --from sqlx         # what sqlx's _sqlx_migrations says is applied (see docs/import.md)"
    )]
    Stamp(StampArgs),
    /// Write revision files from another tool's migrations (sqlx, diesel, flyway, golang-migrate, dbmate, alembic).
    #[command(
        after_help = "Examples:\n  flotilla import sqlx --from migrations-sqlx --into migrations\n  flotilla import flyway --from src/main/resources/db/migration\n  flotilla import alembic --from alembic-project --python .venv/bin/python\nThen `flotilla stamp --from FORMAT` (or `flotilla fleet stamp --from FORMAT`). See docs/import.md."
    )]
    Import(ImportArgs),
    /// Report applied revisions whose script changed since they were applied (exit 1 when any did).
    Validate,
    /// Clear a failed no-transaction revision after inspecting the database (see `current`).
    Resolve,
    /// Print the steps an upgrade or downgrade would run, without touching a database when --current is given.
    #[command(
        after_help = "Examples:\n  flotilla plan upgrade head --current \"\" --format json\n  flotilla plan downgrade base --current 3f2a,9c8b --format json"
    )]
    Plan(PlanArgs),
    /// Compare the desired schema with the revisions' head: exit 1 and print the difference when they differ.
    #[command(
        after_help = "Examples:\n  flotilla check\n  flotilla check --desired-schema db/schema --dev-url postgres://localhost/postgres"
    )]
    Check(CheckArgs),
    /// Run commands across every tenant of a fleet (see `flotilla fleet --help`).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  flotilla completions bash > /etc/bash_completion.d/flotilla\n  flotilla completions zsh > \"${fpath[1]}/_flotilla\"\n  flotilla completions fish > ~/.config/fish/completions/flotilla.fish"
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write a man page (roff) for flotilla and each of its commands into DIR, created when missing.
    #[command(
        after_help = "Examples:\n  flotilla man /usr/local/share/man/man1\n  flotilla man target/man && man -l target/man/flotilla-fleet-upgrade.1"
    )]
    Man {
        /// Directory for the pages (flotilla.1, flotilla-upgrade.1, flotilla-fleet-upgrade.1, ...).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Upgrade every selected tenant.
    #[command(
        after_help = "Examples:\n  flotilla fleet upgrade head\n  flotilla fleet upgrade head --tag tier=gold --concurrency 16 --rate 20\n  flotilla fleet upgrade head --canary 5 --max-failure-rate 2%\n  flotilla fleet upgrade head --dry-run --tenant acme"
    )]
    Upgrade(FleetMigrateArgs),
    /// Downgrade every selected tenant.
    #[command(
        after_help = "Examples:\n  flotilla fleet downgrade -1 --tenant acme\n  flotilla fleet downgrade 3f2a --tag region=eu"
    )]
    Downgrade(FleetMigrateArgs),
    /// Set every selected tenant's version rows without running SQL.
    #[command(after_help = "Examples:\n  flotilla fleet stamp head --tenant acme")]
    Stamp(FleetStampArgs),
    /// What `fleet upgrade TARGET` would run, changing nothing: one line per distinct plan with its tenant count
    /// (exit 0 when nothing would run, 10 when something would, 1 when tenants are missing or unreachable).
    #[command(
        after_help = "Examples:\n  flotilla fleet plan head\n  flotilla fleet plan head -v --tag tier=gold\n  flotilla fleet plan head --format json"
    )]
    Plan(FleetPlanArgs),
    /// How many tenants sit at each revision, and which are behind, ahead, or unreachable.
    #[command(after_help = "Examples:\n  flotilla fleet current\n  flotilla fleet current --format json")]
    Current(FleetCurrentArgs),
    /// A run's record from the ledger.
    #[command(
        after_help = "Examples:\n  flotilla fleet status\n  flotilla fleet status --failed --format json\n  flotilla fleet status --run 20261127T235212Z-3fa1"
    )]
    Status(FleetStatusArgs),
    /// Re-run the failed, interrupted and unstarted tenants of a run (the latest by default), each to the target
    /// its plan was made for, with the same options. A run in waves inherits its waves and gate and continues at
    /// the wave where the run stopped; new --waves plan its tenants afresh.
    #[command(after_help = "Examples:\n  flotilla fleet retry\n  flotilla fleet retry --concurrency 4")]
    Retry(FleetRetryArgs),
    /// Undo one run: downgrade every tenant it changed back to the revisions it had before that run, and only
    /// those. Refuses, changing nothing, when a revision on the way back cannot be undone (a backfill without
    /// reverse, no downgrade SQL) unless --force, or when a tenant moved since the run. The rollback is a run of
    /// its own (`fleet status`, `fleet retry`).
    #[command(
        after_help = "Examples:\n  flotilla fleet rollback --run 20261127T235212Z-3fa1 --dry-run\n  flotilla fleet rollback --run 20261127T235212Z-3fa1 --concurrency 4\n  flotilla fleet rollback --run 20261127T235212Z-3fa1 --exclude acme --force"
    )]
    Rollback(FleetRollbackArgs),
    /// Compare each tenant's schema with the schema at its own revision (exit 1 when any drifted).
    #[command(after_help = "Examples:\n  flotilla fleet drift\n  flotilla fleet drift --tag tier=gold --format json")]
    Drift(FleetDriftArgs),
}

/// Which tenants a fleet command touches.
#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Tenants file (default: flotilla.toml `tenants`).
    #[arg(long, value_name = "FILE", env = "FLOTILLA_TENANTS")]
    pub tenants: Option<PathBuf>,
    /// Only this tenant (repeatable).
    #[arg(long = "tenant", value_name = "ID")]
    pub tenant: Vec<String>,
    /// Only tenants with this tag (repeatable; all must match).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tag: Vec<String>,
    /// Leave this tenant out (repeatable).
    #[arg(long = "exclude", value_name = "ID")]
    pub exclude: Vec<String>,
    /// Only the failed, interrupted and unstarted tenants of the last run.
    #[arg(long)]
    pub only_failed: bool,
    /// Ledger: a SQLite file, or the postgres:// url of a control database that runners share (default:
    /// flotilla.toml `ledger_url`, else `ledger`). Read with `config::resolve_ledger`.
    #[arg(long, value_name = "PATH|URL", env = "FLOTILLA_LEDGER")]
    pub ledger: Option<PathBuf>,
}

/// How a fleet run is paced and watched.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Tenants migrated at once, fleet-wide (default: tenants file `[defaults] concurrency`).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Tenant starts per second, fleet-wide (default: `[defaults] rate`; 0 = unlimited).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Attempts after the first for transient errors (default: `[defaults] retries`).
    #[arg(long)]
    pub retries: Option<u32>,
    /// Print what would run, one line per distinct plan with its tenant count, changing nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: list every tenant under its plan.
    #[arg(short, long)]
    pub verbose: bool,
    /// Migrate this many tenants first; stop the run if any of them fails.
    #[arg(long, value_name = "N")]
    pub canary: Option<usize>,
    /// Migrate the tenants with this tag first; stop the run if any of them fails.
    #[arg(long, value_name = "KEY=VALUE")]
    pub canary_tag: Option<String>,
    /// Stop starting tenants once more than N have failed (exit 3).
    #[arg(long, value_name = "N")]
    pub max_failures: Option<usize>,
    /// Stop starting tenants once more than P% of finished tenants failed (judged after 20 finished; tenants
    /// already at the target when the run began do not count; exit 3).
    #[arg(long, value_name = "P%")]
    pub max_failure_rate: Option<String>,
    /// Migrate in cumulative waves, e.g. `1,5%,25%,100%` (counts or percentages of the selected tenants): a
    /// wave starts only when the one before finished with at most --max-failure-rate of its tenants failed
    /// (default 0%); otherwise the run halts (exit 3).
    #[arg(long, value_name = "SIZES", conflicts_with_all = ["waves_by", "canary", "canary_tag"], help_heading = "Waves")]
    pub waves: Option<String>,
    /// One wave per value of a tag: `tag=ring` (values in natural order, tenants without it last) or
    /// `ring:canary,early,main` (this order).
    #[arg(long, value_name = "tag=KEY", conflicts_with_all = ["canary", "canary_tag"], help_heading = "Waves")]
    pub waves_by: Option<String>,
    /// Wait this long between waves, e.g. 10m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, help_heading = "Waves")]
    pub wave_pause: Option<Duration>,
    /// Run this shell command before each next wave, with FLOTILLA_RUN_ID, FLOTILLA_WAVE (the wave about to
    /// start, from 2) and FLOTILLA_WAVES set; a non-zero exit halts the run (exit 3).
    #[arg(long, value_name = "CMD", help_heading = "Waves")]
    pub wave_gate: Option<String>,
    /// Progress display: bar on a terminal, plain lines otherwise (auto), or none (only the summary). `bar`
    /// without a terminal on stderr shows plain lines after a one-line note.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Write the NDJSON event stream to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub events: Option<String>,
    /// Serve Prometheus metrics on this address while the run goes (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Write metrics in the node_exporter textfile format to PATH, periodically and at the end.
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<PathBuf>,
    /// Keep serving --metrics-addr this long after the run ends, so a scrape interval cannot miss a short run
    /// (0s: stop at once; a signal ends the wait).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, default_value = "15s")]
    pub metrics_linger: Duration,
    #[command(flatten)]
    pub backfill: BackfillArgs,
    /// Backfill rows per second summed over every tenant of the run (0 = unlimited).
    #[arg(long, value_name = "ROWS")]
    pub backfill_fleet_rate: Option<f64>,
    /// Give up on a tenant after this long, e.g. 10min (default: `[defaults] tenant_timeout`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub tenant_timeout: Option<Duration>,
    /// Session lock_timeout for every step (default: `[defaults] lock_timeout`, else flotilla.toml).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub lock_timeout: Option<Duration>,
    /// Session statement_timeout for every step (default: `[defaults] statement_timeout`, else flotilla.toml).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    pub statement_timeout: Option<Duration>,
    /// Share the run with every runner given the same name: the first creates it, the others join it and claim
    /// its tenants from the ledger (use a PostgreSQL ledger for runners on several machines). With a name,
    /// `--tag` and `--server` choose which of the run's tenants this runner takes.
    #[arg(long, value_name = "NAME", help_heading = "Shared runs")]
    pub run_name: Option<String>,
    /// Take only tenants of this server (repeatable; with --run-name).
    #[arg(
        long = "server",
        value_name = "NAME",
        help_heading = "Shared runs",
        requires = "run_name"
    )]
    pub server: Vec<String>,
    /// How long this runner's claims hold without a heartbeat; another runner takes over its unfinished
    /// tenants after that (default 30s; heartbeats go every third of it).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg, help_heading = "Shared runs")]
    pub lease: Option<Duration>,
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text).map_err(|e| e.to_string())
}

/// Backfill pacing and safety, the same on `upgrade`/`downgrade` and their fleet forms.
#[derive(Debug, Args, Clone, Default)]
pub struct BackfillArgs {
    /// Backfill rows per second on each database (0 = unlimited).
    #[arg(long, value_name = "ROWS")]
    pub backfill_rate: Option<f64>,
    /// Downgrade past revisions whose backfill has no reverse (their backfilled data is not restored).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ProgressArg {
    #[default]
    Auto,
    Bar,
    Plain,
    None,
}

#[derive(Debug, Args)]
pub struct FleetMigrateArgs {
    /// Target revision (as for `upgrade`/`downgrade`; relative targets apply per tenant).
    #[arg(allow_hyphen_values = true)]
    pub target: String,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct FleetStampArgs {
    /// Revisions to stamp (ids, head, heads, base, LABEL@head...).
    #[arg(required_unless_present = "from")]
    pub revisions: Vec<String>,
    #[command(flatten)]
    pub from: StampFromArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct FleetCurrentArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Tenants read at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// List every tenant, not only the counts and the exceptions.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct FleetPlanArgs {
    /// The upgrade target: `head`, `heads`, a revision id or prefix, a label, `+N`.
    pub target: String,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Database tenants read at once (schema tenants are read in bulk, per server database).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// List the tenants of each plan.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct FleetStatusArgs {
    /// Run id, or `latest`.
    #[arg(long, default_value = "latest")]
    pub run: String,
    /// Only failed, interrupted and unstarted tenants.
    #[arg(long)]
    pub failed: bool,
    /// Exit 1 when the run shown has failed, interrupted or unstarted tenants (as `git diff --exit-code`),
    /// so a script can gate on it.
    #[arg(long)]
    pub exit_code: bool,
    /// Which of the run's tenants to show (`--only-failed` is `--failed`; `--tag` reads the tenants file).
    #[command(flatten)]
    pub select: SelectArgs,
}

#[derive(Debug, Args)]
pub struct FleetRetryArgs {
    /// The run to retry (default: the latest run in the ledger).
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<String>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct FleetRollbackArgs {
    /// The run to undo, by id (`fleet status` shows it).
    #[arg(long = "run", value_name = "ID")]
    pub run_id: String,
    /// Which of the tenants the run changed to roll back (default: all of them; `--only-failed` is refused).
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create for revision files.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RevisionArgs {
    /// Message (also the file name's slug).
    #[arg(short = 'm', long)]
    pub message: String,
    /// Use this id instead of a random one.
    #[arg(long)]
    pub rev_id: Option<String>,
    /// The head to build on (`base` starts a new root; default `head`).
    #[arg(long)]
    pub head: Option<String>,
    /// Allow --head to name a revision that is not a head (starts a new branch there).
    #[arg(long)]
    pub splice: bool,
    /// Branch label(s) for the new revision.
    #[arg(long = "branch-label")]
    pub branch_labels: Vec<String>,
    /// Revisions or labels the new one depends on (repeatable).
    #[arg(long = "depends-on")]
    pub depends_on: Vec<String>,
    /// Mark the revision no-transaction (for CREATE INDEX CONCURRENTLY and the like).
    #[arg(long)]
    pub no_transaction: bool,
    /// The directory of the new file, one of `version_locations` (default: its parent's directory, or the only
    /// location).
    #[arg(long)]
    pub version_path: Option<PathBuf>,
    #[command(flatten)]
    pub autogen: AutogenArgs,
}

/// Autogenerate: compare the desired schema with the revisions' head (see docs/autogenerate.md).
#[derive(Debug, Args, Clone, Default)]
pub struct AutogenArgs {
    /// Fill the revision with the SQL that turns the head's schema into the desired schema.
    #[arg(long)]
    pub autogenerate: bool,
    /// Write destructive statements (drops, narrowing type changes) as SQL instead of commented out.
    #[arg(long, requires = "autogenerate")]
    pub allow_destructive: bool,
    /// Online-safe forms: concurrent indexes in a second no-transaction revision, NOT NULL backfills, NOT VALID.
    #[arg(long, requires = "autogenerate")]
    pub online: bool,
    /// Write a revision even when nothing differs.
    #[arg(long, requires = "autogenerate")]
    pub allow_empty: bool,
    /// A renamed table (`old=new`, `schema.old=schema.new`) or column (`[schema.]table.old=new`), written as
    /// RENAME instead of a drop and an add; repeatable.
    #[arg(long, requires = "autogenerate", value_name = "OLD=NEW")]
    pub rename: Vec<String>,
    #[command(flatten)]
    pub source: DesiredArgs,
}

/// Where the desired schema is, and the server for scratch databases.
#[derive(Debug, Args, Clone, Default)]
pub struct DesiredArgs {
    /// Desired schema directory (`*.sql`, loaded in name order) or file (default: flotilla.toml `desired_schema`).
    #[arg(long, value_name = "DIR")]
    pub desired_schema: Option<PathBuf>,
    /// Server for scratch databases (default: flotilla.toml `dev_url`, else the database url).
    #[arg(long, value_name = "URL")]
    pub dev_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: DesiredArgs,
}

#[derive(Debug, Args)]
pub struct FleetDriftArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Tenants read at once.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Server for scratch databases (default: flotilla.toml `dev_url`, else the database url).
    #[arg(long, value_name = "URL")]
    pub dev_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Message (also the file name's slug).
    #[arg(short = 'm', long)]
    pub message: String,
    /// Use this id instead of a random one.
    #[arg(long)]
    pub rev_id: Option<String>,
    /// Branch label(s) for the merge revision.
    #[arg(long = "branch-label")]
    pub branch_labels: Vec<String>,
    /// Revisions to merge, or `heads`.
    #[arg(required = true)]
    pub revisions: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Target: an id or prefix, head, heads, base, LABEL@head, +N, -N, REV+N...; `FROM:TO` with --sql.
    #[arg(allow_hyphen_values = true)]
    pub target: String,
    /// Print the SQL instead of running it.
    #[arg(long)]
    pub sql: bool,
    #[command(flatten)]
    pub backfill: BackfillArgs,
}

#[derive(Debug, Args)]
pub struct CurrentArgs {
    /// Show each current revision's file and message, and the last version changes.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Range `[START]:[END]` (ids, prefixes, head, base, current, relative -N/+N).
    #[arg(short = 'r', long, allow_hyphen_values = true)]
    pub rev_range: Option<String>,
    /// Show each revision's header, not one line.
    #[arg(short, long)]
    pub verbose: bool,
    /// Mark the database's current revisions (needs a database).
    #[arg(short = 'i', long)]
    pub indicate_current: bool,
}

#[derive(Debug, Args)]
pub struct VerboseArgs {
    /// Show each revision's header, not one line.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct EnsureVersionArgs {
    /// Print the DDL instead of running it.
    #[arg(long)]
    pub sql: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The revision: an id or prefix, head, LABEL@head, a relative -N/+N...
    #[arg(allow_hyphen_values = true)]
    pub revision: String,
}

#[derive(Debug, Args)]
pub struct StampArgs {
    /// Revisions to stamp (ids, head, heads, base, LABEL@head...).
    #[arg(required_unless_present = "from")]
    pub revisions: Vec<String>,
    /// Delete every version row first, without checking what is there.
    #[arg(long, conflicts_with = "from")]
    pub purge: bool,
    /// Print the SQL instead of running it.
    #[arg(long, conflicts_with = "from")]
    pub sql: bool,
    #[command(flatten)]
    pub from: StampFromArgs,
}

/// `stamp --from FORMAT`: stamp what another tool's bookkeeping table says is applied (see docs/import.md).
#[derive(Debug, Args, Clone, Default)]
pub struct StampFromArgs {
    /// Read this tool's bookkeeping table (never modified) and stamp the imported revisions it has applied.
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with = "revisions")]
    pub from: Option<ImportFormat>,
    /// That tool's table name, when it is not the tool's default (e.g. golang-migrate's x-migrations-table).
    #[arg(long, value_name = "NAME", requires = "from")]
    pub from_table: Option<String>,
}

/// The tools `import` and `stamp --from` know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    Sqlx,
    Diesel,
    Flyway,
    GolangMigrate,
    Dbmate,
    Alembic,
}

impl ImportFormat {
    pub fn source(self) -> crate::import::SourceFormat {
        use crate::import::SourceFormat as F;
        match self {
            ImportFormat::Sqlx => F::Sqlx,
            ImportFormat::Diesel => F::Diesel,
            ImportFormat::Flyway => F::Flyway,
            ImportFormat::GolangMigrate => F::GolangMigrate,
            ImportFormat::Dbmate => F::Dbmate,
            ImportFormat::Alembic => F::Alembic,
        }
    }
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tool whose migrations to import.
    #[arg(value_enum, value_name = "FORMAT")]
    pub tool: ImportFormat,
    /// That tool's migration directory (for alembic: the directory holding alembic.ini).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Where to write the revision files (default: the first of flotilla.toml's version_locations when there is
    /// a flotilla.toml, else `migrations`). Existing files are never overwritten.
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
    /// alembic: the Python that runs Alembic (the project's own environment).
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python: String,
    /// alembic: the ini file, relative to --from.
    #[arg(long, value_name = "FILE", default_value = "alembic.ini")]
    pub alembic_ini: PathBuf,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Which way to plan.
    #[arg(value_enum)]
    pub direction: PlanDirection,
    /// Target revision (as for `upgrade`/`downgrade`).
    #[arg(allow_hyphen_values = true)]
    pub target: String,
    /// The version rows to plan from, comma-separated (`""` = base). Without it, read them from the database.
    #[arg(long)]
    pub current: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanDirection {
    Upgrade,
    Downgrade,
}
