//! A server password never leaves the environment variable that holds it: not in stdout, stderr, the NDJSON
//! events, the metrics (served or textfile), nor the ledger's bytes on disk.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::fleet_support::{Fleet, Revisions};

fn assert_absent(secret: &str, what: &str, haystack: &[u8]) {
    let found = haystack.windows(secret.len()).any(|w| w == secret.as_bytes());
    assert!(
        !found,
        "the password appears in {what}:\n{}",
        String::from_utf8_lossy(haystack)
    );
}

#[tokio::test]
async fn observe_password_never_appears_in_any_output() {
    let fleet = Fleet::new("observe_secret", 4, 1, Revisions::Repo, 4);
    // One failing tenant, so error messages and the failure summary are part of the output too.
    fleet.db.execute("CREATE TABLE tenant_0002.orders (id int)");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let secret = format!("pw-{}-{nanos}-Zq8", std::process::id());
    let var = "FLEET_TEST_SERVER_PASSWORD";
    fleet.write_tenants(4, &format!("password_env = \"{var}\"\n"));

    let dir = fleet.project.path();
    let events = dir.join("events.ndjson");
    let textfile = dir.join("flotilla.prom");
    let mut outputs = Vec::new();
    let run = fleet
        .fleet(&["upgrade", "head", "--progress", "plain", "--log-format", "json"])
        .env(var, &secret)
        .arg("--events")
        .arg(&events)
        .arg("--metrics-textfile")
        .arg(&textfile)
        .assert_code(1);
    outputs.push(("fleet upgrade", run));
    fleet.db.execute("DROP TABLE tenant_0002.orders");
    let mut retry = fleet.retry(&["--format", "json"]);
    outputs.push(("fleet retry", retry.env(var, &secret).assert_success()));
    for format in ["text", "json"] {
        let mut status = fleet.project.flotilla();
        status
            .args(["fleet", "status", "--format", format, "--ledger"])
            .arg(&fleet.ledger);
        outputs.push(("fleet status", status.env(var, &secret).assert_success()));
        let mut current = fleet.fleet(&["current", "--verbose", "--format", format]);
        outputs.push(("fleet current", current.env(var, &secret).assert_success()));
    }
    // A server that refuses the connection makes flotilla describe the server in an error.
    let mut unreachable = fleet.fleet(&["current"]);
    unreachable.env(var, &secret);
    std::fs::write(
        &fleet.tenants_file,
        std::fs::read_to_string(&fleet.tenants_file).unwrap().replace(
            &crate::harness::cluster().url().split('/').nth(2).unwrap().to_string(),
            "127.0.0.1:1",
        ),
    )
    .unwrap();
    let refused = unreachable.output();
    assert_ne!(refused.code(), Some(0), "{}", refused.report());
    outputs.push(("fleet current against a closed port", refused));

    for (what, out) in &outputs {
        assert_absent(&secret, &format!("stdout of {what}"), out.stdout.as_bytes());
        assert_absent(&secret, &format!("stderr of {what}"), out.stderr.as_bytes());
    }
    let events = std::fs::read(&events).unwrap();
    assert!(!events.is_empty());
    assert_absent(&secret, "the events", &events);
    let metrics = std::fs::read(&textfile).unwrap();
    assert!(!metrics.is_empty());
    assert_absent(&secret, "the metrics textfile", &metrics);
    if fleet.test_ledger.is_postgres() {
        // The control database's ledger tables, every row as text.
        let client = crate::harness::connect(&fleet.ledger.display().to_string())
            .await
            .unwrap();
        for table in ["runs", "runners", "tenants", "connection_shares"] {
            let rows = client
                .query_one(
                    &format!("SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM flotilla_ledger.{table} t"),
                    &[],
                )
                .await
                .unwrap();
            let text: String = rows.get(0);
            assert_absent(&secret, &format!("the ledger table {table}"), text.as_bytes());
        }
        return;
    }
    let mut n_ledger_files = 0;
    for entry in std::fs::read_dir(fleet.ledger.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        assert_absent(&secret, &path.display().to_string(), &std::fs::read(&path).unwrap());
        n_ledger_files += 1;
    }
    assert!(n_ledger_files >= 1);
}
