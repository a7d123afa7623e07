//! Tests of the harness itself: databases, templates, the sweep, the keep knob, the command runner, projects and
//! catalog snapshots.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::{
    catalog_snapshot, child_env, cluster, connect, db_name, flotilla, parse_db_name, schemas, should_keep,
    sweep_leftovers, tables, template, version_rows, Cmd, DbName, TempProject, TestDb, DB_PREFIX, MAX_CLIENTS_PER_DB,
    VERSION_TABLE,
};

async fn db_exists(name: &str) -> bool {
    let admin = connect(cluster().url()).await.unwrap();
    admin
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

#[tokio::test]
async fn fresh_databases_are_empty_and_distinct() {
    let a = TestDb::new("fresh a");
    let b = TestDb::new("fresh a");
    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());
    for db in [&a, &b] {
        let client = db.client().await;
        let current: String = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(current, db.name());
        assert_eq!(tables(&client, "public").await, Vec::<String>::new());
        assert_eq!(schemas(&client).await, ["public"]);
        assert_eq!(version_rows(&client, VERSION_TABLE).await, Vec::<String>::new());
    }
    a.execute("CREATE TABLE only_in_a (id int)");
    assert_eq!(tables(&*a.client().await, "public").await, ["only_in_a"]);
    assert_eq!(tables(&*b.client().await, "public").await, Vec::<String>::new());
}

#[tokio::test]
async fn passing_test_drops_its_database() {
    let db = TestDb::new("dropped");
    let name = db.name().to_string();
    assert!(db_exists(&name).await);
    // The keep knob would (rightly) keep it; this test is about the default.
    if std::env::var("FLOTILLA_TEST_KEEP_DB").is_err() {
        drop(db);
        assert!(!db_exists(&name).await);
    }
}

#[tokio::test]
async fn panicking_test_keeps_its_database() {
    let name = std::thread::spawn(|| {
        let db = TestDb::new("kept on panic");
        let name = db.name().to_string();
        // resume_unwind unwinds like a failed assertion but skips the panic hook, so the output stays quiet.
        std::panic::resume_unwind(Box::new(name));
        #[allow(unreachable_code)]
        db
    })
    .join()
    .expect_err("the thread panics");
    let name = *name.downcast::<String>().expect("the payload is the name");
    assert!(db_exists(&name).await, "{name} was dropped");
    let admin = connect(cluster().url()).await.unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

/// Serialises the tests that sweep with the one that inspects a dead child process's database, which a sweep
/// would rightly drop.
static SWEEP_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn keep_knob_keeps_a_passing_tests_database() {
    let _guard = SWEEP_LOCK.lock().await;
    // Run one passing test of this binary in a child process, with the knob set.
    let out = Cmd::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "harness_tests::passing_test_drops_its_database",
            "--nocapture",
        ])
        .env("FLOTILLA_TEST_DATABASE_URL", cluster().url())
        .env("FLOTILLA_TEST_KEEP_DB", "1")
        .assert_success();
    let prefix = "kept test database (FLOTILLA_TEST_KEEP_DB is set): ";
    let url = out
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no kept database reported\n{}", out.report()));
    let name = url.rsplit('/').next().unwrap();
    assert!(db_exists(name).await, "{name} was dropped");
    let admin = connect(cluster().url()).await.unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .unwrap();
}

#[test]
fn keep_knob() {
    let check = |env: Option<&str>, is_panicking: bool, expected: bool| {
        assert_eq!(
            should_keep(env, is_panicking),
            expected,
            "env={env:?} panicking={is_panicking}"
        );
    };
    check(None, false, false);
    check(Some("1"), false, true);
    check(Some("true"), false, true);
    check(Some("0"), false, false);
    check(Some(""), false, false);
    check(None, true, true);
    check(Some("0"), true, true);
}

