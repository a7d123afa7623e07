//! `flotilla.toml`: the project settings, named `[env.<name>]` overrides, and their resolution into a
//! [`ProjectConfig`].
//!
//! Every section, used or not, is fully checked when the file loads, so a typo in `[env.prod]` fails in
//! development too. Paths are resolved against the file's directory. Connecting is left to `executor`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::doc::{get, Doc, EnvLookup};
use super::error::{ConfigError, ProblemKind};
use super::ledger::LedgerPassword;
use super::tenants::BackoffSettings;
use super::url::{DbUrl, Located};

/// The default `file_template` (Alembic's, with seconds), defined next to its renderer.
pub const DEFAULT_FILE_TEMPLATE: &str = crate::script::DEFAULT_FILE_TEMPLATE;

/// The config file name looked up by default.
pub const DEFAULT_CONFIG_FILE: &str = "flotilla.toml";

/// Where the project file is for a command run in `cwd`: `cwd` or its nearest parent holding
/// [`DEFAULT_CONFIG_FILE`], as cargo and git find theirs.
/// The walk stops after a directory holding `.git` (a file in a git worktree), because a project file above a
/// repository belongs to something else, and at the filesystem root.
/// `exists` answers for the filesystem, so the walk itself is pure.
///
/// The path is relative to `cwd` (`flotilla.toml`, `../flotilla.toml`...), so the paths in the file, which are
/// relative to the file's directory, stay short in messages.
pub fn find_project_file(cwd: &Path, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut up = PathBuf::new();
    for dir in cwd.ancestors() {
        if exists(&dir.join(DEFAULT_CONFIG_FILE)) {
            return Some(up.join(DEFAULT_CONFIG_FILE));
        }
        if exists(&dir.join(".git")) {
            return None;
        }
        up.push("..");
    }
    None
}

const KEYS: &[&str] = &[
    "script_location",
    "version_locations",
    "recursive_version_locations",
    "file_template",
    "version_table",
    "version_table_schema",
    "history_table",
    "transaction_per",
    "lock_timeout",
    "statement_timeout",
    "lock_wait",
    "backoff_base",
    "backoff_max",
    "backoff_jitter",
    "outage_budget",
    "url",
    "tenants",
    "ledger",
    "ledger_url",
    "ledger_password_env",
    "ledger_password_file",
    "desired_schema",
    "dev_url",
    "hooks",
    "revision_source",
    "version_store",
    "offline_renderer",
    "shared_schemas",
    "reset_session",
    "shared",
    "env",
];
const ENV_KEYS: &[&str] = KEYS.split_at(KEYS.len() - 1).0;
const HOOK_KEYS: &[&str] = &["post_write", "before_each", "after_each"];
const SHARED_KEYS: &[&str] = &[
    "version_locations",
    "version_table",
    "version_table_schema",
    "history_table",
];

/// The shared revision set (`[shared]`): revisions that belong to a database rather than to a tenant (extensions,
/// shared lookup tables), applied once per database before its tenants, with a version table of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedConfig {
    pub version_locations: Vec<PathBuf>,
    pub version_table: String,
    /// Always set (default `public`), so every tenant of a database sees the same shared version table.
    pub version_table_schema: String,
    pub history_table: String,
}

/// How revisions are grouped into transactions: the executor's own setting, read from `transaction_per`.
pub use crate::executor::TransactionPer;

/// When sessions are reset, read from `reset_session`.
pub use crate::executor::ResetSession;

