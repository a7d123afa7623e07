//! The tenants file: fleet defaults, servers (how to connect), tenants listed by hand, and discovery sources.
//!
//! Loading checks everything and reports every problem at once; nothing runs on a file with a problem. Running
//! discovery queries, pooling connections and scheduling are left to `fleet`; this module only describes them.
//! Passwords never appear in the file: a server names an environment variable or a file, else libpq's password
//! file (`.pgpass`) is looked up, all read when [`Server::pg_config`] is called.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::doc::{entry, get, Doc, EnvLookup};
use super::error::{ConfigError, Location, ProblemKind};
use super::pgpass::{self, PgPassKey, PgPassLookup};
use super::project::check_identifier;
use super::split;
use super::tls::{tls_mode, ClientCert, SslMode, TlsMode, SSLMODE_CHOICES};
use super::url::DbUrl;

const KEYS: &[&str] = &["defaults", "servers", "tenants", "sources"];
const DEFAULTS_KEYS: &[&str] = &[
    "concurrency",
    "rate",
    "retries",
    "lock_timeout",
    "statement_timeout",
    "tenant_timeout",
    "backoff_base",
    "backoff_max",
    "backoff_jitter",
    "outage_budget",
];
const SERVER_KEYS: &[&str] = &[
    "name",
    "url",
    "password_env",
    "password_file",
    "max_connections",
    "sslmode",
    "ca_file",
    "cert_file",
    "key_file",
    "lock_timeout",
    "statement_timeout",
    // Health throttling (`config/health.rs`).
    "health",
    "pause_lock_waiters",
    "pause_free_connections",
    "pause_replay_lag",
    "pause_query",
    "pause_query_above",
    "replica_urls",
];
const TENANT_KEYS: &[&str] = &["id", "server", "schema", "database", "tags"];
const SOURCE_KEYS: &[&str] = &["server", "schemas_like", "databases_like", "query", "tags"];

/// The default for [`FleetDefaults::concurrency`].
pub const DEFAULT_CONCURRENCY: usize = 32;
/// The default for [`FleetDefaults::rate`].
pub const DEFAULT_RATE: f64 = 50.0;
/// The default for [`FleetDefaults::retries`].
pub const DEFAULT_RETRIES: u32 = 3;
/// The default for [`Server::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10;

/// A tenant's id: unique in the fleet, non-empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl TenantId {
    pub fn new(id: impl Into<String>) -> TenantId {
        TenantId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `[defaults]` table: fleet-wide limits and per-tenant session settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetDefaults {
    /// Tenants migrated at once, fleet-wide; at least 1.
    pub concurrency: usize,
    /// Tenant starts per second; 0 means no limit.
    pub rate: f64,
    /// Extra attempts after a transient failure (0: never retry).
    pub retries: u32,
    /// `None`: `flotilla.toml`'s `lock_timeout`.
    pub lock_timeout: Option<Duration>,
    /// `None`: `flotilla.toml`'s `statement_timeout`.
    pub statement_timeout: Option<Duration>,
    /// Limit on one tenant's whole upgrade; `None`: no limit.
    pub tenant_timeout: Option<Duration>,
    /// Retry backoff (first delay, cap, random share) and how long a server may stay away; `None`:
    /// `flotilla.toml`'s, else the built-in defaults.
    pub backoff: BackoffSettings,
}

/// Retry backoff and outage settings, as `flotilla.toml` and the tenants file's `[defaults]` give them (each
/// `None` when not given; the CLI layers them over the built-in defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackoffSettings {
    pub backoff_base: Option<Duration>,
    pub backoff_max: Option<Duration>,
    /// The share of each delay drawn at random, 0..=1.
    pub backoff_jitter: Option<f64>,
    pub outage_budget: Option<Duration>,
}

impl BackoffSettings {
    /// `self` over `base`, key by key.
    pub fn over(self, base: BackoffSettings) -> BackoffSettings {
        BackoffSettings {
            backoff_base: self.backoff_base.or(base.backoff_base),
            backoff_max: self.backoff_max.or(base.backoff_max),
            backoff_jitter: self.backoff_jitter.or(base.backoff_jitter),
            outage_budget: self.outage_budget.or(base.outage_budget),
        }
    }

    /// Reads `key` into its field when it is one of the backoff keys; false for any other key.
    pub(super) fn read(&mut self, doc: &mut Doc<'_>, key: &str, value: &Spanned<DeValue<'_>>) -> bool {
        match key {
            "backoff_base" => self.backoff_base = doc.duration(key, value),
            "backoff_max" => self.backoff_max = doc.duration(key, value),
            "outage_budget" => self.outage_budget = doc.duration(key, value),
            "backoff_jitter" => {
                self.backoff_jitter = doc.number(key, value).and_then(|n| {
                    let share = *n.get_ref();
                    if (0.0..=1.0).contains(&share) {
                        Some(share)
                    } else {
                        doc.report(
                            value.span(),
                            ProblemKind::OutOfRange {
                                key: key.to_string(),
                                value: share.to_string(),
                            },
                        );
                        None
                    }
                })
            }
            _ => return false,
        }
        true
    }
}

impl Default for FleetDefaults {
    fn default() -> Self {
        FleetDefaults {
            concurrency: DEFAULT_CONCURRENCY,
            rate: DEFAULT_RATE,
            retries: DEFAULT_RETRIES,
            lock_timeout: None,
            statement_timeout: None,
            tenant_timeout: None,
            backoff: BackoffSettings::default(),
        }
    }
}

/// Where a server's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// No explicit source: libpq's password file (`PGPASSFILE`, else `~/.pgpass`) if a line matches, else no
    /// password (trust, peer or certificate authentication).
    None,
    /// An environment variable, read by [`Server::pg_config`].
    Env(String),
    /// A file whose content (less a trailing newline) is the password, read by [`Server::pg_config`].
    File(PathBuf),
}

/// Where [`Server::pg_config_and_origin`] took a server's password from, or where it looked in vain.
/// `Display` names the source, never the password; it ends the error when the server refuses to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOrigin {
    Env(String),
    File(PathBuf),
    /// A line of libpq's password file.
    PgPass {
        path: PathBuf,
        line: usize,
    },
    /// The server sets neither `password_env` nor `password_file`, and the password file gave none.
    NotFound {
        server: String,
        pgpass: PgPassMiss,
    },
}

/// Why libpq's password file gave no password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgPassMiss {
    /// Neither `PGPASSFILE` nor `HOME` is set.
    NoPath,
    Missing(PathBuf),
    NoMatch {
        path: PathBuf,
        key: PgPassKey,
    },
    Ignored {
        path: PathBuf,
        why: pgpass::Ignored,
    },
}

impl fmt::Display for PasswordOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordOrigin::Env(var) => write!(f, "the password came from password_env `{var}`"),
            PasswordOrigin::File(path) => write!(f, "the password came from password_file `{}`", path.display()),
            PasswordOrigin::PgPass { path, line } => {
                write!(f, "the password came from `{}` line {line}", path.display())
            }
            PasswordOrigin::NotFound { server, pgpass } => {
                write!(
                    f,
                    "no password: server `{server}` sets neither password_env nor password_file, and "
                )?;
                match pgpass {
                    PgPassMiss::NoPath => f.write_str("neither PGPASSFILE nor HOME is set to find a .pgpass file"),
                    PgPassMiss::Missing(path) => write!(f, "password file `{}` does not exist", path.display()),
                    PgPassMiss::NoMatch { path, key } => {
                        write!(f, "password file `{}` has no line for {key}", path.display())
                    }
                    PgPassMiss::Ignored { path, why } => {
                        write!(f, "password file `{}` was ignored: {why}", path.display())
                    }
                }
            }
        }
    }
}

