//! The one integration test binary: every module shares one PostgreSQL cluster through `harness`.
//!
//! Run it with `scripts/test` (see `docs/testing.md`); plain `cargo test` starts its own cluster.

// Each test module uses a different part of the harness.
#[allow(dead_code, unused_imports)]
mod harness;

mod autogen_cli;
mod autogen_corpus;
mod autogen_drift;
mod autogen_grants;
mod autogen_large;
mod backfill_tests;
mod cli_man;
mod extend_tests;
mod fleet_config;
mod fleet_error_paths;
mod fleet_faults;
mod fleet_health;
mod fleet_isolation;
mod fleet_ledger_faults;
mod fleet_names;
mod fleet_outages;
mod fleet_plan;
mod fleet_retry;
mod fleet_rollback;
mod fleet_run;
mod fleet_runners;
mod fleet_select;
mod fleet_shared;
mod fleet_support;
mod fleet_waves;
mod harness_tests;
mod import_alembic;
mod import_fleet;
mod import_plain;
mod ledger_backends;
mod observe_color;
mod observe_errors;
mod observe_json;
mod observe_metrics;
mod observe_progress;
mod observe_secrets;
mod observe_snapshots;
mod readme_sequence;
mod single_commands;
mod single_config_search;
mod single_failures;
mod single_offline;
mod single_signals;
mod single_support;
mod single_upgrade;
mod tls_tests;