/// A `post_write` hook: a string runs through `sh -c`, an array runs directly. `{file}` is replaced by the path
/// of the new revision file (shell-quoted for the string form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl HookCommand {
    /// The program and arguments to run for the new revision file `file`.
    pub fn argv(&self, file: &Path) -> Vec<String> {
        let file = file.display().to_string();
        match self {
            HookCommand::Shell(cmd) => vec!["sh".into(), "-c".into(), cmd.replace("{file}", &shell_quote(&file))],
            HookCommand::Argv(args) => args.iter().map(|a| a.replace("{file}", &file)).collect(),
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `[hooks]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Run after `revision` writes a new file, in order.
    pub post_write: Vec<HookCommand>,
    /// SQL files run inside every revision's transaction, before the revision's own SQL.
    pub before_each: Vec<PathBuf>,
    /// SQL files run inside every revision's transaction, after the revision's own SQL.
    pub after_each: Vec<PathBuf>,
}

/// The resolved settings of one environment. Paths are absolute or relative to the current directory.
#[derive(Debug, Clone)]
pub struct ProjectConfig {
    /// The file these settings came from; `None` for [`ProjectConfig::defaults`].
    pub path: Option<PathBuf>,
    pub script_location: PathBuf,
    /// Directories holding revision files (Alembic's `version_locations`); default: the script location.
    pub version_locations: Vec<PathBuf>,
    /// Search the directories below `version_locations` too.
    pub recursive_version_locations: bool,
    pub file_template: String,
    pub version_table: String,
    /// `None`: the session's default schema (the first existing schema on its `search_path`).
    pub version_table_schema: Option<String>,
    pub history_table: String,
    pub transaction_per: TransactionPer,
    pub lock_timeout: Duration,
    /// `None`: the server's default.
    pub statement_timeout: Option<Duration>,
    /// How long to wait for another run's advisory lock.
    pub lock_wait: Duration,
    /// Fleet retry backoff and outage budget; the tenants file's `[defaults]` wins over these.
    pub backoff: BackoffSettings,
    pub url: Option<Located<DbUrl>>,
    /// The default tenants file for fleet commands.
    pub tenants: PathBuf,
    /// The SQLite ledger file, used unless `ledger_url` is set (see [`super::resolve_ledger`]).
    pub ledger: PathBuf,
    /// `ledger_url`: a PostgreSQL control database for the ledger (never holding a password).
    pub ledger_url: Option<Located<DbUrl>>,
    /// `ledger_password_env` or `ledger_password_file`: the PostgreSQL ledger's password.
    pub ledger_password: Option<Located<LedgerPassword>>,
    pub desired_schema: PathBuf,
    pub dev_url: Option<Located<DbUrl>>,
    pub hooks: Hooks,
    /// Names in the extension registry (`crate::extend`), checked against it by the CLI; `None`: the
    /// built-in one.
    pub revision_source: Option<Located<String>>,
    pub version_store: Option<Located<String>>,
    pub offline_renderer: Option<Located<String>>,
    /// Schemas a schema tenant's `search_path` lists after the tenant's own (default: none).
    pub shared_schemas: Vec<String>,
    /// Whether sessions are also reset before each revision (always before another tenant).
    pub reset_session: ResetSession,
    /// The shared revision set, when `[shared]` is present.
    pub shared: Option<SharedConfig>,
}

impl ProjectConfig {
    /// The settings used when there is no config file, with relative paths under `dir`.
    pub fn defaults(dir: &Path) -> ProjectConfig {
        Layer::default().resolve(None, dir)
    }
}

/// One section's settings: the top level or one `[env.<name>]` table.
#[derive(Debug, Clone, Default)]
struct Layer {
    script_location: Option<PathBuf>,
    version_locations: Option<Vec<PathBuf>>,
    recursive_version_locations: Option<bool>,
    file_template: Option<String>,
    version_table: Option<String>,
    version_table_schema: Option<String>,
    history_table: Option<String>,
    transaction_per: Option<TransactionPer>,
    lock_timeout: Option<Duration>,
    statement_timeout: Option<Duration>,
    lock_wait: Option<Duration>,
    backoff: BackoffSettings,
    url: Option<Located<DbUrl>>,
    tenants: Option<PathBuf>,
    ledger: Option<PathBuf>,
    ledger_url: Option<Located<DbUrl>>,
    ledger_password: Option<Located<LedgerPassword>>,
    desired_schema: Option<PathBuf>,
    dev_url: Option<Located<DbUrl>>,
    post_write: Option<Vec<HookCommand>>,
    before_each: Option<Vec<PathBuf>>,
    after_each: Option<Vec<PathBuf>>,
    revision_source: Option<Located<String>>,
    version_store: Option<Located<String>>,
    offline_renderer: Option<Located<String>>,
    shared_schemas: Option<Vec<String>>,
    reset_session: Option<ResetSession>,
    shared: Option<SharedConfig>,
}

impl Layer {
    /// `self` over `base`, key by key.
    fn over(&self, base: &Layer) -> Layer {
        let s = self.clone();
        let b = base.clone();
        // `ledger` and `ledger_url` are one choice: a section that sets either replaces the other's as well.
        let (ledger, ledger_url) = if s.ledger.is_some() || s.ledger_url.is_some() {
            (s.ledger, s.ledger_url)
        } else {
            (b.ledger, b.ledger_url)
        };
        Layer {
            script_location: s.script_location.or(b.script_location),
            version_locations: s.version_locations.or(b.version_locations),
            recursive_version_locations: s.recursive_version_locations.or(b.recursive_version_locations),
            file_template: s.file_template.or(b.file_template),
            version_table: s.version_table.or(b.version_table),
            version_table_schema: s.version_table_schema.or(b.version_table_schema),
            history_table: s.history_table.or(b.history_table),
            transaction_per: s.transaction_per.or(b.transaction_per),
            lock_timeout: s.lock_timeout.or(b.lock_timeout),
            statement_timeout: s.statement_timeout.or(b.statement_timeout),
            lock_wait: s.lock_wait.or(b.lock_wait),
            backoff: s.backoff.over(b.backoff),
            url: s.url.or(b.url),
            tenants: s.tenants.or(b.tenants),
            ledger,
            ledger_url,
            ledger_password: s.ledger_password.or(b.ledger_password),
            desired_schema: s.desired_schema.or(b.desired_schema),
            dev_url: s.dev_url.or(b.dev_url),
            post_write: s.post_write.or(b.post_write),
            before_each: s.before_each.or(b.before_each),
            after_each: s.after_each.or(b.after_each),
            revision_source: s.revision_source.or(b.revision_source),
            version_store: s.version_store.or(b.version_store),
            offline_renderer: s.offline_renderer.or(b.offline_renderer),
            shared_schemas: s.shared_schemas.or(b.shared_schemas),
            reset_session: s.reset_session.or(b.reset_session),
            shared: s.shared.or(b.shared),
        }
    }

    fn resolve(self, path: Option<&Path>, dir: &Path) -> ProjectConfig {
        let default_path = |p: &str| dir.join(p);
        let script_location = self.script_location.unwrap_or_else(|| default_path("migrations"));
        ProjectConfig {
            path: path.map(Path::to_path_buf),
            version_locations: self.version_locations.unwrap_or_else(|| vec![script_location.clone()]),
            recursive_version_locations: self.recursive_version_locations.unwrap_or(false),
            script_location,
            file_template: self.file_template.unwrap_or_else(|| DEFAULT_FILE_TEMPLATE.to_string()),
            version_table: self.version_table.unwrap_or_else(|| "flotilla_version".to_string()),
            version_table_schema: self.version_table_schema,
            history_table: self.history_table.unwrap_or_else(|| "flotilla_history".to_string()),
            transaction_per: self.transaction_per.unwrap_or_default(),
            lock_timeout: self.lock_timeout.unwrap_or(Duration::from_secs(5)),
            statement_timeout: self.statement_timeout,
            lock_wait: self.lock_wait.unwrap_or(Duration::from_secs(30)),
            backoff: self.backoff,
            url: self.url,
            tenants: self.tenants.unwrap_or_else(|| default_path("tenants.toml")),
            ledger: self.ledger.unwrap_or_else(|| default_path(".flotilla/ledger.db")),
            ledger_url: self.ledger_url,
            ledger_password: self.ledger_password,
            desired_schema: self.desired_schema.unwrap_or_else(|| default_path("schema")),
            dev_url: self.dev_url,
            hooks: Hooks {
                post_write: self.post_write.unwrap_or_default(),
                before_each: self.before_each.unwrap_or_default(),
                after_each: self.after_each.unwrap_or_default(),
            },
            revision_source: self.revision_source,
            version_store: self.version_store,
            offline_renderer: self.offline_renderer,
            shared_schemas: self.shared_schemas.unwrap_or_default(),
            reset_session: self.reset_session.unwrap_or_default(),
            shared: self.shared,
        }
    }
}

/// A loaded `flotilla.toml`: the top-level settings and every `[env.<name>]` override, all checked.
#[derive(Debug, Clone)]
pub struct ProjectFile {
    path: PathBuf,
    base: Layer,
    envs: BTreeMap<String, Layer>,
}

impl ProjectFile {
    /// Reads and checks `path`. `env` expands `${VAR}` in string values.
    ///
    /// Errors: [`ConfigError::Read`], or [`ConfigError::Invalid`] with every problem in the file.
    pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<ProjectFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ProjectFile::parse(path, &text, env)
    }

    /// Checks `text` as if read from `path` (which anchors relative paths and error locations).
    pub fn parse(path: &Path, text: &str, env: EnvLookup<'_>) -> Result<ProjectFile, ConfigError> {
        let mut doc = Doc::new(path, text, env);
        let root = doc.parse()?;
        let root = root.get_ref();
        doc.check_keys(root, "flotilla.toml", KEYS);
        let base = read_layer(&mut doc, root);
        let mut envs = BTreeMap::new();
        if let Some(value) = get(root, "env") {
            if let Some(table) = doc.table("env", value) {
                for (name, section) in table.iter() {
                    let section_name = format!("[env.{}]", name.get_ref());
                    if let Some(t) = doc.table(&section_name, section) {
                        doc.check_keys(t, &section_name, ENV_KEYS);
                        let layer = read_layer(&mut doc, t);
                        envs.insert(name.get_ref().to_string(), layer);
                    }
                }
            }
        }
        doc.finish()?;
        Ok(ProjectFile {
            path: path.to_path_buf(),
            base,
            envs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the `[env.<name>]` sections, sorted.
    pub fn env_names(&self) -> Vec<&str> {
        self.envs.keys().map(String::as_str).collect()
    }

    /// The settings for `env` (the top level alone when `None`), with defaults filled in.
    ///
    /// Errors: [`ConfigError::UnknownEnv`] listing the known names.
    pub fn resolve(&self, env: Option<&str>) -> Result<ProjectConfig, ConfigError> {
        let layer = match env {
            None => self.base.clone(),
            Some(name) => match self.envs.get(name) {
                Some(overlay) => overlay.over(&self.base),
                None => {
                    return Err(ConfigError::UnknownEnv {
                        name: name.to_string(),
                        known: self.envs.keys().cloned().collect(),
                    })
                }
            },
        };
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(layer.resolve(Some(&self.path), &dir))
    }
}

fn read_layer(doc: &mut Doc<'_>, table: &DeTable<'_>) -> Layer {
    let mut layer = Layer::default();
    for (key, value) in table.iter() {
        let key = key.get_ref().as_ref();
        match key {
            "script_location" => layer.script_location = path(doc, key, value),
            "version_locations" => layer.version_locations = paths(doc, key, value),
            "recursive_version_locations" => layer.recursive_version_locations = doc.boolean(key, value),
            "file_template" => layer.file_template = string(doc, key, value),
            "version_table" => layer.version_table = identifier(doc, "version_table", value),
            "version_table_schema" => layer.version_table_schema = identifier(doc, "version_table_schema", value),
            "history_table" => layer.history_table = identifier(doc, "history_table", value),
            "transaction_per" => {
                layer.transaction_per = string(doc, key, value).and_then(|s| match s.as_str() {
                    "revision" => Some(TransactionPer::Revision),
                    "run" => Some(TransactionPer::Run),
                    _ => {
                        doc.report(
                            value.span(),
                            ProblemKind::BadChoice {
                                key: "transaction_per",
                                value: s,
                                expected: "\"revision\", \"run\"",
                            },
                        );
                        None
                    }
                })
            }
            "lock_timeout" => layer.lock_timeout = doc.duration(key, value),
            "statement_timeout" => layer.statement_timeout = doc.duration(key, value),
            "lock_wait" => layer.lock_wait = doc.duration(key, value),
            "backoff_base" | "backoff_max" | "backoff_jitter" | "outage_budget" => {
                layer.backoff.read(doc, key, value);
            }
            "url" => layer.url = db_url(doc, key, value),
            "dev_url" => layer.dev_url = db_url(doc, key, value),
            "tenants" => layer.tenants = path(doc, key, value),
            "ledger" => layer.ledger = path(doc, key, value),
            "ledger_url" => layer.ledger_url = ledger_url(doc, key, value),
            "ledger_password_env" => {
                layer.ledger_password = located_string(doc, key, value).map(|s| Located {
                    value: LedgerPassword::Env(s.value),
                    at: s.at,
                })
            }
            "ledger_password_file" => {
                layer.ledger_password = path(doc, key, value).map(|p| Located {
                    value: LedgerPassword::File(p),
                    at: doc.loc(value.span().start),
                })
            }
            "desired_schema" => layer.desired_schema = path(doc, key, value),
            "hooks" => read_hooks(doc, value, &mut layer),
            "shared" => layer.shared = read_shared(doc, value),
            "revision_source" => layer.revision_source = located_string(doc, key, value),
            "version_store" => layer.version_store = located_string(doc, key, value),
            "offline_renderer" => layer.offline_renderer = located_string(doc, key, value),
            "shared_schemas" => layer.shared_schemas = identifiers(doc, "shared_schemas", value),
            "reset_session" => {
                layer.reset_session = string(doc, key, value).and_then(|s| match ResetSession::parse(&s) {
                    Some(reset) => Some(reset),
                    None => {
                        doc.report(
                            value.span(),
                            ProblemKind::BadChoice {
                                key: "reset_session",
                                value: s,
                                expected: "\"tenant\", \"revision\"",
                            },
                        );
                        None
                    }
                })
            }
            // Unknown keys were reported by `check_keys`; `env` is read by the caller.
            _ => {}
        }
    }
    if let (Some(_), Some(url)) = (get(table, "ledger"), get(table, "ledger_url")) {
        doc.report(url.span(), ProblemKind::LedgerFileAndUrl);
        layer.ledger_url = None;
    }
    if let (Some(_), Some(file)) = (get(table, "ledger_password_env"), get(table, "ledger_password_file")) {
        doc.report(file.span(), ProblemKind::LedgerPasswordEnvAndFile);
        layer.ledger_password = None;
    }
    layer
}

/// `ledger_url`: a `postgres://` url without a password (the password goes in `ledger_password_env` or
/// `ledger_password_file`, as for servers).
fn ledger_url(doc: &mut Doc<'_>, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Located<DbUrl>> {
    let url = db_url(doc, key, value)?;
    if !url.value.is_url() {
        let kind = ProblemKind::UrlScheme {
            url: url.value.redacted().to_string(),
        };
        doc.report(value.span(), kind);
        return None;
    }
    if url.value.has_password() {
        doc.report(value.span(), ProblemKind::LedgerPasswordInUrl);
        return None;
    }
    Some(url)
}

fn read_shared(doc: &mut Doc<'_>, value: &Spanned<DeValue<'_>>) -> Option<SharedConfig> {
    let table = doc.table("shared", value)?;
    doc.check_keys(table, "[shared]", SHARED_KEYS);
    let version_locations = match get(table, "version_locations") {
        Some(value) => paths(doc, "version_locations", value),
        None => {
            doc.report(
                value.span(),
                ProblemKind::MissingKey {
                    key: "version_locations",
                    section: "[shared]".into(),
                },
            );
            None
        }
    };
    let mut name = |key: &'static str, default: &str| match get(table, key) {
        Some(value) => identifier(doc, key, value),
        None => Some(default.to_string()),
    };
    let version_table = name("version_table", "flotilla_shared_version");
    let version_table_schema = name("version_table_schema", "public");
    let history_table = name("history_table", "flotilla_shared_history");
    Some(SharedConfig {
        version_locations: version_locations?,
        version_table: version_table?,
        version_table_schema: version_table_schema?,
        history_table: history_table?,
    })
}

fn read_hooks(doc: &mut Doc<'_>, value: &Spanned<DeValue<'_>>, layer: &mut Layer) {
    let Some(table) = doc.table("hooks", value) else {
        return;
    };
    doc.check_keys(table, "[hooks]", HOOK_KEYS);
    if let Some(value) = get(table, "post_write") {
        layer.post_write = read_post_write(doc, value);
    }
    for (key, slot) in [
        ("before_each", &mut layer.before_each),
        ("after_each", &mut layer.after_each),
    ] {
        if let Some(value) = get(table, key) {
            *slot = doc
                .strings(key, value)
                .map(|paths| paths.iter().map(|p| doc.resolve_path(p.get_ref())).collect());
        }
    }
}

fn read_post_write(doc: &mut Doc<'_>, value: &Spanned<DeValue<'_>>) -> Option<Vec<HookCommand>> {
    let items = doc.array("post_write", value)?;
    let mut commands = Vec::new();
    for item in items.iter() {
        match item.get_ref() {
            DeValue::String(_) => commands.extend(
                doc.string("post_write", item)
                    .map(|s| HookCommand::Shell(s.into_inner())),
            ),
            DeValue::Array(args) if args.is_empty() => doc.report(
                item.span(),
                ProblemKind::Empty {
                    key: "post_write command".to_string(),
                },
            ),
            DeValue::Array(_) => {
                if let Some(args) = doc.strings("post_write", item) {
                    commands.push(HookCommand::Argv(args.into_iter().map(Spanned::into_inner).collect()));
                }
            }
            other => doc.report(
                item.span(),
                ProblemKind::WrongType {
                    key: "post_write".to_string(),
                    expected: "a command (a string, or an array of strings)",
                    found: other.type_str(),
                },
            ),
        }
    }
    Some(commands)
}

fn string(doc: &mut Doc<'_>, key: &str, value: &Spanned<DeValue<'_>>) -> Option<String> {
    doc.string(key, value).map(Spanned::into_inner)
}

/// A non-empty string with where it was written, for a name checked later (against the extension registry).
fn located_string(doc: &mut Doc<'_>, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Located<String>> {
    let s = doc.string(key, value)?;
    if s.get_ref().is_empty() {
        doc.report(value.span(), ProblemKind::Empty { key: key.to_string() });
        return None;
    }
    Some(Located {
        at: doc.loc(value.span().start),
        value: s.into_inner(),
    })
}

fn path(doc: &mut Doc<'_>, key: &str, value: &Spanned<DeValue<'_>>) -> Option<PathBuf> {
    let s = doc.string(key, value)?;
    if s.get_ref().is_empty() {
        doc.report(value.span(), ProblemKind::Empty { key: key.to_string() });
        return None;
    }
    Some(doc.resolve_path(s.get_ref()))
}

/// A non-empty array of paths (or one path), each relative to the config file.
fn paths(doc: &mut Doc<'_>, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Vec<PathBuf>> {
    let items = doc.strings(key, value)?;
    if items.is_empty() || items.iter().any(|s| s.get_ref().is_empty()) {
        doc.report(value.span(), ProblemKind::Empty { key: key.to_string() });
        return None;
    }
    Some(items.iter().map(|s| doc.resolve_path(s.get_ref())).collect())
}

fn identifier(doc: &mut Doc<'_>, key: &'static str, value: &Spanned<DeValue<'_>>) -> Option<String> {
    let s = doc.string(key, value)?.into_inner();
    match check_identifier(&s) {
        Ok(()) => Some(s),
        Err(reason) => {
            doc.report(value.span(), ProblemKind::BadIdentifier { key, reason });
            None
        }
    }
}

/// A list of identifiers, each checked as [`identifier`] does.
fn identifiers(doc: &mut Doc<'_>, key: &'static str, value: &Spanned<DeValue<'_>>) -> Option<Vec<String>> {
    let items = doc.strings(key, value)?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match check_identifier(item.get_ref()) {
            Ok(()) => out.push(item.into_inner()),
            Err(reason) => doc.report(item.span(), ProblemKind::BadIdentifier { key, reason }),
        }
    }
    Some(out)
}

