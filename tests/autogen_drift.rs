//! `check` and `fleet drift` find no drift in a schema produced by the revisions, for every kind autogenerate
//! compares, on schema tenants and a database tenant alike, with an extension type living in a shared schema.

use crate::autogen_grants::TestRoles;
use crate::harness::{cluster, TempProject, TestDb};

const SHARED: &str = "-- revision: aaaaaaaaaaaa\n-- down_revision:\n\n-- flotilla:upgrade\n\
CREATE SCHEMA IF NOT EXISTS ext;\nCREATE EXTENSION IF NOT EXISTS citext WITH SCHEMA ext;\n\n-- flotilla:downgrade\n";

/// Every kind in one schema, unqualified (a schema tenant's `search_path` puts its own schema first), the
/// extension type qualified (a database tenant's `search_path` does not hold `ext`).
fn everything(role: &str) -> String {
    format!(
        "CREATE TYPE order_status AS ENUM ('pending', 'shipped');
CREATE DOMAIN email AS ext.citext CHECK (VALUE LIKE '%@%');
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY (START WITH 100 INCREMENT BY 5) PRIMARY KEY,
    mail email, name text COLLATE \"C\", nick ext.citext) WITH (fillfactor = 80, autovacuum_enabled = false);
CREATE TABLE orders (id int PRIMARY KEY, customer bigint REFERENCES customers (id) DEFERRABLE INITIALLY DEFERRED,
    status order_status NOT NULL DEFAULT 'pending', note text DEFAULT ('shipped'::order_status)::text,
    is_open boolean GENERATED ALWAYS AS (status = 'pending') STORED,
    during tsrange, score floatrange,
    CONSTRAINT open_note CHECK (status <> 'shipped' OR note IS NOT NULL),
    CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&));
CREATE INDEX orders_pending ON orders (id) WHERE status = 'pending';
CREATE SEQUENCE order_numbers OWNED BY orders.id;
CREATE FUNCTION is_open(s order_status) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT s = 'pending' $$;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := 'touched'; RETURN NEW; END $$;
CREATE TRIGGER touch_open BEFORE UPDATE ON orders FOR EACH ROW WHEN (is_open(NEW.status)) EXECUTE FUNCTION touch();
CREATE VIEW open_orders AS SELECT id, status FROM orders WHERE status = 'pending';
CREATE MATERIALIZED VIEW status_counts AS SELECT status, count(*) AS n FROM orders GROUP BY status;
CREATE UNIQUE INDEX status_counts_status ON status_counts (status);
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY open_only ON orders FOR SELECT TO {role} USING (status = 'pending');
CREATE TABLE events (id int NOT NULL, at date NOT NULL, kind text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_other PARTITION OF events DEFAULT;
CREATE INDEX events_kind ON events (kind);
GRANT SELECT, INSERT ON orders TO {role};
GRANT SELECT ON open_orders TO {role} WITH GRANT OPTION;
REVOKE EXECUTE ON FUNCTION is_open(order_status) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION is_open(order_status) TO {role};
GRANT USAGE ON SEQUENCE order_numbers TO {role};
REVOKE USAGE ON TYPE order_status FROM PUBLIC;
GRANT USAGE ON TYPE order_status TO {role};
ALTER FUNCTION touch() OWNER TO {role};
"
    )
}

fn revision(id: &str, down: &str, upgrade: &str) -> String {
    format!("-- revision: {id}\n-- down_revision: {down}\n\n-- flotilla:upgrade\n{upgrade}\n\n-- flotilla:downgrade\n")
}

#[tokio::test]
async fn no_drift_for_every_kind_on_schema_and_database_tenants() {
    let roles = TestRoles::new("drift kinds", 1);
    let role = &roles.names[0];
    let host = TestDb::new("drift kinds host");
    let solo = TestDb::new("drift kinds solo");
    host.execute("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b;");
    let config = format!(
        "script_location = \"migrations\"\ndev_url = \"{}\"\ntenants = \"tenants.toml\"\n\
         shared_schemas = [\"ext\"]\n\n[shared]\nversion_locations = [\"shared\"]\n",
        cluster().url()
    );
    let project = TempProject::new(&config);
    project.write("shared/aaaaaaaaaaaa_ext.sql", SHARED);
    project.revision("000000000001_all.sql", &revision("000000000001", "", &everything(role)));
    // A label added afterwards: the catalog of an upgraded tenant still matches a scratch build.
    project.revision(
        "000000000002_label.sql",
        &revision(
            "000000000002",
            "000000000001",
            "ALTER TYPE order_status ADD VALUE 'cancelled';",
        ),
    );
    project.write(
        "tenants.toml",
        &format!(
            "[[servers]]\nname = \"main\"\nurl = \"{}\"\n\n\
             [[tenants]]\nid = \"a\"\nserver = \"main\"\nschema = \"tenant_a\"\n\n\
             [[tenants]]\nid = \"b\"\nserver = \"main\"\nschema = \"tenant_b\"\n\n\
             [[tenants]]\nid = \"solo\"\nserver = \"main\"\ndatabase = \"{}\"\n",
            host.url(),
            solo.name()
        ),
    );
    project
        .flotilla()
        .args(["fleet", "upgrade", "head", "--progress", "none"])
        .assert_success();
    let json = project
        .flotilla()
        .args(["fleet", "drift", "--format", "json"])
        .assert_code(0)
        .json();
    assert_eq!(json["n_drifted"], 0, "{json:#}");
    assert_eq!(json["n_failed"], 0, "{json:#}");
    assert_eq!(json["n_tenants"], 3, "{json:#}");

    // The same schema as a desired schema: check finds nothing to do.
    project.write(
        "schema/schema.sql",
        &format!(
            "CREATE SCHEMA ext; CREATE EXTENSION citext WITH SCHEMA ext;\n{}\
             ALTER TYPE order_status ADD VALUE 'cancelled';\n",
            everything(role)
        ),
    );
    let out = project.flotilla().arg("check").assert_code(0);
    assert!(out.stdout.contains("No differences"), "{}", out.report());

    // A hand-made change in one schema tenant is drift there only.
    host.execute(&format!("REVOKE SELECT ON tenant_b.orders FROM {role}"));
    let json = project
        .flotilla()
        .args(["fleet", "drift", "--format", "json"])
        .assert_code(1)
        .json();
    assert_eq!(json["groups"][0]["tenants"], serde_json::json!(["b"]), "{json:#}");
    let differences = json["groups"][0]["differences"].to_string();
    assert!(
        differences.contains(&format!("privilege SELECT on table orders to {role}")),
        "{differences}"
    );
    // The databases go before the role (declared after it), so the role can be dropped.
}
