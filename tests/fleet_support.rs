//! Local helpers of the fleet and observability tests: a fleet of schema tenants (schemas in one test database)
//! and database tenants (extra test databases) on the shared cluster, its tenants file and ledger in a temporary
//! project, and readers of what PostgreSQL and the ledger hold afterwards.
//!
//! It builds on `harness` and deliberately stays out of it: only fleet tests need tenants files and ledgers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{child_env, connect, tables, version_rows, Cmd, TempProject, TestDb, TestLedger, VERSION_TABLE};

/// The head of the repository's `migrations/`.
pub const REPO_HEAD: &str = crate::single_support::example::HEAD;
/// How many revisions the repository's `migrations/` hold: the steps of an upgrade from base to head.
pub const REPO_REVISIONS: usize = crate::single_support::example::UPGRADE_ORDER.len();

/// The revisions of `tests/fixtures/fleet_slow/`, in order, and the tables each one leaves behind.
pub const SLOW_REVISIONS: [&str; 3] = ["a1a1a1a1a1a1", "b2b2b2b2b2b2", "c3c3c3c3c3c3"];
pub const SLOW_HEAD: &str = "c3c3c3c3c3c3";

/// The user tables a tenant of `fleet_slow` holds at `revision` (`None`: base).
pub fn slow_tables_at(revision: Option<&str>) -> Vec<String> {
    let n = match revision {
        None => 0,
        Some(rev) => {
            SLOW_REVISIONS
                .iter()
                .position(|r| *r == rev)
                .expect("a fleet_slow revision")
                + 1
        }
    };
    let mut out: Vec<String> = ["items", "notes", "prices"][..n]
        .iter()
        .map(|s| s.to_string())
        .collect();
    out.sort();
    out
}

