//! Tenant isolation: a tenant's run touches only that tenant. A schema tenant never falls through to `public`,
//! bookkeeping names the tenant's schema whatever a revision does to `search_path`, and nothing of one tenant's
//! session reaches the next tenant on a pooled connection.

use serde_json::Value;

use crate::fleet_support::{Fleet, Revisions, TenantInfo, REPO_HEAD};
use crate::harness::{tables, version_rows, VERSION_TABLE};

/// Adds a schema tenant whose schema is never created, and rewrites the tenants file.
fn add_ghost(fleet: &mut Fleet, max_connections: usize) {
    fleet.tenants.push(TenantInfo {
        id: "ghost".into(),
        schema: Some("ghost_schema".into()),
        database: None,
        tags: vec![("kind".into(), "schema".into()), ("parity".into(), "odd".into())],
    });
    fleet.write_tenants(max_connections, "");
}

fn tenant_status(fleet: &Fleet, id: &str) -> Value {
    let status = fleet.status(None);
    Fleet::status_tenants(&status)
        .remove(id)
        .unwrap_or_else(|| panic!("{id} in {status}"))
}

#[tokio::test]
async fn fleet_missing_schema_fails_the_tenant_and_creates_nothing_in_public() {
    let mut fleet = Fleet::new("iso_missing", 2, 0, Revisions::Repo, 2);
    add_ghost(&mut fleet, 2);

    let out = fleet.upgrade(&[]).assert_code(1);
    let ghost = tenant_status(&fleet, "ghost");
    assert_eq!(ghost["status"], "failed", "{ghost}\n{}", out.report());
    assert_eq!(ghost["error_kind"], "schema_missing", "{ghost}");
    assert!(
        ghost["error"].as_str().unwrap_or_default().contains("ghost_schema"),
        "{ghost}"
    );
    for id in ["tenant_0001", "tenant_0002"] {
        assert_eq!(tenant_status(&fleet, id)["status"], "succeeded", "{id}");
    }

    let client = fleet.db.client().await;
    assert!(tables(&client, "public").await.is_empty(), "nothing may land in public");
    let schemas: Vec<String> = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname = 'ghost_schema'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(schemas.is_empty(), "the missing schema must not be created");

    // `fleet current` lists it as missing, never as "at base".
    let current = fleet.fleet(&["current", "--format", "json"]).assert_code(1).json();
    let missing = current["missing"].as_array().expect("missing list");
    assert_eq!(missing.len(), 1, "{current}");
    assert_eq!(missing[0]["id"], "ghost", "{current}");
    assert_eq!(current["at"]["base"], Value::Null, "{current}");
    assert_eq!(current["at"][REPO_HEAD], 2, "{current}");
    let text = fleet.fleet(&["current"]).assert_code(1).stdout;
    assert!(text.contains("missing: 1") && text.contains("ghost"), "{text}");
}