/// A `[[servers]]` entry. `Display` and `Debug` never show a password (the url cannot hold one).
#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    url: DbUrl,
    pub password: PasswordSource,
    /// Cap on connections Flotilla opens to this server; at least 1.
    pub max_connections: usize,
    /// The `sslmode` key, else the url's `sslmode`, else `prefer`.
    pub sslmode: SslMode,
    /// The `ca_file` key (relative to the tenants file), else the url's `sslrootcert`.
    pub ca_file: Option<PathBuf>,
    /// The `cert_file` and `key_file` keys (relative to the tenants file), else the url's `sslcert` and `sslkey`:
    /// a client certificate for `cert` authentication.
    pub client_cert: Option<ClientCert>,
    /// Overrides `[defaults]` for tenants on this server.
    pub lock_timeout: Option<Duration>,
    /// Overrides `[defaults]` for tenants on this server.
    pub statement_timeout: Option<Duration>,
    /// When this server's work pauses (health throttling); off unless configured.
    pub health: super::health::HealthLimits,
    /// Where the entry starts.
    pub at: Location,
    password_at: Option<Location>,
}

impl Server {
    /// The server's url (no password: loading refuses one).
    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    /// The driver configuration for `database` (the url's database when `None`), with the password read now from
    /// `password_env` (through `env`) or `password_file`, else from libpq's password file (`PGPASSFILE`, else
    /// `~/.pgpass`, both through `env`), `application_name = flotilla`, a 10s connect timeout unless the url sets
    /// one, and the negotiation implied by `sslmode`.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the unset variable or the unreadable file (never its content).
    pub fn pg_config(&self, database: Option<&str>, env: EnvLookup<'_>) -> Result<tokio_postgres::Config, ConfigError> {
        self.pg_config_and_origin(database, env).map(|(cfg, _)| cfg)
    }

    /// [`Server::pg_config`], and where the password came from or where Flotilla looked for one, for the error
    /// when the server refuses the connection.
    pub fn pg_config_and_origin(
        &self,
        database: Option<&str>,
        env: EnvLookup<'_>,
    ) -> Result<(tokio_postgres::Config, PasswordOrigin), ConfigError> {
        let mut cfg = self.url.pg_config();
        cfg.ssl_mode(self.sslmode.driver_mode());
        if let Some(db) = database {
            cfg.dbname(db);
        }
        let at = || self.password_at.clone().unwrap_or_else(|| self.at.clone());
        let origin = match &self.password {
            PasswordSource::None => {
                // The password file comes last, after every explicit source, as libpq reads it last.
                let miss = match pgpass::pgpass_path(env) {
                    None => PgPassMiss::NoPath,
                    Some(path) => {
                        let key = PgPassKey::of(&cfg);
                        match pgpass::lookup(&path, &key) {
                            PgPassLookup::Found { line, password } => {
                                cfg.password(password.expose());
                                return Ok((cfg, PasswordOrigin::PgPass { path, line }));
                            }
                            PgPassLookup::NoMatch => PgPassMiss::NoMatch { path, key },
                            PgPassLookup::Missing => PgPassMiss::Missing(path),
                            PgPassLookup::Ignored(why) => PgPassMiss::Ignored { path, why },
                        }
                    }
                };
                PasswordOrigin::NotFound {
                    server: self.name.clone(),
                    pgpass: miss,
                }
            }
            PasswordSource::Env(var) => match env(var) {
                Some(pw) => {
                    cfg.password(pw);
                    PasswordOrigin::Env(var.clone())
                }
                None => {
                    return Err(ConfigError::one(
                        at(),
                        ProblemKind::PasswordEnvUnset {
                            server: self.name.clone(),
                            var: var.clone(),
                        },
                    ))
                }
            },
            PasswordSource::File(path) => match std::fs::read_to_string(path) {
                Ok(pw) => {
                    cfg.password(pw.trim_end_matches(['\n', '\r']));
                    PasswordOrigin::File(path.clone())
                }
                Err(err) => {
                    return Err(ConfigError::one(
                        at(),
                        ProblemKind::PasswordFile {
                            server: self.name.clone(),
                            path: path.clone(),
                            err,
                        },
                    ))
                }
            },
        };
        Ok((cfg, origin))
    }

    /// The TLS connector for this server's `sslmode`, `ca_file` and client certificate (read now).
    pub fn tls(&self) -> Result<TlsMode, ConfigError> {
        tls_mode(self.sslmode, self.ca_file.as_deref(), self.client_cert.as_ref())
            .map_err(|kind| ConfigError::one(self.at.clone(), kind))
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.url)
    }
}

/// Where a tenant's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantTarget {
    /// Schema-per-tenant: a schema in the server url's database.
    Schema(String),
    /// Database-per-tenant: a database on the server.
    Database(String),
}

impl TenantTarget {
    /// `schema` or `database`.
    pub fn kind(&self) -> &'static str {
        match self {
            TenantTarget::Schema(_) => "schema",
            TenantTarget::Database(_) => "database",
        }
    }

    /// The schema or database name.
    pub fn name(&self) -> &str {
        match self {
            TenantTarget::Schema(name) | TenantTarget::Database(name) => name,
        }
    }

    /// Whether the name is a valid PostgreSQL identifier (see `check_identifier`): the reason when not.
    pub fn check(&self) -> Result<(), &'static str> {
        check_identifier(self.name())
    }

    /// What two tenants on the same server must not share: the kind and the name as PostgreSQL stores it
    /// ([`truncate_identifier`]).
    pub fn place_key(&self) -> (&'static str, &str) {
        (self.kind(), truncate_identifier(self.name()))
    }
}

/// PostgreSQL's `NAMEDATALEN - 1`: the server cuts longer identifiers to this many bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// `name` as PostgreSQL stores it: cut to [`MAX_IDENTIFIER_BYTES`] on a UTF-8 character boundary, as the server
/// does (`truncate_identifier` with `pg_mbcliplen`).
pub fn truncate_identifier(name: &str) -> &str {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name;
    }
    let mut end = MAX_IDENTIFIER_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Entries defined twice: pairs `(first, later)` of indices in `0..n` whose keys are equal, `first` the lowest
/// index with that key, in the order of `later`. `key` is `None` for an entry to leave out.
///
/// Both the tenants file (ids and places of listed tenants) and the fleet (with discovered tenants) use it, with
/// [`TenantTarget::place_key`] for places; sorting indices keeps no map of every key.
pub fn clashes<K: Ord>(n: usize, key: impl Fn(usize) -> Option<K>) -> Vec<(usize, usize)> {
    let mut order: Vec<usize> = (0..n).filter(|&i| key(i).is_some()).collect();
    // Stable: equal keys stay in index order, so the first of a run is the lowest index.
    order.sort_by_key(|&i| key(i));
    let mut pairs = Vec::new();
    let mut first = None;
    for &i in &order {
        match first {
            Some(f) if key(f) == key(i) => pairs.push((f, i)),
            _ => first = Some(i),
        }
    }
    pairs.sort_by_key(|&(_, later)| later);
    pairs
}

/// A `[[tenants]]` entry.
///
/// Kept small, as a file may list 100,000 of them: the server is an index, and entries with equal tags share one
/// map (every entry without tags shares one empty map), so the fleet can move an entry's strings and tags into
/// its tenant instead of copying them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub id: TenantId,
    /// Its server's index in [`TenantsFile::servers`].
    pub server: usize,
    pub target: TenantTarget,
    pub tags: Arc<BTreeMap<String, String>>,
    pub at: Location,
}

/// How a source discovers tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Schemas in the server url's database whose name matches this `LIKE` pattern; the schema name is the id.
    SchemasLike(String),
    /// Databases on the server whose name matches this `LIKE` pattern; the database name is the id.
    DatabasesLike(String),
    /// A query run in the server url's database. It returns an `id` column and a `schema` or a `database` column;
    /// every other column becomes a tag.
    Query(String),
}

/// A `[[sources]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub server: String,
    pub kind: SourceKind,
    /// Tags given to every tenant this source finds.
    pub tags: BTreeMap<String, String>,
    pub at: Location,
}

/// A checked tenants file.
#[derive(Debug, Clone)]
pub struct TenantsFile {
    pub path: PathBuf,
    pub defaults: FleetDefaults,
    pub servers: Vec<Server>,
    pub tenants: Vec<TenantSpec>,
    pub sources: Vec<Source>,
}

