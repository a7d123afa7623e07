//! A larger schema of our own making through the corpus round trip (generate, upgrade equals the desired schema
//! by catalog, downgrade equals the previous one, upgrade again): 110 tables chained by foreign keys, enums used
//! in partial indexes, checks, defaults and trigger conditions, 24 views (some on views) and materialized views,
//! a partitioned table, triggers, policies and grants; version 2 adds and removes enum labels, retypes columns,
//! changes views, adds a partition and changes grants.

use crate::autogen_corpus::check_case_with;
use crate::autogen_grants::TestRoles;

const N_TABLES: usize = 110;
const N_VIEWS: usize = 22;

fn schema(version: u8, role: &str) -> String {
    let v2 = version == 2;
    let mut out = String::new();
    for k in 0..5 {
        let labels = match (v2, k) {
            (true, 1) => "'new', 'open'",
            (true, k) if k % 2 == 0 => "'new', 'open', 'closed', 'archived'",
            _ => "'new', 'open', 'closed'",
        };
        out.push_str(&format!("CREATE TYPE status_{k} AS ENUM ({labels});\n"));
    }
    out.push_str(&format!("GRANT USAGE ON TYPE status_0 TO {role};\n"));
    out.push_str(
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := coalesce(NEW.name, 'x'); RETURN NEW; END $$;\n\
         CREATE FUNCTION is_open_0(s status_0) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$ SELECT s = 'open' $$;\n",
    );
    for i in 0..N_TABLES {
        let k = i % 5;
        // The label a check names: status_1 loses 'closed' in version 2.
        let closed = if v2 && k == 1 { "open" } else { "closed" };
        let amount = if v2 && i % 10 == 1 {
            "numeric(14,2)"
        } else {
            "numeric(12,2)"
        };
        let default = if v2 && i % 10 == 3 { "1" } else { "0" };
        let parent = if i > 0 {
            format!(" REFERENCES t{} (id)", i - 1)
        } else {
            String::new()
        };
        let note = if v2 && i % 10 == 0 { ", note text" } else { "" };
        out.push_str(&format!(
            "CREATE TABLE t{i} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, parent_id bigint{parent}, \
             status status_{k} NOT NULL DEFAULT 'new', name text, amount {amount} DEFAULT {default}, \
             created_at timestamptz DEFAULT now(){note}, \
             CONSTRAINT t{i}_named CHECK (status <> '{closed}' OR name IS NOT NULL));\n\
             CREATE INDEX t{i}_open ON t{i} (id) WHERE status = 'open';\n"
        ));
        if v2 && i % 10 == 2 {
            out.push_str(&format!("CREATE INDEX t{i}_name ON t{i} (lower(name));\n"));
        }
        if i % 5 == 0 {
            out.push_str(&format!(
                "CREATE TRIGGER t{i}_touch BEFORE UPDATE ON t{i} FOR EACH ROW WHEN (NEW.status = 'open') EXECUTE FUNCTION touch();\n"
            ));
        }
        if i % 3 == 0 || (v2 && i % 3 == 1) {
            out.push_str(&format!("GRANT SELECT, UPDATE ON t{i} TO {role};\n"));
        }
        if i % 25 == 0 {
            out.push_str(&format!(
                "ALTER TABLE t{i} ENABLE ROW LEVEL SECURITY;\n\
                 CREATE POLICY t{i}_visible ON t{i} FOR SELECT TO {role} USING (status <> 'new');\n"
            ));
        }
    }
    for j in 0..N_VIEWS {
        let columns = if v2 && j % 4 == 0 {
            "id, status, name"
        } else {
            "id, status"
        };
        out.push_str(&format!(
            "CREATE VIEW v{j} AS SELECT {columns} FROM t{j} WHERE status <> 'new';\nGRANT SELECT ON v{j} TO {role};\n"
        ));
        if j < 4 {
            out.push_str(&format!(
                "CREATE VIEW vv{j} AS SELECT id FROM v{j} WHERE status = 'open';\n"
            ));
        }
    }
    out.push_str(
        "CREATE MATERIALIZED VIEW counts_0 AS SELECT status, count(*) AS n FROM t0 GROUP BY status;\n\
         CREATE UNIQUE INDEX counts_0_status ON counts_0 (status);\n\
         CREATE MATERIALIZED VIEW counts_1 AS SELECT status, count(*) AS n FROM t1 GROUP BY status;\n\
         CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, status status_0, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);\n\
         CREATE TABLE events_2023 PARTITION OF events FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');\n\
         CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');\n\
         CREATE TABLE events_other PARTITION OF events DEFAULT;\n\
         CREATE INDEX events_fn ON events (id) WHERE is_open_0(status);\n",
    );
    if v2 {
        out.push_str(
            "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');\n\
             CREATE INDEX events_open ON events (id) WHERE status = 'open';\n",
        );
    }
    out
}

#[tokio::test]
async fn large_schema_round_trips() {
    let roles = TestRoles::new("large", 1);
    let role = &roles.names[0];
    let (v1, v2) = (schema(1, role), schema(2, role));
    // Version 1 to version 2 (creating every kind from nothing is what the small cases do; this one is about
    // a schema of some size changing under its dependants).
    let file = check_case_with("large_change", &v1, &v2, &[], true).await;
    assert!(file.contains("ALTER TYPE status_0 ADD VALUE 'archived'"), "{file}");
    assert!(
        file.contains("ALTER TYPE status_1 RENAME TO flotilla_old_enum"),
        "{file}"
    );
}
