//! The ledger's own schema, versioned with `PRAGMA user_version` and migrated forward on open.

/// The schema version this code writes. Opening a ledger with a higher version is an error.
pub const SCHEMA_VERSION: i64 = 6;

/// `MIGRATIONS[i]` takes a ledger from version `i` to `i + 1`. Append only; never edit a shipped entry.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    "
    CREATE TABLE flotilla_runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        command TEXT NOT NULL,
        target TEXT NOT NULL,
        options TEXT NOT NULL,
        user TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        exit_code INTEGER
    );
    CREATE TABLE flotilla_run_tenants (
        run_seq INTEGER NOT NULL REFERENCES flotilla_runs (seq) ON DELETE CASCADE,
        tenant_id TEXT NOT NULL,
        server TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'interrupted')),
        from_revision TEXT,
        to_revision TEXT,
        failed_revision TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        duration_ms INTEGER,
        error TEXT,
        sqlstate TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (run_seq, tenant_id)
    ) WITHOUT ROWID;
    CREATE INDEX flotilla_run_tenants_status ON flotilla_run_tenants (run_seq, status);
    ",
    // 1 -> 2: what kind of failure a failed tenant had, and the absolute target its plan was made for (so a
    // retry of a relative target never moves the tenant further than the run meant to).
    "ALTER TABLE flotilla_run_tenants ADD COLUMN error_kind TEXT;
     ALTER TABLE flotilla_run_tenants ADD COLUMN target_revision TEXT;",
    // 2 -> 3: runs shared by runners. A run may have a name runners join by; each runner has a row with its
    // lease; a tenant row knows its dispatch position, whether it is a canary, its tags (for placement) and the
    // runner holding it.
    "ALTER TABLE flotilla_runs ADD COLUMN name TEXT;
     ALTER TABLE flotilla_runs ADD COLUMN halted INTEGER NOT NULL DEFAULT 0;
     CREATE UNIQUE INDEX flotilla_runs_name ON flotilla_runs (name) WHERE name IS NOT NULL;
     ALTER TABLE flotilla_run_tenants ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE flotilla_run_tenants ADD COLUMN canary INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE flotilla_run_tenants ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
     ALTER TABLE flotilla_run_tenants ADD COLUMN runner TEXT;
     CREATE INDEX flotilla_run_tenants_claim ON flotilla_run_tenants (run_seq, status, position);
     CREATE TABLE flotilla_runners (
        run_seq INTEGER NOT NULL REFERENCES flotilla_runs (seq) ON DELETE CASCADE,
        id TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        placement TEXT NOT NULL,
        lease_ms INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        lease_until_ms INTEGER NOT NULL,
        finished_at TEXT,
        exit_code INTEGER,
        PRIMARY KEY (run_seq, id)
     ) WITHOUT ROWID;",
    // 3 -> 4: each runner's share of each server's connection budget in a shared run.
    "CREATE TABLE flotilla_connection_shares (
        run_seq INTEGER NOT NULL REFERENCES flotilla_runs (seq) ON DELETE CASCADE,
        server TEXT NOT NULL,
        runner TEXT NOT NULL,
        granted INTEGER NOT NULL,
        wants INTEGER NOT NULL,
        PRIMARY KEY (run_seq, server, runner)
     ) WITHOUT ROWID;",
    // 4 -> 5: a claim walks a run's unfinished tenants in dispatch order, canaries apart, and stops at the
    // first few it may take, instead of reading and sorting every unfinished tenant (issue 16). The `status`
    // condition must stay word for word the one in `sqlite.rs`'s claim queries, or SQLite will not use the index.
    "CREATE INDEX flotilla_run_tenants_unfinished ON flotilla_run_tenants (run_seq, canary, position)
        WHERE status IN ('pending', 'running', 'interrupted');",
    // 5 -> 6: the `(run_seq, status)` index repeats the first columns of `flotilla_run_tenants_claim`, which
    // serves every lookup it did; each tenant row written (100,000 as a run opens) kept both up to date.
    "DROP INDEX flotilla_run_tenants_status;",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_migration_per_version() {
        assert_eq!(MIGRATIONS.len() as i64, SCHEMA_VERSION);
    }
}