impl TenantsFile {
    /// Reads and checks `path`. `env` expands `${VAR}` in string values; passwords are not read yet.
    ///
    /// Errors: [`ConfigError::Read`], or [`ConfigError::Invalid`] with every problem in the file.
    pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<TenantsFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        TenantsFile::parse(path, &text, env)
    }

    /// Checks `text` as if read from `path` (which anchors relative paths and error locations).
    ///
    /// The `[[tenants]]` entries are parsed [`TENANTS_PER_PIECE`] at a time apart from the rest of the file when
    /// [`split`] finds that safe, so reading 100,000 listed tenants never holds the whole document's tokens and
    /// tree at once; the answer and every problem are the same as when the file is parsed whole.
    pub fn parse(path: &Path, text: &str, env: EnvLookup<'_>) -> Result<TenantsFile, ConfigError> {
        TenantsFile::parse_in_pieces(path, text, env, Some(TENANTS_PER_PIECE))
    }

    /// [`TenantsFile::parse`] with `per_piece` entries a piece; `None`: the whole document at once.
    fn parse_in_pieces(
        path: &Path,
        text: &str,
        env: EnvLookup<'_>,
        per_piece: Option<usize>,
    ) -> Result<TenantsFile, ConfigError> {
        if let Some(split) = per_piece.and_then(|n| split::split(text, "tenants", n)) {
            if let Some(file) = TenantsFile::parse_split(path, text, env, &split) {
                return file;
            }
        }
        let mut doc = Doc::new(path, text, env);
        let root = doc.parse()?;
        let root = root.get_ref();
        let mut reader = Reader::new(&mut doc, root, 0);
        for (table, span) in tables(&mut doc, root, "tenants") {
            reader.tenant(&mut doc, table, span);
        }
        reader.finish(doc, root)
    }

    /// The file read as the rest and its pieces of entries; `None` when a piece has a syntax error, or when the
    /// rest defines `tenants` too (the whole document reports both).
    fn parse_split(
        path: &Path,
        text: &str,
        env: EnvLookup<'_>,
        split: &split::Split,
    ) -> Option<Result<TenantsFile, ConfigError>> {
        let mut doc = Doc::new(path, text, env);
        let rest: String = split.rest.iter().map(|r| &text[r.clone()]).collect();
        let root = doc.parse_piece(&rest, &split.rest)?;
        let root = root.get_ref();
        if get(root, "tenants").is_some() {
            return None;
        }
        let mut reader = Reader::new(&mut doc, root, split.n_entries);
        for chunk in &split.chunks {
            let piece = doc.parse_piece(&text[chunk.clone()], std::slice::from_ref(chunk))?;
            for (table, span) in tables(&mut doc, piece.get_ref(), "tenants") {
                reader.tenant(&mut doc, table, span);
            }
        }
        doc.read_piece(&split.rest);
        Some(reader.finish(doc, root))
    }

    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// How many `[[tenants]]` entries are parsed at once (see [`TenantsFile::parse`]): a few MB of tokens and tree.
const TENANTS_PER_PIECE: usize = 1000;

/// What reading a tenants file collects: the fleet defaults and servers first, then every `[[tenants]]` entry
/// (from the whole document or a piece at a time), then, in [`Reader::finish`], the checks across entries and the
/// sources.
struct Reader {
    defaults: FleetDefaults,
    servers: Vec<Server>,
    known: Vec<String>,
    /// Each server's index in `servers`, by name.
    server_index: BTreeMap<String, usize>,
    /// One map per distinct set of tags, shared by the entries that carry it (see [`TenantSpec`]).
    tag_maps: std::collections::BTreeSet<Arc<BTreeMap<String, String>>>,
    /// Every entry with an id, in file order; an entry with another problem holds a placeholder (`is_valid`
    /// false) so that duplicate ids are still found.
    tenants: Vec<TenantSpec>,
    is_valid: Vec<bool>,
    /// Where each entry's id is, as an offset in the text.
    id_at: Vec<usize>,
}

impl Reader {
    fn new(doc: &mut Doc<'_>, root: &DeTable<'_>, n_entries: usize) -> Reader {
        doc.check_keys(root, "the tenants file", KEYS);
        let defaults = match get(root, "defaults") {
            Some(value) => read_defaults(doc, value),
            None => FleetDefaults::default(),
        };
        let mut servers = Vec::new();
        let mut server_at: BTreeMap<String, Location> = BTreeMap::new();
        for (table, span) in tables(doc, root, "servers") {
            if let Some((server, name_span)) = read_server(doc, table, span) {
                if let Some(first) = server_at.get(&server.name) {
                    let kind = ProblemKind::DuplicateServer {
                        name: server.name.clone(),
                        first: first.clone(),
                    };
                    doc.report(name_span, kind);
                } else {
                    server_at.insert(server.name.clone(), doc.loc(name_span.start));
                    servers.push(server);
                }
            }
        }
        let server_index = servers.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
        Reader {
            defaults,
            servers,
            known: server_at.into_keys().collect(),
            server_index,
            tag_maps: std::collections::BTreeSet::new(),
            tenants: Vec::with_capacity(n_entries),
            is_valid: Vec::with_capacity(n_entries),
            id_at: Vec::with_capacity(n_entries),
        }
    }

    fn tenant(&mut self, doc: &mut Doc<'_>, table: &DeTable<'_>, span: std::ops::Range<usize>) {
        let (id, tenant) = read_tenant(doc, table, span.clone(), &self.known, &self.server_index);
        // A duplicate id is reported even when the entry has other problems too.
        let Some(id) = id else { return };
        self.id_at.push(doc.offset_in_text(id.span().start));
        self.is_valid.push(tenant.is_some());
        let spec = match tenant {
            Some(mut spec) => {
                spec.tags = self.shared_tags(spec.tags);
                spec
            }
            None => TenantSpec {
                id: TenantId(id.into_inner()),
                server: 0,
                target: TenantTarget::Schema(String::new()),
                tags: self.shared_tags(Arc::default()),
                at: doc.loc(span.start),
            },
        };
        self.tenants.push(spec);
    }

    /// The map equal to `tags` that earlier entries already hold, else `tags`, kept for later entries.
    fn shared_tags(&mut self, tags: Arc<BTreeMap<String, String>>) -> Arc<BTreeMap<String, String>> {
        if let Some(shared) = self.tag_maps.get(&tags) {
            return shared.clone();
        }
        self.tag_maps.insert(tags.clone());
        tags
    }

    fn finish(mut self, mut doc: Doc<'_>, root: &DeTable<'_>) -> Result<TenantsFile, ConfigError> {
        let specs = &self.tenants;
        for (first, later) in clashes(specs.len(), |i| Some(specs[i].id.as_str())) {
            let kind = ProblemKind::DuplicateTenant {
                id: specs[later].id.to_string(),
                first: doc.loc_in_text(self.id_at[first]),
            };
            doc.report_at(doc.loc_in_text(self.id_at[later]), kind);
            self.is_valid[later] = false;
        }
        let is_valid = &self.is_valid;
        let place = |i: usize| is_valid[i].then(|| (specs[i].server, specs[i].target.place_key()));
        for (first, later) in clashes(specs.len(), place) {
            let (a, b) = (&specs[first], &specs[later]);
            let kind = ProblemKind::DuplicatePlace {
                id: b.id.to_string(),
                first_id: a.id.to_string(),
                first: a.at.clone(),
                server: self.servers[b.server].name.clone(),
                kind: b.target.kind(),
                names: [a.target.name().to_string(), b.target.name().to_string()],
            };
            doc.report_at(doc.loc_in_text(self.id_at[later]), kind);
        }
        let mut sources = Vec::new();
        for (table, span) in tables(&mut doc, root, "sources") {
            sources.extend(read_source(&mut doc, table, span, &self.known));
        }
        let path = doc.path.to_path_buf();
        doc.finish()?;
        // In place: a copy of the list would double the peak.
        let mut flags = self.is_valid.iter();
        self.tenants.retain(|_| flags.next().copied().unwrap_or(false));
        self.tenants.shrink_to_fit();
        Ok(TenantsFile {
            path,
            defaults: self.defaults,
            servers: self.servers,
            tenants: self.tenants,
            sources,
        })
    }
}