/// The tables the repository's `migrations/` create, at head.
pub fn repo_tables_at_head() -> Vec<String> {
    ["audit_log", "order_items", "orders", "products", "users"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Which revision files the fleet's project holds.
#[derive(Debug, Clone, Copy)]
pub enum Revisions {
    /// The repository's own `migrations/`.
    Repo,
    /// `tests/fixtures/<name>/`.
    Fixture(&'static str),
}

/// One tenant as the tests know it.
#[derive(Debug, Clone)]
pub struct TenantInfo {
    pub id: String,
    /// `Some(schema)` for a schema tenant.
    pub schema: Option<String>,
    /// Index into [`Fleet::dbs`] for a database tenant.
    pub database: Option<usize>,
    pub tags: Vec<(String, String)>,
}

/// A fleet on the shared cluster with its project, tenants file and ledger.
pub struct Fleet {
    /// Holds the schema tenants; its url is the server url.
    pub db: TestDb,
    /// One database per database tenant.
    pub dbs: Vec<TestDb>,
    pub project: TempProject,
    pub tenants: Vec<TenantInfo>,
    pub tenants_file: PathBuf,
    /// The `--ledger` value: the SQLite file, or the control database's url (`FLOTILLA_TEST_LEDGER=postgres`).
    pub ledger: PathBuf,
    pub test_ledger: TestLedger,
}

impl Fleet {
    /// `n_schemas` schema tenants `tenant_0001`.. and `n_databases` database tenants `db_01`.., listed by hand in
    /// the tenants file with tags `kind` (schema/database) and `parity` (even/odd), on one server capped at
    /// `max_connections`, with no start-rate limit.
    pub fn new(
        hint: &str,
        n_schemas: usize,
        n_databases: usize,
        revisions: Revisions,
        max_connections: usize,
    ) -> Fleet {
        let db = TestDb::new(hint);
        let mut sql = String::new();
        let mut tenants = Vec::new();
        for i in 1..=n_schemas {
            let schema = format!("tenant_{i:04}");
            let _ = writeln!(sql, "CREATE SCHEMA {schema};");
            tenants.push(TenantInfo {
                id: schema.clone(),
                schema: Some(schema),
                database: None,
                tags: vec![("kind".into(), "schema".into()), ("parity".into(), parity(i).into())],
            });
        }
        if !sql.is_empty() {
            db.execute(&sql);
        }
        let dbs: Vec<TestDb> = (1..=n_databases)
            .map(|i| TestDb::new(&format!("{hint}_d{i}")))
            .collect();
        for i in 1..=n_databases {
            tenants.push(TenantInfo {
                id: format!("db_{i:02}"),
                schema: None,
                database: Some(i - 1),
                tags: vec![("kind".into(), "database".into()), ("parity".into(), parity(i).into())],
            });
        }
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        let project = TempProject::new("");
        match revisions {
            Revisions::Repo => project.copy_repo_migrations(),
            Revisions::Fixture(name) => project.copy_fixture(name),
        };
        let tenants_file = project.path().join("tenants.toml");
        let test_ledger = TestLedger::new(&project.path().join("state/ledger.db"));
        let ledger = test_ledger.arg();
        let fleet = Fleet {
            db,
            dbs,
            project,
            tenants,
            tenants_file,
            ledger,
            test_ledger,
        };
        fleet.write_tenants(max_connections, "");
        fleet
    }

    /// Rewrites the tenants file; `server_extra` is appended to the `[[servers]]` table (e.g. `password_env`).
    pub fn write_tenants(&self, max_connections: usize, server_extra: &str) {
        let mut toml = format!(
            "[defaults]\nrate = 0\nretries = 3\n\n[[servers]]\nname = \"local\"\nurl = \"{}\"\nmax_connections = \
             {max_connections}\n{server_extra}\n",
            self.db.url()
        );
        for t in &self.tenants {
            let place = match (&t.schema, t.database) {
                (Some(schema), _) => format!("schema = \"{schema}\""),
                (None, Some(i)) => format!("database = \"{}\"", self.dbs[i].name()),
                (None, None) => unreachable!("a tenant is a schema or a database"),
            };
            let tags: Vec<String> = t.tags.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
            let _ = writeln!(
                toml,
                "[[tenants]]\nid = \"{}\"\nserver = \"local\"\n{place}\ntags = {{ {} }}\n",
                t.id,
                tags.join(", ")
            );
        }
        std::fs::write(&self.tenants_file, toml).expect("write the tenants file");
    }

    pub fn ids(&self) -> Vec<String> {
        self.tenants.iter().map(|t| t.id.clone()).collect()
    }

    /// `flotilla fleet <args> --tenants FILE --ledger FILE` in the project directory.
    pub fn fleet(&self, args: &[&str]) -> Cmd {
        let mut cmd = self.project.flotilla();
        cmd.arg("fleet").args(args);
        cmd.arg("--tenants").arg(&self.tenants_file);
        cmd.arg("--ledger").arg(&self.ledger);
        cmd
    }

    /// `fleet upgrade head` without a progress display, plus `extra`.
    pub fn upgrade(&self, extra: &[&str]) -> Cmd {
        let mut cmd = self.fleet(&["upgrade", "head", "--progress", "none"]);
        cmd.args(extra);
        cmd
    }

    /// `fleet retry` without a progress display, plus `extra`.
    pub fn retry(&self, extra: &[&str]) -> Cmd {
        let mut cmd = self.project.flotilla();
        cmd.args(["fleet", "retry", "--progress", "none", "--ledger"])
            .arg(&self.ledger);
        cmd.args(extra);
        cmd
    }

    /// `fleet status --format json` of the latest run (or `run`).
    pub fn status(&self, run: Option<&str>) -> Value {
        let mut cmd = self.project.flotilla();
        cmd.args(["fleet", "status", "--format", "json", "--ledger"])
            .arg(&self.ledger);
        if let Some(run) = run {
            cmd.args(["--run", run]);
        }
        cmd.assert_success().json()
    }

    /// The tenants of `status` by id.
    pub fn status_tenants(status: &Value) -> BTreeMap<String, Value> {
        status["tenants"]
            .as_array()
            .expect("tenants array")
            .iter()
            .map(|t| (t["id"].as_str().expect("tenant id").to_string(), t.clone()))
            .collect()
    }

    /// Each tenant's version rows (empty: no version table).
    pub async fn versions(&self) -> BTreeMap<String, Vec<String>> {
        self.read(|client, schema| async move {
            let table = match schema {
                Some(schema) => format!("{schema}.{VERSION_TABLE}"),
                None => format!("public.{VERSION_TABLE}"),
            };
            version_rows(&client, &table).await
        })
        .await
    }

    /// Each tenant's own tables (the flotilla_* bookkeeping tables left out).
    pub async fn user_tables(&self) -> BTreeMap<String, Vec<String>> {
        self.read(|client, schema| async move {
            let schema = schema.unwrap_or_else(|| "public".to_string());
            tables(&client, &schema)
                .await
                .into_iter()
                .filter(|t| !t.starts_with("flotilla_"))
                .collect()
        })
        .await
    }

    async fn read<F, Fut, T>(&self, f: F) -> BTreeMap<String, T>
    where
        F: Fn(std::sync::Arc<tokio_postgres::Client>, Option<String>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let main = std::sync::Arc::new(connect(self.db.url()).await.expect("connect to the fleet database"));
        let mut out = BTreeMap::new();
        for t in &self.tenants {
            let value = match (&t.schema, t.database) {
                (Some(schema), _) => f(main.clone(), Some(schema.clone())).await,
                (None, Some(i)) => {
                    let client = std::sync::Arc::new(connect(self.dbs[i].url()).await.expect("connect"));
                    f(client, None).await
                }
                (None, None) => unreachable!(),
            };
            out.insert(t.id.clone(), value);
        }
        out
    }

    /// Runs `cmd`-like arguments as a child we control (for signals and scraping while it runs).
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        command
            .args(args)
            .env_clear()
            .envs(child_env(std::env::vars_os(), &[]))
            .current_dir(self.project.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().expect("start flotilla")
    }

    /// `fleet upgrade head --tenants FILE --ledger FILE --progress none` plus `extra`, as a child we control.
    pub fn spawn_upgrade(&self, extra: &[&str]) -> Child {
        let (tenants, ledger) = (Self::path_arg(&self.tenants_file), Self::path_arg(&self.ledger));
        let mut args = vec![
            "fleet",
            "upgrade",
            "head",
            "--tenants",
            &tenants,
            "--ledger",
            &ledger,
            "--progress",
            "none",
        ];
        args.extend_from_slice(extra);
        self.spawn(&args)
    }

    pub fn path_arg(path: &Path) -> String {
        path.display().to_string()
    }
}

fn parity(i: usize) -> &'static str {
    if i % 2 == 0 {
        "even"
    } else {
        "odd"
    }
}

/// Polls `check` every 10 ms until it returns `Some`, failing the test after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The NDJSON lines of an events file, each parsed; panics on a line that is not JSON.
pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event line is not JSON ({e}): {l}")))
        .collect()
}

/// The events of a run still writing them: lines that do not parse yet (being written) are left out.
pub fn read_events_so_far(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The output of a child started with [`Fleet::spawn`], after it exits (with a deadline).
pub fn finish(mut child: Child, timeout: Duration) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for flotilla") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "flotilla did not exit within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}