#[tokio::test]
async fn fleet_downgrade_of_a_missing_schema_leaves_public_alone() {
    let mut fleet = Fleet::new("iso_missing_down", 1, 0, Revisions::Repo, 2);
    // `public` is managed separately and holds data that looks like a tenant at head.
    fleet.upgrade(&[]).assert_success();
    fleet.db.execute(&format!(
        "CREATE TABLE public.users (id bigint PRIMARY KEY); INSERT INTO public.users VALUES (1), (2);
         CREATE TABLE public.{VERSION_TABLE} (version_num varchar(255) PRIMARY KEY);
         INSERT INTO public.{VERSION_TABLE} VALUES ('{REPO_HEAD}');"
    ));
    add_ghost(&mut fleet, 2);

    let out = fleet
        .fleet(&["downgrade", "base", "--progress", "none", "--tenant", "ghost"])
        .assert_code(1);
    let ghost = tenant_status(&fleet, "ghost");
    assert_eq!(ghost["error_kind"], "schema_missing", "{ghost}\n{}", out.report());

    let client = fleet.db.client().await;
    let n_users: i64 = client
        .query_one("SELECT count(*) FROM public.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n_users, 2);
    assert_eq!(
        version_rows(&client, &format!("public.{VERSION_TABLE}")).await,
        [REPO_HEAD]
    );
}

#[tokio::test]
async fn fleet_new_empty_schema_is_migrated_instead_of_reading_public() {
    let fleet = Fleet::new("iso_empty", 1, 0, Revisions::Repo, 2);
    // `public` has its own version table at head; the new, empty tenant schema must not read it.
    fleet.db.execute(&format!(
        "CREATE TABLE public.{VERSION_TABLE} (version_num varchar(255) PRIMARY KEY);
         INSERT INTO public.{VERSION_TABLE} VALUES ('{REPO_HEAD}');"
    ));
    fleet.upgrade(&[]).assert_success();
    let status = tenant_status(&fleet, "tenant_0001");
    assert_eq!(status["status"], "succeeded", "{status}");
    let versions = fleet.versions().await;
    assert_eq!(versions["tenant_0001"], [REPO_HEAD]);
    let client = fleet.db.client().await;
    assert_eq!(tables(&client, "public").await, [VERSION_TABLE]);
}

#[tokio::test]
async fn fleet_revision_changing_search_path_cannot_redirect_bookkeeping() {
    let fleet = Fleet::new("iso_search_path", 2, 0, Revisions::Fixture("fleet_search_path"), 1);
    fleet.db.execute(&format!(
        "CREATE TABLE public.{VERSION_TABLE} (version_num varchar(255) PRIMARY KEY);
         INSERT INTO public.{VERSION_TABLE} VALUES ('managed_elsewhere');"
    ));
    let out = fleet.upgrade(&["--concurrency", "1"]).assert_success();
    let versions = fleet.versions().await;
    for id in ["tenant_0001", "tenant_0002"] {
        assert_eq!(versions[id], ["ff66ff66ff66"], "{id}\n{}", out.report());
    }
    let client = fleet.db.client().await;
    assert_eq!(
        version_rows(&client, &format!("public.{VERSION_TABLE}")).await,
        ["managed_elsewhere"]
    );
    // No history or other bookkeeping table was created in public either.
    assert_eq!(tables(&client, "public").await, [VERSION_TABLE]);
    assert_eq!(
        fleet.user_tables().await["tenant_0002"],
        ["mine"],
        "the next tenant on the same connection starts from its own schema again"
    );
}

/// A role a revision can `SET ROLE` to that may still write the tenant's tables, named in `public.leak_role`.
fn create_leak_role(fleet: &Fleet) -> String {
    let role = format!("{}_role", fleet.db.name());
    fleet.db.execute(&format!(
        "CREATE ROLE {role}; DO $$BEGIN EXECUTE format('GRANT %I TO {role}', current_user); END$$;
         CREATE TABLE public.leak_role (name text); INSERT INTO public.leak_role VALUES ('{role}');"
    ));
    role
}

#[tokio::test]
async fn fleet_session_state_of_one_tenant_never_reaches_the_next() {
    // One pooled connection serves every tenant in turn.
    let fleet = Fleet::new("iso_leak", 5, 0, Revisions::Fixture("fleet_session_leak"), 1);
    let role = create_leak_role(&fleet);
    let out = fleet.upgrade(&["--concurrency", "1"]).output();

    let client = fleet.db.client().await;
    let mut seen = Vec::new();
    for t in &fleet.tenants {
        let schema = t.schema.as_deref().expect("schema tenants");
        let row = client
            .query_opt(
                &format!(
                    "SELECT replication_role, statement_timeout, is_own_role, has_temp_table, n_prepared, n_advisory \
                     FROM {schema}.observed"
                ),
                &[],
            )
            .await;
        let observed = match row {
            Ok(Some(r)) => format!(
                "{} {} own_role={} temp={} prepared={} advisory={}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, bool>(2),
                r.get::<_, bool>(3),
                r.get::<_, i64>(4),
                r.get::<_, i64>(5)
            ),
            other => format!("no observation: {other:?}"),
        };
        seen.push((t.id.clone(), observed));
    }
    client.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).await.ok();
    let clean = "origin 0 own_role=true temp=false prepared=0 advisory=0";
    assert!(seen.iter().all(|(_, o)| o == clean), "{seen:#?}\n{}", out.report());
    out.check_code(0).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs the `fleet_revision_reset` fixture under `config` and checks what its second revision saw.
async fn check_reset(config: &str, replication_role: &str, statement_timeout: &str) {
    let fleet = Fleet::new("iso_reset", 2, 0, Revisions::Fixture("fleet_revision_reset"), 1);
    fleet.project.write("flotilla.toml", config);
    fleet.upgrade(&["--concurrency", "1"]).assert_success();
    let client = fleet.db.client().await;
    for t in &fleet.tenants {
        let schema = t.schema.as_deref().expect("schema tenants");
        let r = client
            .query_one(
                &format!(
                    "SELECT replication_role, statement_timeout, search_path, n_migration_locks FROM {schema}.observed"
                ),
                &[],
            )
            .await
            .unwrap();
        let (role, timeout): (String, String) = (r.get(0), r.get(1));
        assert_eq!(
            (role.as_str(), timeout.as_str()),
            (replication_role, statement_timeout),
            "{schema}: {config}"
        );
        assert_eq!(r.get::<_, String>(2), format!("{schema}, public"), "{config}");
        assert_eq!(
            r.get::<_, i64>(3),
            1,
            "the migration lock is held throughout ({config})"
        );
    }
}

#[tokio::test]
async fn fleet_session_settings_persist_between_revisions_as_in_alembic() {
    check_reset("shared_schemas = [\"public\"]\n", "replica", "2min").await;
}

#[tokio::test]
async fn fleet_reset_session_per_revision_starts_each_revision_clean() {
    check_reset(
        "shared_schemas = [\"public\"]\nreset_session = \"revision\"\n",
        "origin",
        "0",
    )
    .await;
}

#[test]
fn fleet_drift_sees_no_drift_from_extensions_in_a_shared_schema() {
    let fleet = Fleet::new("iso_drift", 2, 0, Revisions::Fixture("fleet_shared_ext"), 1);
    fleet.project.write(
        "flotilla.toml",
        &format!(
            "dev_url = \"{}\"\nshared_schemas = [\"public\"]\n",
            crate::harness::cluster().url()
        ),
    );
    // One tenant at a time: two tenants creating the same extension at once collide (a shared revision set
    // that runs once per database is not built yet).
    fleet.upgrade(&["--concurrency", "1"]).assert_success();
    let drift = fleet.fleet(&["drift", "--format", "json"]).output();
    let json = drift.json();
    assert_eq!(json["n_drifted"], 0, "{json:#}\n{}", drift.report());
    assert_eq!(json["n_tenants"], 2, "{json:#}");
    drift.check_code(0).unwrap_or_else(|e| panic!("{e}"));
}