/// The tables of the array-of-tables `key`, with their spans.
fn tables<'t, 'i>(
    doc: &mut Doc<'_>,
    root: &'t DeTable<'i>,
    key: &str,
) -> Vec<(&'t DeTable<'i>, std::ops::Range<usize>)> {
    let Some(value) = get(root, key) else {
        return Vec::new();
    };
    let Some(items) = doc.array(key, value) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items.iter() {
        if let Some(t) = doc.table(&format!("{key} entry"), item) {
            out.push((t, item.span()));
        }
    }
    out
}

fn read_defaults(doc: &mut Doc<'_>, value: &Spanned<DeValue<'_>>) -> FleetDefaults {
    let mut d = FleetDefaults::default();
    let Some(table) = doc.table("defaults", value) else {
        return d;
    };
    doc.check_keys(table, "[defaults]", DEFAULTS_KEYS);
    if let Some(v) = get(table, "concurrency") {
        d.concurrency = at_least_one(doc, "concurrency", v).unwrap_or(d.concurrency);
    }
    if let Some(v) = get(table, "rate") {
        if let Some(rate) = doc.number("rate", v) {
            if *rate.get_ref() >= 0.0 {
                d.rate = *rate.get_ref();
            } else {
                let value = *rate.get_ref();
                doc.report(v.span(), ProblemKind::Negative { key: "rate", value });
            }
        }
    }
    if let Some(v) = get(table, "retries") {
        if let Some(n) = doc.integer("retries", v) {
            match u32::try_from(*n.get_ref()) {
                Ok(n) => d.retries = n,
                Err(_) => doc.report(
                    v.span(),
                    ProblemKind::OutOfRange {
                        key: "retries".to_string(),
                        value: n.get_ref().to_string(),
                    },
                ),
            }
        }
    }
    if let Some(v) = get(table, "lock_timeout") {
        d.lock_timeout = doc.duration("lock_timeout", v);
    }
    if let Some(v) = get(table, "statement_timeout") {
        d.statement_timeout = doc.duration("statement_timeout", v);
    }
    if let Some(v) = get(table, "tenant_timeout") {
        d.tenant_timeout = doc.duration("tenant_timeout", v);
    }
    for key in ["backoff_base", "backoff_max", "backoff_jitter", "outage_budget"] {
        if let Some(v) = get(table, key) {
            d.backoff.read(doc, key, v);
        }
    }
    d
}

fn at_least_one(doc: &mut Doc<'_>, key: &'static str, value: &Spanned<DeValue<'_>>) -> Option<usize> {
    let n = doc.integer(key, value)?;
    match usize::try_from(*n.get_ref()) {
        Ok(0) => {
            doc.report(value.span(), ProblemKind::Zero { key });
            None
        }
        Ok(n) => Some(n),
        Err(_) => {
            doc.report(
                value.span(),
                ProblemKind::OutOfRange {
                    key: key.to_string(),
                    value: n.get_ref().to_string(),
                },
            );
            None
        }
    }
}

/// A required string key; reports it missing at the table's start.
fn required(
    doc: &mut Doc<'_>,
    table: &DeTable<'_>,
    span: &std::ops::Range<usize>,
    key: &'static str,
    section: &str,
) -> Option<Spanned<String>> {
    let Some(value) = get(table, key) else {
        doc.report(
            span.clone(),
            ProblemKind::MissingKey {
                key,
                section: section.to_string(),
            },
        );
        return None;
    };
    let s = doc.string(key, value)?;
    if s.get_ref().is_empty() {
        doc.report(value.span(), ProblemKind::Empty { key: key.to_string() });
        return None;
    }
    Some(s)
}

fn optional_string(doc: &mut Doc<'_>, table: &DeTable<'_>, key: &str) -> Option<Spanned<String>> {
    let value = get(table, key)?;
    let s = doc.string(key, value)?;
    if s.get_ref().is_empty() {
        doc.report(value.span(), ProblemKind::Empty { key: key.to_string() });
        return None;
    }
    Some(s)
}

fn read_server(
    doc: &mut Doc<'_>,
    table: &DeTable<'_>,
    span: std::ops::Range<usize>,
) -> Option<(Server, std::ops::Range<usize>)> {
    let section = "[[servers]]";
    doc.check_keys(table, section, SERVER_KEYS);
    let name = required(doc, table, &span, "name", section);
    let url = required(doc, table, &span, "url", section);
    let server_name = name.as_ref().map_or("?", |n| n.get_ref().as_str()).to_string();

    let url = url.and_then(|url| match DbUrl::parse(url.get_ref()) {
        Ok(parsed) if !parsed.is_url() => {
            let redacted = parsed.redacted().to_string();
            doc.report(url.span(), ProblemKind::UrlScheme { url: redacted });
            None
        }
        Ok(parsed) if parsed.has_password() => {
            let kind = ProblemKind::PasswordInUrl {
                server: server_name.clone(),
            };
            doc.report(url.span(), kind);
            None
        }
        Ok(parsed) => Some(parsed),
        Err(kind) => {
            doc.report(url.span(), kind);
            None
        }
    });

    let password_env = optional_string(doc, table, "password_env");
    let password_file = optional_string(doc, table, "password_file");
    let (password, password_at) = match (password_env, password_file) {
        (Some(_), Some(file)) => {
            doc.report(
                file.span(),
                ProblemKind::PasswordEnvAndFile {
                    server: server_name.clone(),
                },
            );
            (PasswordSource::None, None)
        }
        (Some(var), None) => (
            PasswordSource::Env(var.get_ref().clone()),
            Some(doc.loc(var.span().start)),
        ),
        (None, Some(file)) => (
            PasswordSource::File(doc.resolve_path(file.get_ref())),
            Some(doc.loc(file.span().start)),
        ),
        (None, None) => (PasswordSource::None, None),
    };

    let max_connections = get(table, "max_connections")
        .and_then(|v| at_least_one(doc, "max_connections", v))
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let sslmode = get(table, "sslmode").and_then(|v| {
        let s = doc.string("sslmode", v)?;
        let mode = SslMode::parse(s.get_ref());
        if mode.is_none() {
            let kind = ProblemKind::BadChoice {
                key: "sslmode",
                value: s.into_inner(),
                expected: SSLMODE_CHOICES,
            };
            doc.report(v.span(), kind);
        }
        mode
    });
    let ca_file = optional_string(doc, table, "ca_file").map(|p| doc.resolve_path(p.get_ref()));
    let cert_key =
        |doc: &mut Doc<'_>, key: &str| optional_string(doc, table, key).map(|p| doc.resolve_path(p.get_ref()));
    let cert_file = cert_key(doc, "cert_file");
    let key_file = cert_key(doc, "key_file");
    let lock_timeout = get(table, "lock_timeout").and_then(|v| doc.duration("lock_timeout", v));
    let statement_timeout = get(table, "statement_timeout").and_then(|v| doc.duration("statement_timeout", v));
    let health = super::health::read(doc, table, &server_name);

    let name = name?;
    let url = url?;
    let (url_cert, url_key) = url.client_files();
    let from_url = |p: Option<&Path>| p.map(|p| doc.resolve_path(&p.to_string_lossy()));
    let ca_file = ca_file.or_else(|| from_url(url.ca_file()));
    let client_cert = match ClientCert::pair(
        cert_file.or_else(|| from_url(url_cert)),
        key_file.or_else(|| from_url(url_key)),
        ("cert_file (or the url's sslcert)", "key_file (or sslkey)"),
    ) {
        Ok(client_cert) => client_cert,
        Err(kind) => {
            doc.report(span.clone(), kind);
            None
        }
    };
    Some((
        Server {
            name: name.get_ref().clone(),
            sslmode: sslmode.or(url.sslmode()).unwrap_or_default(),
            ca_file,
            client_cert,
            url,
            password,
            max_connections,
            lock_timeout,
            statement_timeout,
            health,
            at: doc.loc(span.start),
            password_at,
        },
        name.span(),
    ))
}

fn check_server(doc: &mut Doc<'_>, server: &Spanned<String>, known: &[String]) -> bool {
    if known.contains(server.get_ref()) {
        return true;
    }
    let kind = ProblemKind::UnknownServer {
        name: server.get_ref().clone(),
        known: known.to_vec(),
    };
    doc.report(server.span(), kind);
    false
}