#[test]
fn db_names_are_valid_unique_and_parse_back() {
    let check = |hint: &str, expected_hint: &str| {
        let name = db_name(hint);
        assert!(name.len() <= 63, "{name} is too long");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{name}"
        );
        let parsed = parse_db_name(&name).unwrap_or_else(|| panic!("{name} does not parse"));
        assert_eq!(parsed.hint, expected_hint, "{name}");
        assert_eq!(parsed.pid, std::process::id());
    };
    check("simple", "simple");
    check("harness_tests::Mixed Case-name", "harness_tests_mixed_case_name");
    check("__", "db");
    // A long hint loses its front, since a test path ends with its most specific part.
    let long = "a_very_long_module_path::with_a_very_long_test_name_that_goes_on_and_on";
    let name = db_name(long);
    // The cut may land after a `_`, which is trimmed: the name then uses 62 of the 63 bytes.
    assert!((62..=63).contains(&name.len()), "{name}");
    let hint = parse_db_name(&name).unwrap().hint;
    assert!(long.ends_with(&hint) && hint.ends_with("goes_on_and_on"), "{name}");
    let names: std::collections::HashSet<String> = (0..1000).map(|_| db_name("same")).collect();
    assert_eq!(names.len(), 1000);
    assert_eq!(parse_db_name("flotilla_t_x_12_3_zzzzzz"), None);
    assert_eq!(parse_db_name("postgres"), None);
    assert_eq!(
        parse_db_name("flotilla_t_a_b_12_3_00ff00"),
        Some(DbName {
            hint: "a_b".into(),
            pid: 12,
            counter: 3
        })
    );
}

#[tokio::test]
async fn sweep_drops_leftovers_of_dead_processes_only() {
    // No process has this pid: it is above Linux's pid_max limit (2^22). It differs per process, since test
    // processes may run side by side.
    let dead = format!("{DB_PREFIX}leftover_{}_0_abcdef", 2_000_000_000 + std::process::id());
    let _guard = SWEEP_LOCK.lock().await;
    let live = TestDb::new("live during sweep");
    let admin = connect(cluster().url()).await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {dead}")).await.unwrap();
    sweep_leftovers();
    assert!(!db_exists(&dead).await, "{dead} survived the sweep");
    assert!(db_exists(live.name()).await, "the sweep dropped a live test's database");
}

