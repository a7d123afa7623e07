//! Outages (issue 14 §4): a server that goes away for a few seconds, a server out of connection slots (53300),
//! and a server that refuses the run's login.
//!
//! The shared cluster cannot be restarted by one test, so the outage is a TCP proxy in front of it that this test
//! stops forwarding (closing every connection and refusing new ones) for a few seconds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

use crate::fleet_support::{finish, read_events, wait_for, Fleet, Revisions, SLOW_HEAD};

/// A TCP proxy to the cluster on its own runtime, so it keeps forwarding while the test thread blocks.
struct Proxy {
    addr: SocketAddr,
    is_down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    runtime: Option<Runtime>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("build the proxy runtime");
        // Bound here, made a tokio listener inside the runtime: the test's own runtime forbids `block_on`.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let is_down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (down, conns) = (is_down.clone(), connections.clone());
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("a tokio listener");
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                // Down: the connection is accepted and closed at once, as a server that is going away does.
                if down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            addr,
            is_down,
            connections,
            runtime: Some(runtime),
        }
    }

    /// Close every connection and refuse new ones for `length`, then forward again.
    fn outage(&self, length: Duration) {
        self.is_down.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
        std::thread::sleep(length);
        self.is_down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Tests run inside a runtime, where a runtime cannot be dropped by blocking on its shutdown.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `host:port` of a `postgres://user@host:port/db` url.
fn host_port(url: &str) -> String {
    let rest = url.split_once('@').expect("the harness url names a user").1;
    rest.split('/').next().expect("host and port").to_string()
}

/// A unique role name for one test.
fn role_name(hint: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("flotilla_{hint}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Issue 14 §4: a 3-5 s restart during a run failed most of its tenants, each burning its retries in a second.
/// Now they wait for the server (without spending a retry) and the outage is reported once.
#[tokio::test]
async fn fleet_outage_shorter_than_the_budget_is_waited_out() {
    let fleet = Fleet::new("fleet_outage", 30, 0, Revisions::Fixture("fleet_slow"), 4);
    let upstream = host_port(fleet.db.url());
    let proxy = Proxy::start(upstream.clone());
    let text = std::fs::read_to_string(&fleet.tenants_file).unwrap();
    // The default outage_budget (60 s) applies.
    let text = text
        .replacen(&upstream, &proxy.addr.to_string(), 1)
        .replacen("retries = 3\n", "retries = 1\n", 1);
    std::fs::write(&fleet.tenants_file, text).unwrap();
    let events = fleet.project.path().join("events.ndjson");
    let child = fleet.spawn_upgrade(&["--events", &Fleet::path_arg(&events), "--concurrency", "4"]);

    // The outage starts while tenants are inside the sleeping revision, with most of the fleet still to go.
    wait_for("a tenant_succeeded event", Duration::from_secs(60), || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .contains("\"tenant_succeeded\"")
            .then_some(())
    });
    proxy.outage(Duration::from_secs(3));

    let (code, stdout, stderr) = finish(child, Duration::from_secs(120));
    let report = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(code, Some(0), "{report}");
    let status = fleet.status(None);
    for (id, t) in Fleet::status_tenants(&status) {
        // A commit whose reply the outage cut is found applied by the next attempt, which then skips.
        assert!(
            t["status"] == "succeeded" || t["status"] == "skipped",
            "{id}: {t}\n{report}"
        );
        assert_eq!(t["to_revision"], SLOW_HEAD, "{id}: {t}");
    }
    let versions = fleet.versions().await;
    assert!(versions.values().all(|v| *v == [SLOW_HEAD]), "{versions:?}");
    let outage_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("tenants waited")).collect();
    assert_eq!(outage_lines.len(), 1, "the outage is reported once\n{report}");
    assert!(outage_lines[0].contains("server local unavailable "), "{report}");
    // Some tenant lost its connection and went back to waiting.
    let events = read_events(&events);
    assert!(events.iter().any(|e| e["event"] == "tenant_retrying"), "{report}");
    // The summary and the event stream state the outage once, too.
    let outages: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "server_outage").collect();
    assert_eq!(outages.len(), 1, "{report}");
    assert_eq!(outages[0]["server"], "local", "{report}");
    assert!(outages[0]["n_waited"].as_u64().unwrap_or(0) >= 1, "{report}");
    let summary_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("server local unavailable "))
        .collect();
    assert_eq!(summary_lines.len(), 1, "{report}");
}

