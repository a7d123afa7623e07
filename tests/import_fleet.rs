//! `flotilla fleet stamp --from FORMAT`: every tenant adopted from its own copy of the other tool's table
//! (schema tenants in their schema, database tenants in `public`), through the fleet runner and its ledger; a
//! tenant whose table matches no point of the imported order fails unchanged while the others are stamped.

use crate::fleet_support::{Fleet, Revisions};
use crate::harness::{block_on, catalog_snapshot, connect, TestDb};
use crate::import_plain::STEPS;
use crate::single_support::fl;

const SQLX_TABLE: &str = "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
     installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, \
     execution_time BIGINT NOT NULL);\n";

/// SQL applying `applied` steps directly and recording `recorded` versions in sqlx's table.
fn as_sqlx_did(applied: usize, recorded: &[usize]) -> String {
    let mut sql: String = STEPS[..applied].iter().map(|s| s.up).collect();
    sql.push_str(SQLX_TABLE);
    for v in recorded {
        sql.push_str(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({v}, 'step', true, '\\x00', 1);\n"
        ));
    }
    sql
}

fn snapshot_of(url: &str, schema: &str) -> String {
    let (url, schema) = (url.to_string(), schema.to_string());
    block_on(async move { catalog_snapshot(&connect(&url).await.expect("connect"), &schema).await })
}

#[tokio::test]
async fn fleet_stamp_from_sqlx_adopts_each_tenant_and_leaves_a_gap_unchanged() {
    let fleet = Fleet::new("import_fleet", 2, 1, Revisions::Fixture("import/empty"), 4);
    let source = fleet.project.path().join("source");
    for (i, s) in STEPS.iter().enumerate() {
        let marker = if s.is_no_transaction { "-- no-transaction\n" } else { "" };
        std::fs::create_dir_all(&source).expect("source dir");
        std::fs::write(
            source.join(format!("{}_{}.up.sql", i + 1, s.name)),
            format!("{marker}{}", s.up),
        )
        .expect("up");
        std::fs::write(source.join(format!("{}_{}.down.sql", i + 1, s.name)), s.down).expect("down");
    }
    fleet
        .project
        .flotilla()
        .args(["import", "sqlx", "--from", "source", "--into", "migrations"])
        .assert_success();

    // tenant_0001 is two revisions in, tenant_0002 has a gap, db_01 is four revisions in.
    fleet
        .db
        .psql()
        .stdin(format!("SET search_path = tenant_0001;\n{}", as_sqlx_did(2, &[1, 2])))
        .assert_success();
    fleet
        .db
        .psql()
        .stdin(format!("SET search_path = tenant_0002;\n{}", as_sqlx_did(1, &[1, 3])))
        .assert_success();
    fleet.dbs[0]
        .psql()
        .stdin(as_sqlx_did(4, &[1, 2, 3, 4]))
        .assert_success();

    // The dry run reads every table: the tenant with a gap already fails there.
    let out = fleet
        .fleet(&["stamp", "--from", "sqlx", "--progress", "none", "--dry-run"])
        .assert_code(1);
    assert!(
        out.stdout.contains("would change 2 tenants") && out.stdout.contains("failed 1"),
        "{}",
        out.report()
    );
    let versions = fleet.versions().await;
    assert!(
        versions.values().all(Vec::is_empty),
        "a dry run changes nothing: {versions:?}\n{}",
        out.report()
    );

    let out = fleet
        .fleet(&["stamp", "--from", "sqlx", "--progress", "none"])
        .assert_code(1);
    let versions = fleet.versions().await;
    assert_eq!(versions["tenant_0001"], ["2"], "{}", out.report());
    assert_eq!(versions["tenant_0002"], Vec::<String>::new(), "{}", out.report());
    assert_eq!(versions["db_01"], ["4"], "{}", out.report());
    let status = fleet.status(None);
    let tenants = Fleet::status_tenants(&status);
    assert_eq!(tenants["tenant_0001"]["status"], "succeeded", "{status}");
    assert_eq!(tenants["db_01"]["status"], "succeeded", "{status}");
    assert_eq!(tenants["tenant_0002"]["status"], "failed", "{status}");
    let error = tenants["tenant_0002"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not a prefix") && error.contains("nothing was changed"),
        "{status}"
    );

    // Stamping again only retries what is left: the adopted tenants are skipped.
    let out = fleet
        .fleet(&[
            "stamp",
            "--from",
            "sqlx",
            "--progress",
            "none",
            "--exclude",
            "tenant_0002",
        ])
        .assert_success();
    let status = fleet.status(None);
    let tenants = Fleet::status_tenants(&status);
    assert_eq!(
        tenants["tenant_0001"]["status"],
        "skipped",
        "{status}\n{}",
        out.report()
    );

    fleet.upgrade(&["--exclude", "tenant_0002"]).assert_success();
    let versions = fleet.versions().await;
    assert_eq!(versions["tenant_0001"], ["5"]);
    assert_eq!(versions["db_01"], ["5"]);

    // Both adopted tenants match a database that ran every file directly.
    let direct = TestDb::new("import_fleet_direct");
    direct.psql().stdin(as_sqlx_did(5, &[1, 2, 3, 4, 5])).assert_success();
    fl(&fleet.project, &direct, &["stamp", "head"]).assert_success();
    let reference = snapshot_of(direct.url(), "public");
    assert_eq!(snapshot_of(fleet.db.url(), "tenant_0001"), reference);
    assert_eq!(snapshot_of(fleet.dbs[0].url(), "public"), reference);
}
