//! The PostgreSQL ledger's own schema, `flotilla_ledger`, versioned in its table `schema_version` (one row per
//! applied migration) and migrated forward when a runner connects.

/// The schema that holds the ledger's tables in the control database.
pub const PG_SCHEMA: &str = "flotilla_ledger";

/// The schema version this code writes. Connecting to a ledger with a higher version is an error.
pub const PG_SCHEMA_VERSION: i64 = 1;

/// The advisory lock (in the control database) held while migrating, so runners starting at once migrate one
/// after another: `flotldgr` in ASCII.
pub(crate) const MIGRATION_LOCK: i64 = 0x666c_6f74_6c64_6772;

/// `PG_MIGRATIONS[i]` takes the ledger from version `i` to `i + 1`. Append only; never edit a shipped entry.
///
/// Tenant ids use the `C` collation so that `ORDER BY tenant_id` is byte order (as in the SQLite ledger) and
/// served by the primary key. The partial index on unfinished tenants keeps a claim's ordered scan to the tenants
/// still to do, whatever the size of the run.
pub(crate) const PG_MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema (the SQLite ledger's schema 4).
    "
    CREATE TABLE flotilla_ledger.runs (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        name text UNIQUE,
        command text NOT NULL,
        target text NOT NULL,
        options jsonb NOT NULL,
        user_name text NOT NULL,
        host text NOT NULL,
        pid bigint NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        exit_code integer,
        halted boolean NOT NULL DEFAULT false
    );
    CREATE TABLE flotilla_ledger.runners (
        run_seq bigint NOT NULL REFERENCES flotilla_ledger.runs (seq) ON DELETE CASCADE,
        id text NOT NULL,
        host text NOT NULL,
        pid bigint NOT NULL,
        placement jsonb NOT NULL,
        lease interval NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now(),
        lease_until timestamptz NOT NULL,
        finished_at timestamptz,
        exit_code integer,
        PRIMARY KEY (run_seq, id)
    );
    CREATE TABLE flotilla_ledger.tenants (
        run_seq bigint NOT NULL REFERENCES flotilla_ledger.runs (seq) ON DELETE CASCADE,
        tenant_id text COLLATE \"C\" NOT NULL,
        position integer NOT NULL,
        server text NOT NULL,
        kind text NOT NULL,
        canary boolean NOT NULL DEFAULT false,
        tags jsonb NOT NULL DEFAULT '{}',
        status text NOT NULL
            CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'interrupted')),
        runner text,
        from_revision text,
        to_revision text,
        failed_revision text,
        target_revision text,
        attempts integer NOT NULL DEFAULT 0,
        duration_ms bigint,
        error text,
        error_kind text,
        sqlstate text,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (run_seq, tenant_id)
    );
    CREATE TABLE flotilla_ledger.connection_shares (
        run_seq bigint NOT NULL REFERENCES flotilla_ledger.runs (seq) ON DELETE CASCADE,
        server text NOT NULL,
        runner text NOT NULL,
        granted integer NOT NULL,
        wants boolean NOT NULL,
        PRIMARY KEY (run_seq, server, runner)
    );
    CREATE INDEX tenants_status ON flotilla_ledger.tenants (run_seq, status);
    CREATE INDEX tenants_claim ON flotilla_ledger.tenants (run_seq, position)
        WHERE status IN ('pending', 'running', 'interrupted');
    CREATE INDEX tenants_canary ON flotilla_ledger.tenants (run_seq, position)
        WHERE canary AND status IN ('pending', 'running', 'interrupted');
    ",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_migration_per_version() {
        assert_eq!(PG_MIGRATIONS.len() as i64, PG_SCHEMA_VERSION);
    }

    #[test]
    fn migrations_name_the_schema() {
        for step in PG_MIGRATIONS {
            for line in step.lines().filter(|l| l.trim_start().starts_with("CREATE TABLE")) {
                assert!(line.contains(&format!("{PG_SCHEMA}.")), "{line}");
            }
        }
    }
}