/// Checks a PostgreSQL identifier that Flotilla will always quote: non-empty, no NUL, at most 63 bytes (longer
/// names would be silently truncated by the server).
pub(crate) fn check_identifier(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        Err("it is empty")
    } else if s.contains('\0') {
        Err("it contains a NUL character")
    } else if s.len() > 63 {
        Err("it is longer than 63 bytes")
    } else {
        Ok(())
    }
}

fn db_url(doc: &mut Doc<'_>, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Located<DbUrl>> {
    let s = doc.string(key, value)?;
    match DbUrl::parse(s.get_ref()) {
        Ok(url) => Some(Located {
            value: url,
            at: doc.loc(value.span().start),
        }),
        Err(kind) => {
            doc.report(value.span(), kind);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PGHOST_PROD" => Some("prod.internal".to_string()),
            "PW" => Some("hunter2".to_string()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<ProjectFile, ConfigError> {
        ProjectFile::parse(Path::new("/p/flotilla.toml"), text, &env)
    }

    /// Parses `text` and expects exactly the problems `expected`, rendered `line:col: message`.
    fn check_err(text: &str, expected: &[&str]) {
        let err = parse(text).expect_err("should fail");
        let got: Vec<String> = err
            .problems()
            .iter()
            .map(|p| {
                assert_eq!(&*p.at.path, Path::new("/p/flotilla.toml"));
                format!("{}:{}: {}", p.at.line, p.at.column, p.kind)
            })
            .collect();
        assert_eq!(got, expected, "{err}");
    }

    /// Runs the project file search from `cwd` over a filesystem holding only `existing`.
    fn check_find(cwd: &str, existing: &[&str], expected: Option<&str>) {
        let found = find_project_file(Path::new(cwd), |p| existing.iter().any(|e| Path::new(e) == p));
        assert_eq!(
            found.as_deref(),
            expected.map(Path::new),
            "from {cwd} over {existing:?}"
        );
    }

    #[test]
    fn find_project_file_walks_up_to_a_repository_root() {
        check_find("/r/p", &["/r/p/flotilla.toml"], Some("flotilla.toml"));
        check_find(
            "/r/p/migrations/sub",
            &["/r/p/flotilla.toml"],
            Some("../../flotilla.toml"),
        );
        // The nearest file wins.
        check_find(
            "/r/p/a",
            &["/r/p/a/flotilla.toml", "/r/p/flotilla.toml"],
            Some("flotilla.toml"),
        );
        // A repository root is searched, then the walk stops.
        check_find("/r/p/a", &["/r/p/.git", "/r/p/flotilla.toml"], Some("../flotilla.toml"));
        check_find("/r/p/a", &["/r/p/.git", "/r/flotilla.toml"], None);
        check_find("/r/p", &["/r/p/.git", "/flotilla.toml"], None);
        // Without a repository, up to the filesystem root.
        check_find("/r/p", &["/flotilla.toml"], Some("../../flotilla.toml"));
        check_find("/r/p", &[], None);
    }

    #[test]
    fn defaults() {
        let cfg = parse("").expect("parse").resolve(None).expect("resolve");
        assert_eq!(cfg.script_location, Path::new("/p/migrations"));
        assert_eq!(cfg.version_locations, [Path::new("/p/migrations")]);
        assert!(!cfg.recursive_version_locations);
        assert_eq!(cfg.file_template, DEFAULT_FILE_TEMPLATE);
        assert_eq!(cfg.version_table, "flotilla_version");
        assert_eq!(cfg.version_table_schema, None);
        assert_eq!(cfg.history_table, "flotilla_history");
        assert_eq!(cfg.transaction_per, TransactionPer::Revision);
        assert_eq!(cfg.lock_timeout, Duration::from_secs(5));
        assert_eq!(cfg.statement_timeout, None);
        assert_eq!(cfg.lock_wait, Duration::from_secs(30));
        assert!(cfg.url.is_none() && cfg.dev_url.is_none());
        assert_eq!(cfg.tenants, Path::new("/p/tenants.toml"));
        assert_eq!(cfg.ledger, Path::new("/p/.flotilla/ledger.db"));
        assert_eq!(cfg.desired_schema, Path::new("/p/schema"));
        assert_eq!(cfg.hooks, Hooks::default());
        assert_eq!(
            ProjectConfig::defaults(Path::new("/p")).tenants,
            Path::new("/p/tenants.toml")
        );
    }

    #[test]
    fn every_key_and_env_overrides() {
        let text = r#"
script_location = "db/revisions"
version_locations = ["db/revisions", "/shared/billing"]
recursive_version_locations = true
file_template = "%(rev)s_%(slug)s"
version_table = "ver"
version_table_schema = "meta"
history_table = "hist"
transaction_per = "run"
lock_timeout = "2s"
statement_timeout = "10min"
lock_wait = 60
url = "postgres://app@localhost/app"
tenants = "/etc/flotilla/tenants.toml"
ledger = "state/ledger.db"
desired_schema = "schema.sql"
dev_url = "postgres://app@localhost/scratch"
backoff_max = "30s"
outage_budget = "90s"

[hooks]
post_write = ["black {file}", ["sqlfluff", "fix", "{file}"]]
before_each = "sql/before.sql"
after_each = ["sql/a.sql", "sql/b.sql"]

[env.prod]
url = "postgres://migrator@${PGHOST_PROD}/app"
lock_timeout = "1s"

[env.ci]
"#;
        let file = parse(text).expect("parse");
        assert_eq!(file.env_names(), ["ci", "prod"]);
        let cfg = file.resolve(None).expect("resolve");
        assert_eq!(cfg.script_location, Path::new("/p/db/revisions"));
        assert_eq!(
            cfg.version_locations,
            [Path::new("/p/db/revisions"), Path::new("/shared/billing")]
        );
        assert!(cfg.recursive_version_locations);
        assert_eq!(cfg.file_template, "%(rev)s_%(slug)s");
        assert_eq!(cfg.version_table_schema.as_deref(), Some("meta"));
        assert_eq!(cfg.transaction_per, TransactionPer::Run);
        assert_eq!(cfg.lock_timeout, Duration::from_secs(2));
        assert_eq!(cfg.statement_timeout, Some(Duration::from_secs(600)));
        assert_eq!(cfg.lock_wait, Duration::from_secs(60));
        assert_eq!(
            cfg.backoff,
            BackoffSettings {
                backoff_max: Some(Duration::from_secs(30)),
                outage_budget: Some(Duration::from_secs(90)),
                ..BackoffSettings::default()
            }
        );
        assert_eq!(cfg.tenants, Path::new("/etc/flotilla/tenants.toml"));
        assert_eq!(cfg.ledger, Path::new("/p/state/ledger.db"));
        let url = cfg.url.as_ref().expect("url");
        assert_eq!(url.value.redacted(), "postgres://app@localhost/app");
        assert_eq!((url.at.line, url.at.column), (13, 7));
        assert_eq!(
            cfg.hooks.post_write[0].argv(Path::new("/p/it's.sql")),
            ["sh", "-c", r"black '/p/it'\''s.sql'"]
        );
        assert_eq!(
            cfg.hooks.post_write[1].argv(Path::new("x.sql")),
            ["sqlfluff", "fix", "x.sql"]
        );
        assert_eq!(cfg.hooks.before_each, [Path::new("/p/sql/before.sql")]);
        assert_eq!(
            cfg.hooks.after_each,
            [Path::new("/p/sql/a.sql"), Path::new("/p/sql/b.sql")]
        );

        let prod = file.resolve(Some("prod")).expect("resolve prod");
        assert_eq!(
            prod.url.expect("url").value.redacted(),
            "postgres://migrator@prod.internal/app"
        );
        assert_eq!(prod.lock_timeout, Duration::from_secs(1));
        assert_eq!(prod.history_table, "hist");
        let ci = file.resolve(Some("ci")).expect("resolve ci");
        assert_eq!(ci.lock_timeout, Duration::from_secs(2));

        let err = file.resolve(Some("staging")).unwrap_err();
        assert_eq!(err.to_string(), "unknown environment `staging` (known: `ci`, `prod`)");
    }

    #[test]
    fn version_locations_problems() {
        check_err(
            "version_locations = []\nrecursive_version_locations = \"yes\"\n",
            &[
                "1:21: `version_locations` must not be empty",
                "2:31: `recursive_version_locations` must be true or false, found string",
            ],
        );
    }

    #[test]
    fn problems_are_collected_with_positions() {
        check_err(
            "script_locaton = \"m\"\nlock_timeout = \"5 parsecs\"\ntransaction_per = \"statement\"\n\
             [env.prod]\nlock_wait = true\nenv = {}\nurl = \"postgres://${NOPE}@h/d\"\n",
            &[
                "1:1: unknown key `script_locaton` in flotilla.toml (expected one of: script_location, \
                 version_locations, recursive_version_locations, file_template, version_table, version_table_schema, history_table, transaction_per, lock_timeout, \
                 statement_timeout, lock_wait, backoff_base, backoff_max, backoff_jitter, outage_budget, url, tenants, ledger, ledger_url, ledger_password_env, ledger_password_file, desired_schema, dev_url, hooks, revision_source, version_store, offline_renderer, shared_schemas, reset_session, shared, env)",
                "2:16: invalid duration `5 parsecs` for `lock_timeout`: unknown unit `parsecs` (use ms, s, m or \
                 min, h, d)",
                "3:19: `transaction_per` must be one of \"revision\", \"run\", found `statement`",
                "5:13: `lock_wait` must be a duration such as \"5s\" or \"10min\", found boolean",
                "6:1: unknown key `env` in [env.prod] (expected one of: script_location, version_locations, \
                 recursive_version_locations, file_template, version_table, version_table_schema, history_table, transaction_per, lock_timeout, \
                 statement_timeout, lock_wait, backoff_base, backoff_max, backoff_jitter, outage_budget, url, tenants, ledger, ledger_url, ledger_password_env, ledger_password_file, desired_schema, dev_url, hooks, revision_source, version_store, offline_renderer, shared_schemas, reset_session, shared)",
                "7:19: environment variable `NOPE` is not set (write `$${` for a literal `${`)",
            ],
        );
    }

    #[test]
    fn session_keys() {
        let cfg = parse("").expect("parse").resolve(None).expect("resolve");
        assert!(cfg.shared_schemas.is_empty());
        assert_eq!(cfg.reset_session, ResetSession::Tenant);
        let text = "shared_schemas = [\"public\", \"extensions\"]\nreset_session = \"revision\"\n";
        let cfg = parse(text).expect("parse").resolve(None).expect("resolve");
        assert_eq!(cfg.shared_schemas, ["public", "extensions"]);
        assert_eq!(cfg.reset_session, ResetSession::Revision);
        check_err(
            "shared_schemas = [\"\"]\nreset_session = \"statement\"",
            &[
                "1:19: `shared_schemas` is not a valid PostgreSQL identifier: it is empty",
                "2:17: `reset_session` must be one of \"tenant\", \"revision\", found `statement`",
            ],
        );
    }

    #[test]
    fn value_problems() {
        check_err(
            "version_table = \"\"",
            &["1:17: `version_table` is not a valid PostgreSQL identifier: it is empty"],
        );
        check_err(
            &format!("history_table = \"{}\"", "x".repeat(64)),
            &["1:17: `history_table` is not a valid PostgreSQL identifier: it is longer than 63 bytes"],
        );
        check_err(
            "url = \"mysql://u:hunter2@h/d\"",
            &["1:7: url `mysql://u:***@h/d` must start with postgres:// or postgresql://"],
        );
        check_err(
            "[hooks]\npost_write = [[], 3]\nbefor_each = \"x\"",
            &[
                "2:15: `post_write command` must not be empty",
                "2:19: `post_write` must be a command (a string, or an array of strings), found integer",
                "3:1: unknown key `befor_each` in [hooks] (expected one of: post_write, before_each, after_each)",
            ],
        );
        check_err(
            "hooks = 1\n[env]\nx = 2",
            &[
                "1:9: `hooks` must be a table, found integer",
                "3:5: `[env.x]` must be a table, found integer",
            ],
        );
        check_err("ledger = \"\"", &["1:10: `ledger` must not be empty"]);
        check_err(
            "a = \n",
            &["1:5: string values must be quoted, expected literal string"],
        );
    }

    #[test]
    fn no_password_in_debug() {
        let file =
            parse("url = \"postgres://u:${PW}@h/d\"\n[env.x]\ndev_url = \"host=h password=${PW}\"").expect("parse");
        let cfg = file.resolve(Some("x")).expect("resolve");
        let shown = format!("{file:?} {cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(cfg.url.expect("url").value.has_password());
    }

    #[test]
    fn shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_FILE);
        let file = ProjectFile::load(&path, &|_| None).expect("flotilla.toml");
        for name in std::iter::once(None).chain(file.env_names().into_iter().map(Some)) {
            let cfg = file.resolve(name).expect("resolve");
            assert!(cfg.tenants.ends_with("tenants.example.toml"), "{name:?}");
        }
        assert!(file.env_names().contains(&"staging"));
    }
}
