//! Privileges round-trip through autogenerate (corpus style), with roles made for each test and dropped after it.

use crate::autogen_corpus::check_case;
use crate::harness::{TempProject, TestDb};

/// Roles with names unique to this test, dropped again when the test passed (roles are shared by the cluster).
pub struct TestRoles {
    pub admin: TestDb,
    pub names: Vec<String>,
}

impl TestRoles {
    pub fn new(hint: &str, n: usize) -> TestRoles {
        let admin = TestDb::new(&format!("roles {hint}"));
        let names: Vec<String> = (0..n).map(|i| format!("{}_r{i}", admin.name())).collect();
        let sql: String = names.iter().map(|r| format!("CREATE ROLE {r} NOLOGIN;")).collect();
        admin.execute(&sql);
        TestRoles { admin, names }
    }
}

impl Drop for TestRoles {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let sql: String = self.names.iter().map(|r| format!("DROP ROLE IF EXISTS {r};")).collect();
        self.admin.execute(&sql);
    }
}

const OBJECTS: &str = "CREATE TABLE t (id int PRIMARY KEY); CREATE SEQUENCE s; \
    CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$; CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$; \
    CREATE SCHEMA app; CREATE TYPE mood AS ENUM ('a', 'b'); CREATE DOMAIN pos AS int; CREATE VIEW v AS SELECT id FROM t;";

fn granted(r: &str, w: &str) -> String {
    format!(
        "{OBJECTS} GRANT SELECT, INSERT ON t TO {r}; GRANT UPDATE ON t TO {w} WITH GRANT OPTION; \
         GRANT USAGE ON SEQUENCE s TO {w}; REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC; GRANT EXECUTE ON FUNCTION f() TO {r}; \
         REVOKE EXECUTE ON PROCEDURE p() FROM PUBLIC; GRANT USAGE, CREATE ON SCHEMA app TO {r}; \
         REVOKE USAGE ON TYPE mood FROM PUBLIC; GRANT USAGE ON TYPE mood TO {r}; GRANT USAGE ON DOMAIN pos TO {w}; \
         GRANT SELECT ON v TO {r}; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO {r}; \
         ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO {w}; \
         ALTER DEFAULT PRIVILEGES REVOKE USAGE ON TYPES FROM PUBLIC;"
    )
}

#[tokio::test]
async fn grants_on_existing_objects() {
    let roles = TestRoles::new("grants existing", 2);
    let (r, w) = (&roles.names[0], &roles.names[1]);
    let file = check_case("grants_existing", OBJECTS, &granted(r, w), &[]).await;
    assert!(
        file.contains(&format!("GRANT UPDATE ON TABLE t TO {w} WITH GRANT OPTION;")),
        "{file}"
    );
    assert!(file.contains("REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC;"), "{file}");
    assert!(
        file.contains(&format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA app GRANT SELECT ON TABLES TO {r};"
        )),
        "{file}"
    );
    assert!(
        file.contains("ALTER DEFAULT PRIVILEGES FOR ROLE postgres REVOKE USAGE ON TYPES FROM PUBLIC;"),
        "{file}"
    );
    // A privilege granted away goes back in the downgrade: the corpus round trip checks it.
    check_case("grants_revoked", &granted(r, w), OBJECTS, &[]).await;
}

#[tokio::test]
async fn grants_on_new_and_dropped_objects() {
    let roles = TestRoles::new("grants new", 2);
    let (r, w) = (&roles.names[0], &roles.names[1]);
    check_case("grants_new", "", &granted(r, w), &[]).await;
    check_case("grants_dropped", &granted(r, w), "", &[]).await;
}

#[tokio::test]
async fn grants_survive_recreated_objects() {
    let roles = TestRoles::new("grants recreated", 1);
    let r = &roles.names[0];
    let before = format!(
        "CREATE TYPE mood AS ENUM ('a', 'b', 'c'); REVOKE USAGE ON TYPE mood FROM PUBLIC; GRANT USAGE ON TYPE mood TO {r}; \
         CREATE TABLE t (id int, n int, m mood); CREATE VIEW v AS SELECT id FROM t; GRANT SELECT ON v TO {r}; \
         CREATE FUNCTION f(x mood) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$; REVOKE ALL ON FUNCTION f(mood) FROM PUBLIC; \
         GRANT EXECUTE ON FUNCTION f(mood) TO {r};"
    );
    let after = before
        .replace("'a', 'b', 'c'", "'a', 'b'")
        .replace("SELECT id FROM t", "SELECT id, n FROM t");
    check_case("grants_recreated", &before, &after, &[]).await;
}

#[tokio::test]
async fn a_grant_to_a_missing_role_is_reported() {
    let roles = TestRoles::new("grants missing", 1);
    let r = roles.names[0].clone();
    let db = TestDb::new("grants missing target");
    let project = TempProject::new(&format!("script_location = \"migrations\"\nurl = \"{}\"\n", db.url()));
    project.write(
        "schema/schema.sql",
        &format!("CREATE TABLE t (id int); GRANT SELECT ON t TO {r};"),
    );
    let out = project
        .flotilla()
        .args(["revision", "--autogenerate", "-m", "grant"])
        .assert_success();
    assert!(
        out.stdout.contains(&format!(
            "the revision grants privileges to {r}: revisions do not create roles"
        )),
        "{}",
        out.report()
    );
    roles.admin.execute(&format!("DROP ROLE {r}"));
    let out = project.flotilla().args(["upgrade", "head"]).assert_code(1);
    assert!(
        out.stderr.contains(&format!("role \"{r}\" does not exist")),
        "{}",
        out.report()
    );
    // Nothing was half applied: the table of the failed revision is not there.
    let client = db.client().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM pg_class WHERE relname = 't'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn owners_round_trip() {
    let roles = TestRoles::new("owners", 1);
    let r = &roles.names[0];
    let owned = format!(
        "{OBJECTS} ALTER TABLE t OWNER TO {r}; ALTER VIEW v OWNER TO {r}; ALTER FUNCTION f() OWNER TO {r}; \
         ALTER PROCEDURE p() OWNER TO {r}; ALTER SCHEMA app OWNER TO {r}; ALTER TYPE mood OWNER TO {r}; \
         ALTER DOMAIN pos OWNER TO {r}; ALTER SEQUENCE s OWNER TO {r};"
    );
    let file = check_case("owners_set", OBJECTS, &owned, &[]).await;
    assert!(file.contains(&format!("ALTER VIEW v OWNER TO {r};")), "{file}");
    assert!(file.contains("ALTER DOMAIN pos OWNER TO CURRENT_USER;"), "{file}");
    check_case("owners_new_and_dropped", "", &owned, &[]).await;
    // A recreated view and type get their owner again.
    let changed = owned
        .replace(
            "CREATE VIEW v AS SELECT id FROM t",
            "CREATE VIEW v AS SELECT id, id + 1 AS next FROM t",
        )
        .replace("ENUM ('a', 'b')", "ENUM ('b', 'a')");
    check_case("owners_recreated", &owned, &changed, &[]).await;
}
