//! A fresh database per test, template databases to clone from, and the sweep of leftovers.
//!
//! Every database the harness creates is named `flotilla_t_<hint>_<pid>_<counter>_<random>`, so a later process
//! can tell which ones belong to processes that are gone. The cluster itself lives in `cluster`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use super::cli::{psql, Cmd};
use super::cluster::cluster;
use super::runtime::{block_on, connect};

/// Name prefix of every database the harness creates; the sweep drops by it.
pub const DB_PREFIX: &str = "flotilla_t_";

/// `FLOTILLA_TEST_KEEP_DB=1` keeps every test database instead of dropping it.
pub const KEEP_DB_ENV: &str = "FLOTILLA_TEST_KEEP_DB";

/// How many [`TestDb::client`]s one test may hold at once; more is a bug in the test (or a leak).
pub const MAX_CLIENTS_PER_DB: usize = 8;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
const MAX_NAME_LEN: usize = 63;

/// A database created for one test, dropped when the test passes.
///
/// It is kept, and its URL printed to stderr, when the test panics or `FLOTILLA_TEST_KEEP_DB=1` is set.
/// Creating and dropping are synchronous, so plain `#[test]`s (driving only the binary) can use it too.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    clients: Arc<Semaphore>,
}

impl TestDb {
    /// Creates an empty database (from `template0`) named after `name_hint`.
    ///
    /// Panics when the server refuses.
    pub fn new(name_hint: &str) -> TestDb {
        Self::create(name_hint, "template0")
    }

    /// Creates a database as a copy of `template`, as returned by [`template`].
    ///
    /// The name hint is the current test's name (cargo names each test thread after its test).
    pub fn from_template(template: &str) -> TestDb {
        let hint = std::thread::current().name().unwrap_or("tpl_clone").to_string();
        Self::create(&hint, template)
    }