#[tokio::test]
async fn template_is_populated_once_and_clones_are_independent() {
    static N_POPULATED: AtomicUsize = AtomicUsize::new(0);
    let populate = |url: String| async move {
        N_POPULATED.fetch_add(1, Ordering::SeqCst);
        let client = connect(&url).await?;
        client
            .batch_execute("CREATE TABLE seeded (id int PRIMARY KEY); INSERT INTO seeded VALUES (1)")
            .await?;
        Ok(())
    };
    // Several threads with their own runtimes race for the same template.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(template("harness_seeded", populate))
            })
        })
        .collect();
    let names: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(names.iter().all(|n| n == &names[0]), "{names:?}");
    assert_eq!(N_POPULATED.load(Ordering::SeqCst), 1);

    let a = TestDb::from_template(&names[0]);
    let b = TestDb::from_template(&names[0]);
    assert!(a.name().contains("clones_are_independent"), "{}", a.name());
    a.execute("INSERT INTO seeded VALUES (2)");
    let count = |db: &TestDb| {
        let url = db.url().to_string();
        async move {
            let client = connect(&url).await.unwrap();
            client
                .query_one("SELECT count(*) FROM seeded", &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count(&a).await, 2);
    assert_eq!(count(&b).await, 1);
}

#[tokio::test]
async fn clients_per_test_are_capped_and_reusable() {
    let db = TestDb::new("client cap");
    let mut clients = Vec::new();
    for _ in 0..MAX_CLIENTS_PER_DB {
        clients.push(db.client().await);
    }
    clients.clear();
    // Permits come back when clients are dropped.
    let client = db.client().await;
    client.batch_execute("SELECT 1").await.unwrap();
}

#[test]
fn psql_pipes_sql_and_stops_at_the_first_error() {
    let db = TestDb::new("psql");
    db.psql()
        .stdin("CREATE TABLE from_psql (id int);\nINSERT INTO from_psql VALUES (1);\n")
        .assert_success();
    let out = db
        .psql()
        .args(["-At", "-c", "SELECT count(*) FROM from_psql"])
        .assert_success();
    assert_eq!(out.stdout.trim(), "1");
    // psql exits 3 when ON_ERROR_STOP ends a script.
    let out = db
        .psql()
        .stdin("SELECT 1/0;\nCREATE TABLE never (id int);\n")
        .assert_code(3);
    assert!(out.stderr.contains("division by zero"), "{}", out.report());
    db.psql().args(["-c", "SELECT 'never'::regclass"]).assert_code(1);
}

#[test]
fn runner_reports_command_code_and_both_streams() {
    let out = Cmd::new("sh")
        .args(["-c", "echo to-out; echo to-err >&2; exit 3", "with space"])
        .env("FLOTILLA_EXAMPLE", "x y")
        .output();
    assert_eq!(out.code(), Some(3));
    assert_eq!(out.stdout, "to-out\n");
    assert_eq!(out.stderr, "to-err\n");
    assert!(out.check_code(3).is_ok());
    let report = out.check_code(0).expect_err("exit code 3 is not 0");
    for needle in [
        "expected exit code 0",
        "exit code 3",
        "env FLOTILLA_EXAMPLE='x y' sh -c 'echo to-out; echo to-err >&2; exit 3' 'with space'",
        "to-out",
        "to-err",
    ] {
        assert!(report.contains(needle), "{needle:?} missing from:\n{report}");
    }
}

#[test]
fn runner_feeds_stdin_and_sets_the_working_directory() {
    let project = TempProject::new("");
    let out = Cmd::new("sh")
        .args(["-c", "cat; pwd"])
        .stdin("piped\n")
        .current_dir(project.path())
        .assert_success();
    let dir = project.path().canonicalize().unwrap();
    assert_eq!(out.stdout, format!("piped\n{}\n", dir.display()));
    // Without .stdin() the child reads end-of-file at once instead of waiting for a terminal.
    assert_eq!(Cmd::new("cat").assert_success().stdout, "");
}

#[test]
fn runner_kills_a_command_at_its_timeout() {
    let result = std::panic::catch_unwind(|| Cmd::new("sleep").arg("30").timeout(Duration::from_millis(200)).output());
    let payload = result.expect_err("the runner gives up");
    let message = payload.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("timed out") && message.contains("sleep 30"),
        "{message}"
    );
}

#[test]
fn child_environment_is_scrubbed_unless_set_explicitly() {
    let parent = [
        ("PATH", "/bin"),
        ("HOME", "/root"),
        ("DATABASE_URL", "postgres://dev/prod"),
        ("PGHOST", "dev"),
        ("PGPASSWORD", "secret"),
        ("FLOTILLA_CONFIG", "/etc/flotilla.toml"),
        ("RUST_LOG", "trace"),
        ("NO_COLOR", "0"),
    ]
    .map(|(k, v)| (k.into(), v.into()));
    let explicit = [("PGHOST".into(), Some("127.0.0.1".into())), ("HOME".into(), None)];
    let mut env: Vec<(String, String)> = child_env(parent, &explicit)
        .into_iter()
        .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
        .collect();
    env.sort();
    let expected = [("NO_COLOR", "1"), ("PATH", "/bin"), ("PGHOST", "127.0.0.1")].map(|(k, v)| (k.into(), v.into()));
    assert_eq!(env, expected);
}

#[test]
fn flotilla_runner_targets_the_built_binary() {
    let cmd = flotilla();
    assert!(cmd.display().ends_with("/flotilla"), "{}", cmd.display());
    assert!(Path::new(env!("CARGO_BIN_EXE_flotilla")).is_file());
    // The CLI is being written; today this only shows that the binary starts and ends by itself.
    assert!(cmd.output().status.is_some());
}

#[test]
fn temp_project_holds_config_and_revisions() {
    let fixture = TempProject::with_revisions("", &[("a.sql", "-- a"), ("sub/b.sql", "-- b")]);
    let project = TempProject::with_revisions("[database]\n", &[("0001_init.sql", "-- revision")]);
    assert_eq!(std::fs::read_to_string(project.config_path()).unwrap(), "[database]\n");
    assert_eq!(project.copy_revisions_from(fixture.migrations_dir()), 2);
    let mut names: Vec<String> = walk(&project.migrations_dir());
    names.sort();
    assert_eq!(names, ["0001_init.sql", "a.sql", "sub/b.sql"]);
    assert_eq!(
        std::fs::read_to_string(project.migrations_dir().join("sub/b.sql")).unwrap(),
        "-- b"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            out.extend(walk(&path).into_iter().map(|n| format!("{name}/{n}")));
        } else {
            out.push(name);
        }
    }
    out
}

