//! `flotilla import alembic` against a real Alembic project (`tests/fixtures/import/alembic_project/`: two
//! roots, branches with labels, a merge, depends_on, an autocommit block, a revision that asks whether it runs
//! offline) with Alembic installed into a throwaway virtualenv: Flotilla's plans equal Alembic's, `upgrade
//! heads` gives the catalog `alembic upgrade heads` gives, and a database Alembic took half-way is stamped from
//! `alembic_version` and finished by Flotilla with the same result.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{fixtures_dir, Cmd, TempProject, TestDb};
use crate::single_support::{fl, rows, rows_of, snapshot};

/// The virtualenv's Python with Alembic and psycopg2, built once under the target directory; `None` (with the
/// reason printed) only when this machine cannot make a virtualenv.
fn alembic_python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON.get_or_init(build_venv).clone()
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn build_venv() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("alembic-venv");
    let python = dir.join("bin/python");
    let ready = |python: &Path| {
        python.exists()
            && std::process::Command::new(python)
                .args(["-c", "import alembic, psycopg2"])
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return Some(python);
    }
    let building = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let make = || run("python3", &["-m", "venv", building.to_str().expect("a UTF-8 path")]);
    let mut made = make();
    if !made.status.success() {
        let is_root = run("id", &["-u"]).stdout.starts_with(b"0\n");
        if !is_root {
            eprintln!(
                "SKIPPED import_alembic: `python3 -m venv` failed and this is not root, so python3-venv cannot be \
                 installed here: {}",
                String::from_utf8_lossy(&made.stderr)
            );
            return None;
        }
        // As scripts/pg-cluster installs postgresql: Debian's python3-venv as root.
        let _ = run("apt-get", &["update", "-q"]);
        let installed = run("apt-get", &["install", "-y", "-q", "python3-venv"]);
        assert!(
            installed.status.success(),
            "apt-get install python3-venv: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
        let _ = std::fs::remove_dir_all(&building);
        made = make();
        assert!(
            made.status.success(),
            "python3 -m venv: {}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let pip = building.join("bin/pip");
    let out = Cmd::new(&pip)
        .args(["install", "-q", "alembic", "psycopg2-binary"])
        .timeout(Duration::from_secs(600))
        .output();
    out.check_code(0)
        .unwrap_or_else(|e| panic!("pip install alembic psycopg2-binary: {e}\n{}", out.report()));
    // Another test process may have finished first: then its virtualenv is as good as this one.
    if std::fs::rename(&building, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    assert!(
        ready(&python),
        "the virtualenv at {} has no working Alembic",
        dir.display()
    );
    Some(python)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create the copy");
    for entry in std::fs::read_dir(src).expect("read the fixture") {
        let entry = entry.expect("a directory entry");
        let to = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy a fixture file");
        }
    }
}

/// The project with the Alembic fixture in `alembic/`, imported into `migrations/`; the import's JSON report.
fn imported(python: &Path) -> (TempProject, Value) {
    let project = TempProject::new("");
    copy_dir(
        &fixtures_dir().join("import/alembic_project"),
        &project.path().join("alembic"),
    );
    let out = project
        .flotilla()
        .args([
            "import",
            "alembic",
            "--from",
            "alembic",
            "--into",
            "migrations",
            "--format",
            "json",
            "--python",
        ])
        .arg(python)
        .assert_success();
    let report = out.json();
    (project, report)
}

fn alembic(project: &TempProject, python: &Path, args: &[&str]) -> String {
    let mut cmd = Cmd::new(python);
    cmd.args(["-m", "alembic"])
        .args(args)
        .current_dir(project.path().join("alembic"));
    // Alembic breaks no ties by hash order on these graphs, but pin it so a failure reproduces.
    cmd.env("PYTHONHASHSEED", "0");
    cmd.assert_success().stdout
}

fn sqlalchemy_url(db: &TestDb) -> String {
    format!("url={}", db.url().replacen("postgres://", "postgresql+psycopg2://", 1))
}

/// The revisions Alembic's offline SQL runs, in order (`-- Running upgrade A -> B` names B; downgrade, A).
fn alembic_steps(sql: &str, direction: &str) -> Vec<String> {
    sql.lines()
        .filter_map(|l| l.strip_prefix(&format!("-- Running {direction} ")))
        .map(|rest| {
            let (before, after) = rest.split_once("->").expect("an arrow");
            if direction == "upgrade" { after } else { before }.trim().to_string()
        })
        .collect()
}

fn flotilla_steps(project: &TempProject, args: &[&str]) -> Vec<String> {
    let out = project
        .flotilla()
        .args(["plan"])
        .args(args)
        .args(["--format", "json"])
        .assert_success();
    out.json()["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["revision"].as_str().expect("a revision").to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<&str> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|i| i.as_str().expect("an id"))
        .collect()
}

#[test]
fn alembic_project_is_imported_with_its_graph_and_plans() {
    let Some(python) = alembic_python() else { return };
    let (project, report) = imported(&python);
    assert_eq!(report["v"], 1);
    assert_eq!(
        report["tool"]["python"].as_str().map(|p| !p.is_empty()),
        Some(true),
        "{report}"
    );
    assert!(
        report["tool"]["alembic_version"]
            .as_str()
            .is_some_and(|v| v.starts_with('1')),
        "{report}"
    );
    assert_eq!(ids(&report["merges"]), ["g7000007"]);
    assert_eq!(ids(&report["no_transaction"]), ["e5000005"]);
    assert_eq!(ids(&report["flagged"]), ["i9000009"]);
    let by_id = |id: &str| {
        report["revisions"]
            .as_array()
            .expect("revisions")
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("{id} imported"))
            .clone()
    };
    assert_eq!(by_id("c3000003")["branch_labels"], serde_json::json!(["billing"]));
    assert_eq!(by_id("f6000006")["depends_on"], serde_json::json!(["c3000003"]));
    assert_eq!(by_id("i9000009")["depends_on"], serde_json::json!(["billing"]));
    assert_eq!(
        by_id("g7000007")["down_revisions"],
        serde_json::json!(["e5000005", "f6000006"])
    );

    for target in [
        "heads",
        "g7000007",
        "billing@head",
        "audit@head",
        "reports@head",
        "i9000009",
        "f6000006",
        "e5000005",
    ] {
        let sql = alembic(&project, &python, &["upgrade", &format!("base:{target}"), "--sql"]);
        let expected = alembic_steps(&sql, "upgrade");
        assert!(!expected.is_empty(), "{target}");
        assert_eq!(
            flotilla_steps(&project, &["upgrade", target, "--current", ""]),
            expected,
            "upgrade {target}"
        );
    }
    for (from, target) in [
        ("g7000007", "base"),
        ("g7000007", "b2000002"),
        ("g7000007", "c3000003"),
        ("g7000007", "billing@base"),
        ("i9000009", "base"),
    ] {
        let sql = alembic(&project, &python, &["downgrade", &format!("{from}:{target}"), "--sql"]);
        let expected = alembic_steps(&sql, "downgrade");
        assert!(!expected.is_empty(), "{from} -> {target}");
        assert_eq!(
            flotilla_steps(&project, &["downgrade", target, "--current", from]),
            expected,
            "downgrade {from} -> {target}"
        );
    }
}

#[test]
fn alembic_databases_are_matched_stamped_and_finished() {
    let Some(python) = alembic_python() else { return };
    let (project, _) = imported(&python);

    // Alembic all the way, then adopted: nothing left to do.
    let by_alembic = TestDb::new("import_alembic_all");
    alembic(
        &project,
        &python,
        &["-x", &sqlalchemy_url(&by_alembic), "upgrade", "heads"],
    );
    let out = fl(&project, &by_alembic, &["stamp", "--from", "alembic"]).assert_success();
    assert!(
        out.stdout.contains("Stamped from alembic_version (9 revision(s)"),
        "{}",
        out.report()
    );
    assert_eq!(rows(&by_alembic), ["g7000007", "i9000009"]);
    fl(&project, &by_alembic, &["upgrade", "heads"]).assert_success();

    // Flotilla all the way, then Alembic's own table added by Alembic: the same catalog.
    let by_flotilla = TestDb::new("import_alembic_flotilla");
    fl(&project, &by_flotilla, &["upgrade", "heads"]).assert_success();
    alembic(
        &project,
        &python,
        &["-x", &sqlalchemy_url(&by_flotilla), "stamp", "heads"],
    );
    assert_eq!(snapshot(&by_flotilla, "public"), snapshot(&by_alembic, "public"));

    // Half-way by Alembic (billing's root, and reports, which depends on billing), finished by Flotilla.
    let half = TestDb::new("import_alembic_half");
    alembic(
        &project,
        &python,
        &["-x", &sqlalchemy_url(&half), "upgrade", "c3000003"],
    );
    alembic(
        &project,
        &python,
        &["-x", &sqlalchemy_url(&half), "upgrade", "i9000009"],
    );
    // i9000009 depends on c3000003, so Alembic keeps one row for both, and so does Flotilla.
    let before = rows_of(&half, "alembic_version");
    assert_eq!(before, ["i9000009"]);
    let out = fl(&project, &half, &["stamp", "--from", "alembic"]).assert_success();
    assert!(out.stdout.contains("(5 revision(s) applied there)"), "{}", out.report());
    assert_eq!(rows(&half), ["i9000009"]);
    let out = fl(&project, &half, &["upgrade", "heads"]).assert_success();
    assert!(out.stdout.contains("Done: 4 step(s)"), "{}", out.report());
    assert_eq!(
        rows_of(&half, "alembic_version"),
        before,
        "Alembic's table is never written"
    );
    assert_eq!(snapshot(&half, "public"), snapshot(&by_alembic, "public"));

    // And back down with the downgrades Alembic rendered.
    fl(&project, &half, &["downgrade", "base"]).assert_success();
    assert_eq!(rows(&half), Vec::<String>::new());
}

#[test]
fn alembic_revisions_that_cannot_render_offline_are_flagged_and_refuse_to_run() {
    let Some(python) = alembic_python() else { return };
    let project = TempProject::new("");
    let dir = project.path().join("alembic");
    copy_dir(&fixtures_dir().join("import/alembic_project"), &dir);
    std::fs::write(
        dir.join("versions/j1000010_reads_data.py"),
        "\"\"\"reads data\"\"\"\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = \"j1000010\"\n\
         down_revision = \"i9000009\"\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    \
         n = op.get_bind().execute(sa.text(\"SELECT count(*) FROM report\")).scalar()\n    if n:\n        \
         op.execute(\"SELECT 1\")\n\n\ndef downgrade():\n    pass\n",
    )
    .expect("write the revision");
    let out = project
        .flotilla()
        .args(["import", "alembic", "--from", "alembic", "--python"])
        .arg(&python)
        .assert_success();
    assert!(
        out.stdout
            .contains("j1000010: Alembic could not render its upgrade offline"),
        "{}",
        out.report()
    );
    let file = std::fs::read_to_string(project.migrations_dir().join("0010_j1000010_reads_data.sql"))
        .expect("the flagged revision is written, not dropped");
    assert!(
        file.contains("-- Import FLAG - Alembic could not render its upgrade offline"),
        "{file}"
    );
    let db = TestDb::new("import_alembic_flagged");
    let out = fl(&project, &db, &["upgrade", "j1000010"]).assert_code(1);
    assert!(out.stderr.contains("without its upgrade SQL"), "{}", out.report());
    assert_eq!(rows(&db), ["i9000009"]);
}