    fn create(name_hint: &str, template: &str) -> TestDb {
        let cluster = cluster();
        let name = db_name(name_hint);
        let admin_url = cluster.url().to_string();
        let (db, tpl) = (name.clone(), template.to_string());
        block_on(async move {
            let admin = connect(&admin_url).await?;
            if tpl != "template0" {
                // CREATE DATABASE fails when anyone is connected to its template, and a client dropped on a
                // test's runtime may not have said goodbye yet.
                disconnect_all(&admin, &tpl).await?;
            }
            admin
                .batch_execute(&format!("CREATE DATABASE {} TEMPLATE {}", ident(&db), ident(&tpl)))
                .await?;
            anyhow::Ok(())
        })
        .unwrap_or_else(|e| panic!("create test database {name} from {template}: {e:#}"));
        TestDb {
            url: cluster.db_url(&name),
            name,
            clients: Arc::new(Semaphore::new(MAX_CLIENTS_PER_DB)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A superuser URL of this database, for the binary under test (`--url`, `DATABASE_URL`, config files).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection driven by the current tokio runtime.
    ///
    /// Panics when the test already holds [`MAX_CLIENTS_PER_DB`] clients.
    pub async fn client(&self) -> TestClient {
        let permit = Arc::clone(&self.clients).try_acquire_owned().unwrap_or_else(|_| {
            panic!(
                "test holds more than {MAX_CLIENTS_PER_DB} clients of {}; drop some or raise MAX_CLIENTS_PER_DB",
                self.name
            )
        });
        let client = connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to test database {}: {e:#}", self.name));
        TestClient {
            client,
            _permit: permit,
        }
    }

    /// Runs SQL (several statements allowed) from synchronous code; panics with the server's error.
    pub fn execute(&self, sql: &str) {
        let (url, sql_owned) = (self.url.clone(), sql.to_string());
        block_on(async move {
            let client = connect(&url).await?;
            client.batch_execute(&sql_owned).await?;
            anyhow::Ok(())
        })
        .unwrap_or_else(|e| panic!("on {}: {e:#}\nSQL:\n{sql}", self.name));
    }

    /// `psql` connected to this database, stopping at the first error; pipe SQL in with [`Cmd::stdin`].
    pub fn psql(&self) -> Cmd {
        let mut cmd = psql();
        cmd.args(["-v", "ON_ERROR_STOP=1", "-d", &self.url]);
        cmd
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let is_panicking = std::thread::panicking();
        if should_keep(std::env::var(KEEP_DB_ENV).ok().as_deref(), is_panicking) {
            let why = if is_panicking {
                "the test failed"
            } else {
                "FLOTILLA_TEST_KEEP_DB is set"
            };
            eprintln!("kept test database ({why}): {}", self.url);
            return;
        }
        let (admin_url, name) = (cluster().url().to_string(), self.name.clone());
        // A failed drop only leaves garbage for the next sweep, so it must not fail the test.
        if let Err(e) = block_on(async move { drop_db(&connect(&admin_url).await?, &name).await }) {
            eprintln!("warning: could not drop test database {}: {e:#}", self.name);
        }
    }
}

/// Whether a test database outlives its test: when the test panicked, or when the keep knob is `1` (or `true`).
pub fn should_keep(keep_env: Option<&str>, is_panicking: bool) -> bool {
    is_panicking || matches!(keep_env.map(str::trim), Some("1" | "true" | "yes"))
}

/// A connection to a [`TestDb`]; derefs to [`tokio_postgres::Client`].
pub struct TestClient {
    client: Client,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for TestClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for TestClient {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The name of a template database created and filled by `populate` once per process, for [`TestDb::from_template`].
///
/// Concurrent callers with the same `name` wait for the first one; `populate` receives the template's URL and
/// must not keep connections open. When `populate` fails, this panics and a later caller tries again.
pub async fn template<F, Fut>(name: &str, populate: F) -> String
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    static TEMPLATES: Mutex<Option<HashMap<String, Arc<OnceCell<String>>>>> = Mutex::new(None);
    let cell = {
        let mut templates = TEMPLATES.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            templates
                .get_or_insert_with(HashMap::new)
                .entry(name.to_string())
                .or_default(),
        )
    };
    let result = cell
        .get_or_try_init(|| async {
            let cluster = cluster();
            let db = db_name(&format!("tpl_{name}"));
            let (admin_url, db_owned) = (cluster.url().to_string(), db.clone());
            block_on(async move {
                let admin = connect(&admin_url).await?;
                admin
                    .batch_execute(&format!("CREATE DATABASE {} TEMPLATE template0", ident(&db_owned)))
                    .await?;
                anyhow::Ok(())
            })?;
            let filled = populate(cluster.db_url(&db)).await;
            let (admin_url, db_owned) = (cluster.url().to_string(), db.clone());
            let is_filled = filled.is_ok();
            block_on(async move {
                let admin = connect(&admin_url).await?;
                if is_filled {
                    disconnect_all(&admin, &db_owned).await
                } else {
                    drop_db(&admin, &db_owned).await
                }
            })?;
            filled.map(|()| db)
        })
        .await;
    match result {
        Ok(db) => db.clone(),
        Err(e) => panic!("populate template {name}: {e:#}"),
    }
}

/// A fresh, unique test database name: `flotilla_t_<hint>_<pid>_<counter>_<random>`, at most 63 bytes.
///
/// The hint is lowercased, non-alphanumerics become `_`, and it is cut from the front when too long, since a test
/// path ends with its most specific part.
pub fn db_name(hint: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let suffix = format!(
        "_{}_{}_{:06x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>() & 0xff_ffff
    );
    let mut clean = String::new();
    for c in hint.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        };
        if !(c == '_' && (clean.is_empty() || clean.ends_with('_'))) {
            clean.push(c);
        }
    }
    let room = MAX_NAME_LEN - DB_PREFIX.len() - suffix.len();
    let clean = clean.trim_end_matches('_');
    let clean = clean[clean.len().saturating_sub(room)..].trim_start_matches('_');
    let clean = if clean.is_empty() { "db" } else { clean };
    format!("{DB_PREFIX}{clean}{suffix}")
}

/// The parts of a name made by [`db_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbName {
    pub hint: String,
    pub pid: u32,
    pub counter: u64,
}

/// Parses a name made by [`db_name`]; `None` for any other name.
pub fn parse_db_name(name: &str) -> Option<DbName> {
    let rest = name.strip_prefix(DB_PREFIX)?;
    let mut parts = rest.rsplitn(4, '_');
    let random = parts.next()?;
    let counter = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    let hint = parts.next()?.to_string();
    if random.len() != 6 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(DbName { hint, pid, counter })
}

/// Sweeps leftover test databases of dead processes now (the cluster already did at first use).
pub fn sweep_leftovers() {
    let cluster = cluster();
    if cluster.is_local() {
        sweep(cluster.url(), Sweep::DeadProcesses).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Which leftover test databases a sweep drops. Databases of this process are never touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sweep {
    /// All of them: only while this process has just (re)started the server and holds the start lock, so no
    /// other process can have databases on it.
    Everything,
    /// Those whose encoded pid is no longer running; only meaningful when the server runs on this machine.
    DeadProcesses,
}

/// Drops leftover test databases, by name prefix, as `mode` says.
pub(super) fn sweep(admin_url: &str, mode: Sweep) -> Result<(), String> {
    let admin_url = admin_url.to_string();
    block_on(async move {
        let admin = connect(&admin_url).await?;
        let names: Vec<String> = admin
            .query(
                "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
                &[&DB_PREFIX],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let own_pid = std::process::id();
        for name in names {
            let is_garbage = match (parse_db_name(&name), mode) {
                (Some(parsed), _) if parsed.pid == own_pid => false,
                (_, Sweep::Everything) => true,
                (Some(parsed), Sweep::DeadProcesses) => !is_pid_alive(parsed.pid),
                (None, Sweep::DeadProcesses) => false,
            };
            // Another process may be sweeping the same leftovers right now; what it misses stays for the next sweep.
            if is_garbage {
                if let Err(e) = drop_db(&admin, &name).await {
                    eprintln!("warning: could not drop leftover test database {name}: {e:#}");
                }
            }
        }
        anyhow::Ok(())
    })
    .map_err(|e| format!("sweep leftover test databases: {e:#}"))
}

fn is_pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

async fn drop_db(admin: &Client, name: &str) -> anyhow::Result<()> {
    let row = admin
        .query_opt("SELECT datistemplate FROM pg_database WHERE datname = $1", &[&name])
        .await?;
    match row {
        None => return Ok(()),
        // A template cannot be dropped; the harness never marks one, but a test might.
        Some(row) if row.get::<_, bool>(0) => {
            admin
                .batch_execute(&format!("ALTER DATABASE {} IS_TEMPLATE false", ident(name)))
                .await?
        }
        Some(_) => {}
    }
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)))
        .await?;
    Ok(())
}

/// Ends every session on `db` and waits (against a deadline) until they are gone.
async fn disconnect_all(admin: &Client, db: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n_sessions: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db],
            )
            .await?
            .get(0);
        if n_sessions == 0 {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "sessions on {db} did not end within 30s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Quotes an SQL identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
