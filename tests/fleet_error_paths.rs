//! Error paths of a fleet run that nothing else drives: a `--wave-gate` command that cannot start halts the run
//! with the reason instead of passing or hanging, and `fleet retry --help` says where a run in waves goes on.
//! (The ledger writer's thread dying is driven in `src/fleet/coordinator/shell/tests.rs`, the health signals'
//! failures in `fleet_health.rs`.)

use std::collections::BTreeMap;

use crate::fleet_support::{Fleet, Revisions};

/// Runs a two-wave upgrade (`--waves-by tag=parity`: the even tenants, then the odd ones) whose gate is `gate`,
/// with `env` set, and checks it halts with exit 3 before the second wave, saying `says`; the first wave's
/// tenants succeeded, the second's never started. Returns the fleet, for a retry.
pub(crate) fn halted_by_the_gate(hint: &str, gate: &str, env: &[(&str, &str)], says: &str) -> Fleet {
    let fleet = Fleet::new(hint, 4, 0, Revisions::Repo, 4);
    let mut cmd = fleet.upgrade(&["--waves-by", "tag=parity", "--wave-gate", gate]);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.assert_code(3);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("wave gate refused wave 2"), "{said}");
    assert!(said.contains(says), "{said}");
    let status = Fleet::status_tenants(&fleet.status(None));
    let states: BTreeMap<&str, &str> = status
        .iter()
        .map(|(id, t)| (id.as_str(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        BTreeMap::from([
            ("tenant_0001", "not_started"),
            ("tenant_0002", "succeeded"),
            ("tenant_0003", "not_started"),
            ("tenant_0004", "succeeded"),
        ]),
        "{said}"
    );
    fleet
}

#[test]
fn a_wave_gate_program_that_does_not_exist_halts_the_run() {
    let _ = halted_by_the_gate(
        "fleet_gate_missing",
        "/nonexistent/flotilla-gate --check",
        &[],
        "failed (exit status: 127)",
    );
}

#[test]
fn a_wave_gate_file_that_is_not_executable_halts_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    std::fs::write(&gate, "#!/bin/sh\nexit 0\n").unwrap();
    // Written without the executable bit.
    let _ = halted_by_the_gate(
        "fleet_gate_not_exec",
        &gate.display().to_string(),
        &[],
        "failed (exit status: 126)",
    );
}

#[test]
fn a_wave_gate_whose_shell_cannot_start_halts_the_run() {
    // No `sh` on the PATH: the gate's shell itself cannot be started.
    let empty = tempfile::tempdir().unwrap();
    let _ = halted_by_the_gate(
        "fleet_gate_no_shell",
        "true",
        &[("PATH", &empty.path().display().to_string())],
        "the wave gate command could not start",
    );
}

#[test]
fn fleet_retry_help_says_it_continues_at_the_wave_where_the_run_stopped() {
    let out = crate::harness::flotilla()
        .args(["fleet", "retry", "--help"])
        .assert_success();
    let text = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("continues at the wave where the run stopped"),
        "{}",
        out.stdout
    );
}