const SCHEMA_SQL: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE account (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    mood mood DEFAULT 'ok',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE note (
    id serial PRIMARY KEY,
    account_id bigint REFERENCES account (id) ON DELETE CASCADE,
    body varchar(200) CHECK (body <> '')
);
CREATE INDEX note_account_idx ON note (account_id);
CREATE VIEW recent AS SELECT id, email FROM account WHERE created_at > now() - interval '1 day';
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.created_at = now(); RETURN NEW; END $$;
CREATE TRIGGER account_touch BEFORE UPDATE ON account FOR EACH ROW EXECUTE FUNCTION touch();
CREATE DOMAIN pos AS int DEFAULT 1 NOT NULL CONSTRAINT pos_check CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
ALTER TABLE note ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY own ON note AS RESTRICTIVE FOR UPDATE TO pg_monitor USING (account_id > 0) WITH CHECK (account_id < 1000);
";

#[tokio::test]
async fn catalog_snapshots_compare_schemas_structurally() {
    let db = TestDb::new("snapshot");
    for schema in ["tenant_a", "tenant_b"] {
        db.execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema};{SCHEMA_SQL}"
        ));
    }
    let client = db.client().await;
    let a = catalog_snapshot(&client, "tenant_a").await;
    let b = catalog_snapshot(&client, "tenant_b").await;
    assert_eq!(a, b);
    for line in [
        "table account",
        "column account.id bigint not null generated always as identity",
        "column note.id integer not null default nextval('note_id_seq'::regclass)",
        "constraint note.note_account_id_fkey FOREIGN KEY (account_id) REFERENCES account(id) ON DELETE CASCADE",
        "index note.note_account_idx CREATE INDEX note_account_idx ON note USING btree (account_id)",
        "type mood enum ('sad', 'ok')",
        "view recent",
        "trigger account.account_touch CREATE TRIGGER account_touch BEFORE UPDATE ON account \
         FOR EACH ROW EXECUTE FUNCTION touch()",
        "table note row level security forced",
        "type pos domain integer default 1 not null",
        "domain constraint pos.pos_check CHECK ((VALUE > 0))",
        "type pair composite",
        "column pair.b text",
        "policy note.own restrictive for w to pg_monitor using (account_id > 0) with check (account_id < 1000)",
    ] {
        assert!(a.lines().any(|l| l == line), "{line:?} missing from:\n{a}");
    }
    let search_path: String = client.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(search_path, "\"$user\", public");

    db.execute("ALTER TABLE tenant_b.note ALTER COLUMN body TYPE text");
    assert_ne!(catalog_snapshot(&client, "tenant_b").await, a);
    assert_eq!(tables(&client, "tenant_a").await, ["account", "note"]);
}

#[tokio::test]
async fn version_rows_reads_the_version_table() {
    let db = TestDb::new("version rows");
    db.execute("CREATE TABLE tenant_versions (version_num varchar(32) PRIMARY KEY); INSERT INTO tenant_versions VALUES ('b2'), ('a1')");
    let client = db.client().await;
    assert_eq!(version_rows(&client, "tenant_versions").await, ["a1", "b2"]);
    assert_eq!(version_rows(&client, "public.tenant_versions").await, ["a1", "b2"]);
    assert_eq!(version_rows(&client, "missing_versions").await, Vec::<String>::new());
}

#[test]
fn many_tests_create_databases_in_parallel() {
    let threads: Vec<_> = (0..12)
        .map(|i| {
            std::thread::spawn(move || {
                let db = TestDb::new(&format!("parallel {i}"));
                db.execute(&format!("CREATE TABLE t{i} (id int)"));
                db.name().to_string()
            })
        })
        .collect();
    let names: std::collections::HashSet<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(names.len(), 12);
}
