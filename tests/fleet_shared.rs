//! The shared revision set (`[shared]`): what belongs to a database is migrated once per database, before its
//! tenants, and tenant revisions that depend on it are not started where it is missing.

use std::path::Path;

use crate::fleet_support::{Fleet, Revisions};
use crate::harness::{fixtures_dir, version_rows, TempProject, TestDb};

const SHARED: &str = "5a5a5a5a5a5a";
const TENANT_HEAD: &str = "8c8c8c8c8c8c";
const CONFIG: &str = "shared_schemas = [\"public\"]\n\n[shared]\nversion_locations = [\"shared\"]\n";

/// Copies the fixture's shared revisions into `shared/` and writes flotilla.toml with `[shared]`.
fn add_shared(project: &TempProject, config: &str) {
    let src = fixtures_dir().join("fleet_shared/shared");
    for entry in std::fs::read_dir(&src).expect("read the shared fixture") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read a shared revision");
        let name = path.file_name().expect("file name").to_string_lossy().to_string();
        project.write(Path::new("shared").join(name), &text);
    }
    project.write("flotilla.toml", config);
}

fn shared_fleet(hint: &str, n_schemas: usize, n_databases: usize, max_connections: usize) -> Fleet {
    let fleet = Fleet::new(
        hint,
        n_schemas,
        n_databases,
        Revisions::Fixture("fleet_shared/tenant"),
        max_connections,
    );
    add_shared(&fleet.project, CONFIG);
    fleet
}

async fn shared_history(url: &str) -> Vec<(String, String)> {
    let client = crate::harness::connect(url).await.expect("connect");
    client
        .query(
            "SELECT revision, direction FROM public.flotilla_shared_history WHERE status = 'applied' ORDER BY id",
            &[],
        )
        .await
        .expect("read the shared history")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn fleet_applies_shared_revisions_once_per_database_before_its_tenants() {
    // Twenty schema tenants of one database and two database tenants, four at a time: without a shared set, the
    // tenants' own `CREATE EXTENSION IF NOT EXISTS` collide (23505 on pg_extension_name_index).
    let fleet = shared_fleet("shared_once", 20, 2, 6);
    let out = fleet.upgrade(&["--concurrency", "4"]).assert_success();

    let versions = fleet.versions().await;
    assert!(
        versions.values().all(|v| *v == [TENANT_HEAD]),
        "{versions:?}\n{}",
        out.report()
    );
    // Once in the server's database (for all twenty schema tenants), once in each tenant database.
    assert_eq!(
        shared_history(fleet.db.url()).await,
        [(SHARED.to_string(), "up".to_string())]
    );
    for db in &fleet.dbs {
        assert_eq!(shared_history(db.url()).await, [(SHARED.to_string(), "up".to_string())]);
    }
    let client = fleet.db.client().await;
    assert_eq!(version_rows(&client, "public.flotilla_shared_version").await, [SHARED]);

    // A second run finds the shared set up to date and changes nothing.
    fleet.upgrade(&["--concurrency", "4"]).assert_success();
    assert_eq!(shared_history(fleet.db.url()).await.len(), 1);
}

#[tokio::test]
async fn fleet_shared_failure_fails_the_tenants_of_that_database_without_starting_them() {
    let fleet = shared_fleet("shared_fail", 3, 0, 2);
    fleet.project.write(
        "shared/20260402_0800_6b6b6b6b6b6b_broken.sql",
        "-- revision: 6b6b6b6b6b6b\n-- down_revision: 5a5a5a5a5a5a\n\n-- flotilla:upgrade\nSELECT 1/0;\n\n\
         -- flotilla:downgrade\nSELECT 1;\n",
    );
    let out = fleet.upgrade(&[]).assert_code(1);
    let status = fleet.status(None);
    for (id, t) in Fleet::status_tenants(&status) {
        assert_eq!(t["status"], "failed", "{id}: {t}\n{}", out.report());
        assert_eq!(t["error_kind"], "shared_failed", "{id}: {t}");
        assert!(
            t["error"].as_str().unwrap_or_default().contains("6b6b6b6b6b6b"),
            "{id}: {t}"
        );
    }
    // No tenant started: no tenant has a version table, and the shared set stopped at its last good revision.
    let versions = fleet.versions().await;
    assert!(versions.values().all(Vec::is_empty), "{versions:?}");
    let client = fleet.db.client().await;
    assert_eq!(version_rows(&client, "public.flotilla_shared_version").await, [SHARED]);
}

#[test]
fn fleet_commands_refuse_shared_flag() {
    let fleet = shared_fleet("shared_flag", 1, 0, 2);
    let out = fleet.upgrade(&["--shared"]).assert_code(2);
    assert!(
        out.stderr.contains("--shared is for single-database commands"),
        "{}",
        out.report()
    );
}

#[tokio::test]
async fn single_database_needs_the_shared_set_first() {
    let db = TestDb::new("shared_single");
    let project = TempProject::new("");
    project.copy_fixture("fleet_shared/tenant");
    add_shared(&project, &format!("url = \"{}\"\n{CONFIG}", db.url()));

    let out = project.flotilla().args(["upgrade", "head"]).assert_code(1);
    assert!(
        out.stderr.contains("depends on shared revision 5a5a5a5a5a5a")
            && out.stderr.contains("flotilla upgrade --shared"),
        "{}",
        out.report()
    );
    let client = db.client().await;
    assert!(version_rows(&client, "public.flotilla_version").await.is_empty());

    project
        .flotilla()
        .args(["upgrade", "--shared", "heads"])
        .assert_success();
    let current = project.flotilla().args(["current", "--shared"]).assert_success();
    assert!(current.stdout.contains(SHARED), "{}", current.report());
    project.flotilla().args(["upgrade", "head"]).assert_success();
    assert_eq!(version_rows(&client, "public.flotilla_version").await, [TENANT_HEAD]);
    // The tenant graph does not hold the shared revision: `history` lists only tenant revisions.
    let history = project.flotilla().arg("history").assert_success();
    assert!(!history.stdout.contains(SHARED), "{}", history.report());

    // Without [shared], the dependency on an unknown revision is a load error.
    project.write("flotilla.toml", &format!("url = \"{}\"\n", db.url()));
    project.flotilla().args(["upgrade", "head"]).assert_code(2);
}