fn read_tags(doc: &mut Doc<'_>, table: &DeTable<'_>) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let Some(value) = get(table, "tags") else {
        return tags;
    };
    let Some(t) = doc.table("tags", value) else {
        return tags;
    };
    for (key, value) in t.iter() {
        let text = match value.get_ref() {
            DeValue::String(_) => doc.string(key.get_ref(), value).map(Spanned::into_inner),
            DeValue::Integer(n) => Some(n.to_string()),
            DeValue::Boolean(b) => Some(b.to_string()),
            other => {
                let kind = ProblemKind::WrongType {
                    key: format!("tags.{}", key.get_ref()),
                    expected: "a string, integer or boolean",
                    found: other.type_str(),
                };
                doc.report(value.span(), kind);
                None
            }
        };
        if let Some(text) = text {
            tags.insert(key.get_ref().to_string(), text);
        }
    }
    tags
}

fn read_tenant(
    doc: &mut Doc<'_>,
    table: &DeTable<'_>,
    span: std::ops::Range<usize>,
    known: &[String],
    server_index: &BTreeMap<String, usize>,
) -> (Option<Spanned<String>>, Option<TenantSpec>) {
    let section = "[[tenants]]";
    doc.check_keys(table, section, TENANT_KEYS);
    let id = required(doc, table, &span, "id", section);
    let server = required(doc, table, &span, "server", section);
    let server = server.filter(|s| check_server(doc, s, known));
    let id_text = id.as_ref().map_or("?", |i| i.get_ref().as_str()).to_string();
    let schema = entry(table, "schema");
    let database = entry(table, "database");
    let target = match (schema, database) {
        (Some(_), Some((db_key, _))) => {
            doc.report(db_key.span(), ProblemKind::TenantBothTargets { id: id_text });
            None
        }
        (None, None) => {
            doc.report(span.clone(), ProblemKind::TenantNoTarget { id: id_text });
            None
        }
        (Some((_, v)), None) => identifier(doc, "schema", v).map(TenantTarget::Schema),
        (None, Some((_, v))) => identifier(doc, "database", v).map(TenantTarget::Database),
    };
    let tags = read_tags(doc, table);
    let spec = match (&id, server.and_then(|s| server_index.get(s.get_ref()).copied()), target) {
        (Some(id), Some(server), Some(target)) => Some(TenantSpec {
            id: TenantId(id.get_ref().clone()),
            server,
            target,
            tags: Arc::new(tags),
            at: doc.loc(span.start),
        }),
        _ => None,
    };
    (id, spec)
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

fn read_source(
    doc: &mut Doc<'_>,
    table: &DeTable<'_>,
    span: std::ops::Range<usize>,
    known: &[String],
) -> Option<Source> {
    let section = "[[sources]]";
    doc.check_keys(table, section, SOURCE_KEYS);
    let server = required(doc, table, &span, "server", section);
    let server_ok = server.as_ref().is_some_and(|s| check_server(doc, s, known));
    let kinds: Vec<&'static str> = ["schemas_like", "databases_like", "query"]
        .into_iter()
        .filter(|k| get(table, k).is_some())
        .collect();
    let kind = match kinds.as_slice() {
        [key] => optional_string(doc, table, key).map(|s| match *key {
            "schemas_like" => SourceKind::SchemasLike(s.into_inner()),
            "databases_like" => SourceKind::DatabasesLike(s.into_inner()),
            _ => SourceKind::Query(s.into_inner()),
        }),
        _ => {
            // Point at the second kind key when there are several, else at the entry.
            let at = kinds
                .get(1)
                .and_then(|k| entry(table, k))
                .map_or(span.clone(), |(k, _)| k.span());
            doc.report(at, ProblemKind::SourceKind { found: kinds });
            None
        }
    };
    let tags = read_tags(doc, table);
    let server = server.filter(|_| server_ok)?;
    Some(Source {
        server: server.into_inner(),
        kind: kind?,
        tags,
        at: doc.loc(span.start),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "EU1_PG_PASSWORD" => Some("hunter2".to_string()),
            "DB_HOST" => Some("db-eu-1.internal".to_string()),
            _ => None,
        }
    }

    const SERVER: &str = "[[servers]]\nname = \"eu-1\"\nurl = \"postgres://migrator@h/app\"\n";

    fn parse(text: &str) -> Result<TenantsFile, ConfigError> {
        TenantsFile::parse(Path::new("/fleet/tenants.toml"), text, &env)
    }

    /// Parses `text` and expects exactly the problems `expected`, rendered `line:col: message`.
    fn check_err(text: &str, expected: &[&str]) {
        let err = parse(text).expect_err("should fail");
        let got: Vec<String> = err
            .problems()
            .iter()
            .map(|p| format!("{}:{}: {}", p.at.line, p.at.column, p.kind))
            .collect();
        assert_eq!(got, expected, "{err}");
    }

    #[test]
    fn full_file() {
        let text = r#"
[defaults]
concurrency = 8
rate = 2.5
retries = 0
lock_timeout = "2s"
statement_timeout = "10min"
tenant_timeout = "30min"
backoff_base = "500ms"
backoff_jitter = 0.5
outage_budget = "2min"

[[servers]]
name = "eu-1"
url = "postgres://migrator@${DB_HOST}:5432/app"
password_env = "EU1_PG_PASSWORD"
max_connections = 16
sslmode = "verify-full"
ca_file = "certs/eu-1-ca.pem"
lock_timeout = "1s"

[[servers]]
name = "us-1"
url = "postgresql://migrator@us/app?sslmode=require&sslrootcert=/etc/ca.pem"
password_file = "secrets/us-1"

[[tenants]]
id = "acme"
server = "eu-1"
schema = "tenant_acme"
tags = { tier = "gold", region = "eu", seats = 40, trial = false }

[[tenants]]
id = "globex"
server = "us-1"
database = "tenant_globex"

[[sources]]
server = "eu-1"
schemas_like = "tenant_%"

[[sources]]
server = "us-1"
databases_like = "tenant_%"
tags = { discovered = "yes" }

[[sources]]
server = "eu-1"
query = "SELECT id, schema AS schema, tier FROM catalog.tenants WHERE active"
"#;
        let file = parse(text).expect("parse");
        assert_eq!(
            file.defaults,
            FleetDefaults {
                concurrency: 8,
                rate: 2.5,
                retries: 0,
                lock_timeout: Some(Duration::from_secs(2)),
                statement_timeout: Some(Duration::from_secs(600)),
                tenant_timeout: Some(Duration::from_secs(1800)),
                backoff: BackoffSettings {
                    backoff_base: Some(Duration::from_millis(500)),
                    backoff_max: None,
                    backoff_jitter: Some(0.5),
                    outage_budget: Some(Duration::from_secs(120)),
                },
            }
        );
        let eu = file.server("eu-1").expect("eu-1");
        assert_eq!(eu.to_string(), "eu-1 (postgres://migrator@db-eu-1.internal:5432/app)");
        assert_eq!(eu.password, PasswordSource::Env("EU1_PG_PASSWORD".into()));
        assert_eq!(eu.max_connections, 16);
        assert_eq!(eu.sslmode, SslMode::VerifyFull);
        assert_eq!(eu.ca_file.as_deref(), Some(Path::new("/fleet/certs/eu-1-ca.pem")));
        assert_eq!(eu.lock_timeout, Some(Duration::from_secs(1)));
        assert_eq!((eu.at.line, eu.at.column), (13, 1));
        let us = file.server("us-1").expect("us-1");
        assert_eq!(us.password, PasswordSource::File("/fleet/secrets/us-1".into()));
        assert_eq!(us.sslmode, SslMode::Require);
        assert_eq!(us.ca_file.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert_eq!(us.max_connections, DEFAULT_MAX_CONNECTIONS);

        assert_eq!(file.tenants.len(), 2);
        let acme = &file.tenants[0];
        assert_eq!(acme.id, TenantId::new("acme"));
        assert_eq!(acme.target, TenantTarget::Schema("tenant_acme".into()));
        assert_eq!(acme.tags["tier"], "gold");
        assert_eq!(acme.tags["seats"], "40");
        assert_eq!(acme.tags["trial"], "false");
        assert_eq!(file.tenants[1].target, TenantTarget::Database("tenant_globex".into()));
        let kinds: Vec<&SourceKind> = file.sources.iter().map(|s| &s.kind).collect();
        assert_eq!(
            kinds,
            [
                &SourceKind::SchemasLike("tenant_%".into()),
                &SourceKind::DatabasesLike("tenant_%".into()),
                &SourceKind::Query("SELECT id, schema AS schema, tier FROM catalog.tenants WHERE active".into()),
            ]
        );
        assert_eq!(file.sources[1].tags["discovered"], "yes");
    }

    #[test]
    fn defaults_when_empty() {
        let file = parse("").expect("parse");
        assert_eq!(file.defaults, FleetDefaults::default());
        assert!(file.servers.is_empty() && file.tenants.is_empty() && file.sources.is_empty());
    }

    #[test]
    fn structural_problems() {
        check_err(
            "tenant = 1\n[defaults]\nconcurency = 3\n[[servers]]\nname = \"a\"\nurl = \"postgres://h/d\"\nport = 1\n",
            &[
                "1:1: unknown key `tenant` in the tenants file (expected one of: defaults, servers, tenants, sources)",
                "3:1: unknown key `concurency` in [defaults] (expected one of: concurrency, rate, retries, \
                 lock_timeout, statement_timeout, tenant_timeout, backoff_base, backoff_max, backoff_jitter, \
                 outage_budget)",
                "7:1: unknown key `port` in [[servers]] (expected one of: name, url, password_env, password_file, \
                 max_connections, sslmode, ca_file, cert_file, key_file, lock_timeout, statement_timeout, health, \
                 pause_lock_waiters, pause_free_connections, pause_replay_lag, pause_query, pause_query_above, \
                 replica_urls)",
            ],
        );
        check_err("servers = 3", &["1:11: `servers` must be an array, found integer"]);
        check_err(
            "[servers]\nname = \"x\"",
            &["1:1: `servers` must be an array, found table"],
        );
    }

    #[test]
    fn defaults_problems() {
        check_err(
            "[defaults]\nconcurrency = 0\nrate = -1\nretries = -1\nlock_timeout = \"5 years\"\ntenant_timeout = \"\"\n\
             statement_timeout = 1.5",
            &[
                "2:15: `concurrency` must be at least 1",
                "3:8: `rate` must be 0 (no limit) or more, found -1",
                "4:11: `retries` value -1 is out of range",
                "5:16: invalid duration `5 years` for `lock_timeout`: unknown unit `years` (use ms, s, m or min, \
                 h, d)",
                "6:18: invalid duration `` for `tenant_timeout`: empty duration",
                "7:21: `statement_timeout` must be a duration such as \"5s\" or \"10min\", found float",
            ],
        );
        check_err(
            "[defaults]\nrate = -2.5",
            &["2:8: `rate` must be 0 (no limit) or more, found -2.5"],
        );
        check_err(
            "[defaults]\nbackoff_jitter = 1.5\noutage_budget = true",
            &[
                "2:18: `backoff_jitter` value 1.5 is out of range",
                "3:17: `outage_budget` must be a duration such as \"5s\" or \"10min\", found boolean",
            ],
        );
    }

    #[test]
    fn server_problems() {
        check_err(
            "[[servers]]\nname = \"a\"\nurl = \"postgres://u:hunter2@h/d\"\n\
             [[servers]]\nname = \"b\"\nurl = \"mysql://h/d\"\n\
             [[servers]]\nname = \"c\"\nurl = \"postgres://h:x/d\"\n\
             [[servers]]\nname = \"d\"\nurl = \"host=h dbname=d\"\n\
             [[servers]]\nname = \"e\"\nurl = \"postgres://h/d?password=hunter2\"\n",
            &[
                "3:7: the url of server `a` contains a password; put the password in password_env or password_file",
                "6:7: url `mysql://h/d` must start with postgres:// or postgresql://",
                "9:7: invalid database url `postgres://h:x/d`: invalid connection string: invalid value for \
                 option `port`",
                "12:7: url `host=h dbname=d` must start with postgres:// or postgresql://",
                "15:7: the url of server `e` contains a password; put the password in password_env or password_file",
            ],
        );
        check_err(
            &format!(
                "{SERVER}password_env = \"X\"\npassword_file = \"f\"\nmax_connections = 0\nsslmode = \"allow\"\n\
                 [[servers]]\nurl = \"postgres://h/d\"\n[[servers]]\nname = \"eu-1\"\nurl = \"postgres://h2/d\"\n"
            ),
            &[
                "5:17: server `eu-1` sets both `password_env` and `password_file`; set only one",
                "6:19: `max_connections` must be at least 1",
                "7:11: `sslmode` must be one of disable, prefer, require, verify-ca, verify-full, found `allow`",
                "8:1: missing required key `name` in [[servers]]",
                "11:8: duplicate server name `eu-1` (first defined at /fleet/tenants.toml:2:8)",
            ],
        );
        check_err(
            "[[servers]]\nname = \"\"\nurl = \"postgres://${NOPE}/d\"",
            &[
                "2:8: `name` must not be empty",
                "3:19: environment variable `NOPE` is not set (write `$${` for a literal `${`)",
            ],
        );
    }

    #[test]
    fn tenant_problems() {
        check_err(
            &format!(
                "{SERVER}\
                 [[tenants]]\nid = \"acme\"\nserver = \"eu-1\"\nschema = \"s\"\n\
                 [[tenants]]\nid = \"acme\"\nserver = \"eu-1\"\ndatabase = \"d\"\n\
                 [[tenants]]\nid = \"acme\"\nserver = \"eu-2\"\nschema = \"s\"\n\
                 [[tenants]]\nid = \"c\"\nserver = \"eu-1\"\nschema = \"s\"\ndatabase = \"d\"\n\
                 [[tenants]]\nid = \"d\"\nserver = \"eu-1\"\n\
                 [[tenants]]\nid = \"e\"\nserver = \"eu-1\"\nschema = \"\"\ntags = {{ a = [1] }}\n\
                 [[tenants]]\nserver = \"eu-1\"\ndatabase = \"d\"\n"
            ),
            &[
                "9:6: duplicate tenant id `acme` (first defined at /fleet/tenants.toml:5:6)",
                // Reported although the entry has another problem too.
                "13:6: duplicate tenant id `acme` (first defined at /fleet/tenants.toml:5:6)",
                "14:10: unknown server `eu-2` (known: `eu-1`)",
                "20:1: tenant `c` sets both `schema` and `database`; set exactly one",
                "21:1: tenant `d` needs `schema` (schema-per-tenant) or `database` (database-per-tenant)",
                "27:10: `schema` is not a valid PostgreSQL identifier: it is empty",
                "28:14: `tags.a` must be a string, integer or boolean, found array",
                "29:1: missing required key `id` in [[tenants]]",
            ],
        );
    }

    #[test]
    fn tenants_on_one_place_are_refused() {
        let long = |tail: &str| format!("{}{tail}", "s".repeat(63));
        check_err(
            &format!(
                "{SERVER}[[servers]]\nname = \"eu-2\"\nurl = \"postgres://h2/app\"\n\
                 [[tenants]]\nid = \"a\"\nserver = \"eu-1\"\nschema = \"tenant_a\"\n\
                 [[tenants]]\nid = \"b\"\nserver = \"eu-1\"\nschema = \"tenant_a\"\n\
                 [[tenants]]\nid = \"c\"\nserver = \"eu-2\"\nschema = \"tenant_a\"\n\
                 [[tenants]]\nid = \"d\"\nserver = \"eu-1\"\ndatabase = \"tenant_a\"\n\
                 [[tenants]]\nid = \"e\"\nserver = \"eu-1\"\nschema = \"{}\"\n",
                long("_x")
            ),
            &[
                "12:6: tenant `b` uses the same schema as tenant `a` (defined at /fleet/tenants.toml:7:1) on \
                 server `eu-1`: `tenant_a`",
                "26:10: `schema` is not a valid PostgreSQL identifier: it is longer than 63 bytes",
            ],
        );
    }

    /// The file read two entries a piece gives the same answer, and the same problems at the same places, as
    /// the file read whole.
    #[test]
    fn pieces_read_as_the_whole_file() {
        let entry = |id: &str, server: &str, schema: &str| {
            format!("[[tenants]]\nid = \"{id}\"\nserver = \"{server}\"\nschema = \"{schema}\"\n")
        };
        let valid = format!(
            "# fleet\n[defaults]\nconcurrency = 4\n{SERVER}{}{}\n[[servers]]\nname = \"eu-2\"\n\
             url = \"postgres://${{DB_HOST}}/app\"\n{}[[tenants]]\nid = \"t4\"\nserver = \"eu-2\"\n\
             database = \"d4\" # a comment [[tenants]]\ntags = {{ ring = 1, canary = true, \"x]\" = \"[\" }}\n\
             {}[[sources]]\nserver = \"eu-2\"\nschemas_like = \"t_%\"\ntags = {{ kind = \"schema\" }}\n{}",
            entry("t1", "eu-1", "s1"),
            entry("t2", "eu-1", "s2"),
            entry("t3", "eu-2", "s3"),
            entry("t5", "eu-1", "s5"),
            entry("t6", "eu-2", "s6"),
        );
        let invalid = format!(
            "{SERVER}{}{}{}{}{}[[tenants]]\nid = \"t6\"\nserver = \"eu-1\"\nschema = \"x${{NOPE}}\"\n{}\
             [[tenants]]\nid = \"t8\"\nserver = \"eu-1\"\nschema = \"s8\"\nrole = 1\n",
            entry("t1", "eu-1", "s1"),
            entry("t2", "eu-1", "s2"),
            entry("t3", "eu-9", "s3"),
            entry("t1", "eu-1", "s4"),
            entry("t5", "eu-1", "s2"),
            entry("t7", "eu-1", ""),
        );
        let syntax = format!(
            "{SERVER}{}{}[[tenants]]\nid = \"t3\n",
            entry("t1", "eu-1", "s1"),
            entry("t2", "eu-1", "s2")
        );
        let sub_table = format!("{SERVER}{}[tenants.tags]\nring = \"1\"\n", entry("t1", "eu-1", "s1"));
        for (text, is_split) in [(valid, true), (invalid, true), (syntax, true), (sub_table, false)] {
            assert_eq!(split::split(&text, "tenants", 2).is_some(), is_split, "{text}");
            let path = Path::new("/fleet/tenants.toml");
            let show = |r: Result<TenantsFile, ConfigError>| match r {
                Ok(file) => format!("{file:?}"),
                Err(e) => e.to_string(),
            };
            let whole = show(TenantsFile::parse_in_pieces(path, &text, &env, None));
            for per_piece in [1, 2, 1000] {
                let pieces = show(TenantsFile::parse_in_pieces(path, &text, &env, Some(per_piece)));
                assert_eq!(pieces, whole, "{per_piece} a piece:\n{text}");
            }
        }
        let file = parse(&format!(
            "{SERVER}{}{}",
            entry("t1", "eu-1", "s1"),
            entry("t2", "eu-1", "s2")
        ))
        .expect("parse");
        assert_eq!(file.tenants[1].at.to_string(), "/fleet/tenants.toml:8:1");
        assert_eq!(file.tenants.capacity(), 2);
    }

    /// Entries name their server by index and share equal tags maps, read whole or in pieces.
    #[test]
    fn entries_share_tags_and_index_servers() {
        let text = format!(
            "{SERVER}[[servers]]\nname = \"eu-2\"\nurl = \"postgres://h2/app\"\n\
             [[tenants]]\nid = \"a\"\nserver = \"eu-2\"\nschema = \"a\"\n\
             [[tenants]]\nid = \"b\"\nserver = \"eu-1\"\nschema = \"b\"\ntags = {{ ring = 1 }}\n\
             [[tenants]]\nid = \"c\"\nserver = \"eu-2\"\nschema = \"c\"\n\
             [[tenants]]\nid = \"d\"\nserver = \"eu-1\"\nschema = \"d\"\ntags = {{ ring = \"1\" }}\n\
             [[tenants]]\nid = \"e\"\nserver = \"eu-1\"\nschema = \"e\"\ntags = {{ ring = 2 }}\n"
        );
        for per_piece in [None, Some(1), Some(1000)] {
            let file = TenantsFile::parse_in_pieces(Path::new("/t.toml"), &text, &env, per_piece).expect("parse");
            let t = &file.tenants;
            let servers: Vec<&str> = t.iter().map(|s| file.servers[s.server].name.as_str()).collect();
            assert_eq!(servers, ["eu-2", "eu-1", "eu-2", "eu-1", "eu-1"]);
            assert!(t[0].tags.is_empty() && Arc::ptr_eq(&t[0].tags, &t[2].tags));
            assert_eq!(t[1].tags["ring"], "1");
            assert!(Arc::ptr_eq(&t[1].tags, &t[3].tags));
            assert_eq!(t[4].tags["ring"], "2");
            assert!(!Arc::ptr_eq(&t[1].tags, &t[4].tags));
        }
    }

    #[test]
    fn truncation_is_postgresql_s() {
        let ascii = "a".repeat(70);
        assert_eq!(truncate_identifier(&ascii).len(), 63);
        assert_eq!(truncate_identifier("short"), "short");
        // 62 ASCII bytes and a 2-byte character: PostgreSQL keeps 62 bytes rather than split the character.
        let split = format!("{}é", "a".repeat(62));
        assert_eq!(truncate_identifier(&split), &split[..62]);
        let exact = format!("{}é", "a".repeat(61));
        assert_eq!(truncate_identifier(&exact), exact);
    }

    #[test]
    fn clashes_pair_each_later_entry_with_the_first() {
        let keys = ["b", "a", "b", "c", "b", "a"];
        assert_eq!(clashes(keys.len(), |i| Some(keys[i])), [(0, 2), (0, 4), (1, 5)]);
        assert_eq!(clashes(keys.len(), |i| (i != 0).then(|| keys[i])), [(2, 4), (1, 5)]);
        let names = [format!("{}1", "n".repeat(63)), format!("{}2", "n".repeat(63))];
        let targets = names.map(TenantTarget::Schema);
        assert_eq!(clashes(2, |i| Some(targets[i].place_key())), [(0, 1)]);
    }

    #[test]
    fn source_problems() {
        check_err(
            &format!(
                "{SERVER}\
                 [[sources]]\nserver = \"eu-1\"\n\
                 [[sources]]\nserver = \"eu-1\"\nschemas_like = \"t_%\"\nquery = \"SELECT 1\"\n\
                 [[sources]]\nserver = \"nope\"\ndatabases_like = \"t_%\"\n\
                 [[sources]]\nschemas_like = \"\"\nfilter = 1\n"
            ),
            &[
                "4:1: a source needs exactly one of `schemas_like`, `databases_like`, `query`, found none",
                "9:1: a source needs exactly one of `schemas_like`, `databases_like`, `query`, found \
                 `schemas_like`, `query`",
                "11:10: unknown server `nope` (known: `eu-1`)",
                "13:1: missing required key `server` in [[sources]]",
                "14:16: `schemas_like` must not be empty",
                "15:1: unknown key `filter` in [[sources]] (expected one of: server, schemas_like, \
                 databases_like, query, tags)",
            ],
        );
    }

    #[test]
    fn pg_config_reads_password_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw"), "filepw\n").expect("write");
        let text = format!(
            "{SERVER}password_env = \"EU1_PG_PASSWORD\"\n\
             [[servers]]\nname = \"f\"\nurl = \"postgres://u@h/app?connect_timeout=3\"\npassword_file = \"pw\"\n\
             [[servers]]\nname = \"unset\"\nurl = \"postgres://u@h/app\"\npassword_env = \"NOT_SET\"\n\
             [[servers]]\nname = \"missing\"\nurl = \"postgres://u@h/app\"\npassword_file = \"nope\"\n"
        );
        let file = TenantsFile::parse(&dir.path().join("tenants.toml"), &text, &env).expect("parse");
        let cfg = file.servers[0].pg_config(Some("tenant_db"), &env).expect("eu-1");
        assert_eq!(cfg.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(cfg.get_dbname(), Some("tenant_db"));
        assert_eq!(cfg.get_application_name(), Some("flotilla"));
        assert_eq!(cfg.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert!(!format!("{cfg:?} {:?} {}", file.servers[0], file.servers[0]).contains("hunter2"));

        let cfg = file.servers[1].pg_config(None, &env).expect("f");
        assert_eq!(cfg.get_password(), Some(&b"filepw"[..]));
        assert_eq!(cfg.get_dbname(), Some("app"));
        assert_eq!(cfg.get_connect_timeout(), Some(&Duration::from_secs(3)));

        let err = file.servers[2].pg_config(None, &env).unwrap_err().to_string();
        assert!(
            err.ends_with("tenants.toml:12:16: password environment variable `NOT_SET` for server `unset` is not set"),
            "{err}"
        );
        let err = file.servers[3].pg_config(None, &env).unwrap_err().to_string();
        assert!(err.contains("tenants.toml:16:17: cannot read password file `"), "{err}");
        assert!(err.contains("for server `missing`"), "{err}");

        assert!(matches!(file.servers[0].tls(), Ok(TlsMode::Rustls(_))));
    }

    #[cfg(unix)]
    #[test]
    fn pgpass_comes_after_every_explicit_source() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let pgpass = dir.path().join("pgpass");
        std::fs::write(
            &pgpass,
            "# host:port:database:user:password\nh:5432:app:u:from\\:pgpass\n*:*:*:other:no\n",
        )
        .expect("write");
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("mkdir");
        let pgpass_s = pgpass.display().to_string();
        let home_s = home.display().to_string();
        let lookup = move |name: &str| match name {
            "EU1_PG_PASSWORD" => Some("hunter2".to_string()),
            "PGPASSFILE" => Some(pgpass_s.clone()),
            "HOME" => Some(home_s.clone()),
            _ => None,
        };
        let text = "[[servers]]\nname = \"plain\"\nurl = \"postgres://u@h/app\"\n\
                    [[servers]]\nname = \"env\"\nurl = \"postgres://u@h/app\"\npassword_env = \"EU1_PG_PASSWORD\"\n\
                    [[servers]]\nname = \"nomatch\"\nurl = \"postgres://u@h:5433/app\"\n";
        let file = TenantsFile::parse(&dir.path().join("tenants.toml"), text, &lookup).expect("parse");
        let (cfg, origin) = file.servers[0].pg_config_and_origin(None, &lookup).expect("plain");
        assert_eq!(cfg.get_password(), Some(&b"from:pgpass"[..]));
        assert_eq!(
            origin.to_string(),
            format!("the password came from `{}` line 2", pgpass.display())
        );
        // password_env wins over the password file.
        let (cfg, origin) = file.servers[1].pg_config_and_origin(None, &lookup).expect("env");
        assert_eq!(cfg.get_password(), Some(&b"hunter2"[..]));
        assert_eq!(origin, PasswordOrigin::Env("EU1_PG_PASSWORD".into()));
        let (cfg, origin) = file.servers[2].pg_config_and_origin(None, &lookup).expect("nomatch");
        assert_eq!(cfg.get_password(), None);
        assert_eq!(
            origin.to_string(),
            format!(
                "no password: server `nomatch` sets neither password_env nor password_file, and password file `{}` \
                 has no line for h:5433:app:u",
                pgpass.display()
            )
        );
        // Without PGPASSFILE, ~/.pgpass (through HOME); a file others may read is ignored, as libpq does.
        let no_pgpassfile = |name: &str| if name == "PGPASSFILE" { None } else { lookup(name) };
        let (_, origin) = file.servers[0]
            .pg_config_and_origin(None, &no_pgpassfile)
            .expect("home");
        assert!(origin
            .to_string()
            .ends_with(&format!("`{}` does not exist", home.join(".pgpass").display())));
        std::fs::copy(&pgpass, home.join(".pgpass")).expect("copy");
        std::fs::set_permissions(home.join(".pgpass"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let (cfg, origin) = file.servers[0]
            .pg_config_and_origin(None, &no_pgpassfile)
            .expect("home");
        assert_eq!(cfg.get_password(), None);
        assert!(
            origin
                .to_string()
                .contains("was ignored: it has group or world access (mode 0640)"),
            "{origin}"
        );
        std::fs::set_permissions(home.join(".pgpass"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let (cfg, _) = file.servers[0]
            .pg_config_and_origin(None, &no_pgpassfile)
            .expect("home");
        assert_eq!(cfg.get_password(), Some(&b"from:pgpass"[..]));
        let (_, origin) = file.servers[0].pg_config_and_origin(None, &|_| None).expect("no env");
        assert!(origin
            .to_string()
            .ends_with("neither PGPASSFILE nor HOME is set to find a .pgpass file"));
    }

    #[test]
    fn tls_problems_name_the_server() {
        let text = format!("{SERVER}sslmode = \"verify-ca\"\nca_file = \"missing.pem\"\n");
        let file = parse(&text).expect("parse");
        let err = file.servers[0].tls().unwrap_err().to_string();
        assert!(
            err.starts_with("/fleet/tenants.toml:1:1: cannot read CA file `/fleet/missing.pem`"),
            "{err}"
        );
    }

    #[test]
    fn client_certificates_from_keys_or_url() {
        let text = format!(
            "{SERVER}cert_file = \"certs/c.pem\"\nkey_file = \"certs/c.key\"\n\
             [[servers]]\nname = \"u\"\nurl = \"postgres://m@h/app?sslcert=/etc/c.pem&sslkey=/etc/c.key\"\n"
        );
        let file = parse(&text).expect("parse");
        let pair = |cert: &str, key: &str| {
            Some(ClientCert {
                cert_file: PathBuf::from(cert),
                key_file: PathBuf::from(key),
            })
        };
        assert_eq!(
            file.servers[0].client_cert,
            pair("/fleet/certs/c.pem", "/fleet/certs/c.key")
        );
        assert_eq!(file.servers[1].client_cert, pair("/etc/c.pem", "/etc/c.key"));
        let err = parse(&format!("{SERVER}cert_file = \"c.pem\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/fleet/tenants.toml:1:1: a client certificate needs its key and a key its certificate"),
            "{err}"
        );
    }

    #[test]
    fn shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tenants.example.toml");
        let file = TenantsFile::load(&path, &|_| None).expect("tenants.example.toml");
        assert!(!file.servers.is_empty() && !file.tenants.is_empty() && !file.sources.is_empty());
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("password="), "no password in the example");
        // Each tenant is defined once: no listed tenant is also what a source on its server finds.
        for tenant in &file.tenants {
            for source in file
                .sources
                .iter()
                .filter(|s| s.server == file.servers[tenant.server].name)
            {
                let pattern = match (&source.kind, &tenant.target) {
                    (SourceKind::SchemasLike(p), TenantTarget::Schema(_))
                    | (SourceKind::DatabasesLike(p), TenantTarget::Database(_)) => p,
                    _ => continue,
                };
                assert!(
                    !like(tenant.target.name(), pattern),
                    "tenant `{}` is listed and also found by the source at {}",
                    tenant.id,
                    source.at
                );
            }
        }
        assert!(like("tenant_acme", "tenant_%") && !like("acme", "tenant_%") && like("a_b", "a\\_b"));
        assert!(!like("axb", "a\\_b") && !like("tenant_", "tenant__") && like("ab", "a%b%"));
    }

    /// SQL `LIKE` with `%`, `_` and the default `\` escape.
    fn like(text: &str, pattern: &str) -> bool {
        let (t, p): (Vec<char>, Vec<char>) = (text.chars().collect(), pattern.chars().collect());
        fn go(t: &[char], p: &[char]) -> bool {
            match p.first() {
                None => t.is_empty(),
                Some('%') => (0..=t.len()).any(|i| go(&t[i..], &p[1..])),
                Some('_') => !t.is_empty() && go(&t[1..], &p[1..]),
                Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && go(&t[1..], &p[2..]),
                Some(c) => t.first() == Some(c) && go(&t[1..], &p[1..]),
            }
        }
        go(&t, &p)
    }
}