/// A refused login never heals: "password missing" was retried like a lost connection. Now the first tenant's
/// failure fails the server's other tenants at once, with one message.
#[tokio::test]
async fn fleet_missing_password_fails_every_tenant_of_the_server_once() {
    let fleet = Fleet::new("fleet_auth", 5, 0, Revisions::Repo, 2);
    let role = role_name("auth");
    fleet.db.execute(&format!(
        "DO $$ BEGIN CREATE ROLE flotilla_password_login NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n\
         CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'Pw-{role}' IN ROLE flotilla_password_login;"
    ));
    let text = std::fs::read_to_string(&fleet.tenants_file).unwrap();
    std::fs::write(&fleet.tenants_file, text.replacen("postgres@", &format!("{role}@"), 1)).unwrap();
    let no_pgpass = fleet.project.path().join("no-pgpass");

    let out = fleet
        .upgrade(&["--concurrency", "2"])
        .env("PGPASSFILE", &no_pgpass)
        .assert_code(1);
    let status = fleet.status(None);
    let tenants = Fleet::status_tenants(&status);
    assert_eq!(tenants.len(), 5, "{status:#}");
    let mut errors = std::collections::BTreeSet::new();
    for (id, t) in &tenants {
        assert_eq!(t["status"], "failed", "{id}: {t}\n{}", out.report());
        assert_eq!(t["attempts"], 1, "{id}: {t}\n{}", out.report());
        errors.insert(t["error"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(errors.len(), 1, "one grouped message: {errors:#?}");
    let error = errors.first().unwrap();
    assert!(
        error.contains("no password") && error.contains("not retried"),
        "{error}"
    );
    let versions = fleet.versions().await;
    assert!(versions.values().all(Vec::is_empty), "{versions:?}");
    fleet.db.execute(&format!("DROP ROLE {role}"));
}

/// 53300 (too many connections, here a role's CONNECTION LIMIT below max_connections) lowers the server's cap
/// for the rest of the run instead of failing tenants, and says so.
#[tokio::test]
async fn fleet_too_many_connections_lowers_the_server_cap() {
    let fleet = Fleet::new("fleet_connlimit", 8, 0, Revisions::Fixture("fleet_slow"), 4);
    let role = role_name("connlimit");
    // Superusers are exempt from CONNECTION LIMIT, so the role only owns the tenants' schemas.
    let mut sql = format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 2;\n");
    for t in &fleet.tenants {
        let schema = t.schema.as_deref().expect("schema tenants");
        sql.push_str(&format!("ALTER SCHEMA {schema} OWNER TO {role};\n"));
    }
    fleet.db.execute(&sql);
    let text = std::fs::read_to_string(&fleet.tenants_file).unwrap();
    std::fs::write(&fleet.tenants_file, text.replacen("postgres@", &format!("{role}@"), 1)).unwrap();

    let out = fleet.upgrade(&["--concurrency", "4"]).assert_code(0);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("lowering its connection cap to"), "{}", out.report());
    let status = fleet.status(None);
    for (id, t) in Fleet::status_tenants(&status) {
        assert_eq!(t["status"], "succeeded", "{id}: {t}\n{}", out.report());
    }
    let versions = fleet.versions().await;
    assert!(versions.values().all(|v| *v == [SLOW_HEAD]), "{versions:?}");
    fleet.db.execute(&format!(
        "REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}; DROP ROLE {role}"
    ));
}
