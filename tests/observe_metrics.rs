//! Prometheus metrics of a real fleet run: `/metrics` scraped over HTTP while the run goes on, and the
//! `--metrics-textfile` written at the end checked against the ledger.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::fleet_support::{finish, read_events, Fleet, Revisions, SLOW_REVISIONS};

/// A port nobody listens on right now (the OS picks it; the small race with other processes is acceptable).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /metrics`; `None` while nothing listens or the answer is not a 200.
fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the sample line `series` (a name with its labels, exactly as exposed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every sample of a metric family (all label sets).
pub fn family_sum(text: &str, family: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn tenants_in(text: &str, state: &str) -> f64 {
    sample(text, &format!("flotilla_tenants{{state=\"{state}\"}}")).unwrap_or_else(|| panic!("no {state} in\n{text}"))
}

#[test]
fn observe_metric_parsers() {
    let text = "# HELP flotilla_tenants x\nflotilla_tenants{state=\"running\"} 3\nflotilla_tenants{state=\"failed\"} 1\n\
                flotilla_revisions_applied_total{revision=\"a\"} 2\nflotilla_revisions_applied_total{revision=\"b\"} 5\n\
                flotilla_revisions_applied_total_extra 9\n";
    assert_eq!(tenants_in(text, "running"), 3.0);
    assert_eq!(sample(text, "flotilla_tenants{state=\"pending\"}"), None);
    assert_eq!(family_sum(text, "flotilla_revisions_applied_total"), 7.0);
}

#[tokio::test]
async fn observe_metrics_served_during_the_run_and_textfile_agrees_with_ledger() {
    let fleet = Fleet::new("observe_metrics", 9, 1, Revisions::Fixture("fleet_slow"), 3);
    // tenant_0004 fails in the sleeping revision, after applying the first one.
    fleet.db.execute("CREATE TABLE tenant_0004.notes (id int)");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let textfile = fleet.project.path().join("metrics/flotilla.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let events = fleet.project.path().join("events.ndjson");
    let mut child = fleet.spawn_upgrade(&[
        "--concurrency",
        "3",
        "--metrics-addr",
        &addr.to_string(),
        "--metrics-textfile",
        &Fleet::path_arg(&textfile),
        "--events",
        &Fleet::path_arg(&events),
        // This test reads the metrics while the run goes; `observe_metrics_linger_after_the_run` covers after.
        "--metrics-linger",
        "0s",
    ]);

    let mut scrapes = Vec::new();
    while child.try_wait().unwrap().is_none() {
        if let Some(text) = scrape(addr) {
            scrapes.push(text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, stdout, stderr) = finish(child, Duration::from_secs(10));
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");

    // During the run: every scrape accounts for all 10 tenants, and some show tenants running.
    assert!(
        !scrapes.is_empty(),
        "no scrape succeeded while the run went on\nstderr:\n{stderr}"
    );
    let states = ["pending", "running", "succeeded", "failed", "skipped", "interrupted"];
    let mut last_done = 0.0;
    for text in &scrapes {
        let total: f64 = states.iter().map(|s| tenants_in(text, s)).sum();
        assert_eq!(total, 10.0, "{text}");
        let done = tenants_in(text, "succeeded") + tenants_in(text, "failed");
        assert!(
            done >= last_done,
            "finished tenants went down from {last_done} to {done}"
        );
        last_done = done;
        // Regression: the gauge used to count every pooled connection discarded after a failure forever.
        let open = sample(text, "flotilla_connections_open{server=\"local\"}").unwrap_or(0.0);
        assert!(open <= 3.0, "{open} connections open over a cap of 3\n{text}");
    }
    assert!(
        scrapes.iter().any(|t| tenants_in(t, "running") > 0.0),
        "no scrape saw a running tenant: {} scrapes",
        scrapes.len()
    );
    assert!(
        scrapes
            .iter()
            .any(|t| tenants_in(t, "succeeded") + tenants_in(t, "failed") < 10.0),
        "every scrape came after the run had finished"
    );

    // At the end: the textfile agrees with the ledger.
    let text = std::fs::read_to_string(&textfile).expect("the metrics textfile");
    let status = fleet.status(None);
    let counts = &status["run"]["counts"];
    assert_eq!(
        tenants_in(&text, "succeeded"),
        counts["succeeded"].as_f64().unwrap(),
        "{text}"
    );
    assert_eq!(
        tenants_in(&text, "failed"),
        counts["failed"].as_f64().unwrap(),
        "{text}"
    );
    assert_eq!(
        (counts["succeeded"].as_u64(), counts["failed"].as_u64()),
        (Some(9), Some(1))
    );
    for state in ["pending", "running", "skipped", "interrupted"] {
        assert_eq!(tenants_in(&text, state), 0.0, "{state}\n{text}");
    }
    let position = |rev: &serde_json::Value| {
        rev.as_str()
            .map_or(0, |r| SLOW_REVISIONS.iter().position(|s| *s == r).unwrap() + 1)
    };
    let applied_in_ledger: usize = Fleet::status_tenants(&status)
        .values()
        .map(|t| position(&t["to_revision"]) - position(&t["from_revision"]))
        .sum();
    assert_eq!(applied_in_ledger, 9 * 3 + 1);
    assert_eq!(
        family_sum(&text, "flotilla_revisions_applied_total"),
        applied_in_ledger as f64,
        "{text}"
    );
    assert_eq!(
        sample(&text, "flotilla_revisions_applied_total{revision=\"a1a1a1a1a1a1\"}"),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "flotilla_revisions_failed_total{revision=\"b2b2b2b2b2b2\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "flotilla_errors_total{sqlstate=\"42P07\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(family_sum(&text, "flotilla_tenant_retries_total"), 0.0, "{text}");
    assert_eq!(
        sample(&text, "flotilla_tenant_duration_seconds_count"),
        Some(10.0),
        "{text}"
    );
    let run_id = status["run"]["id"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "flotilla_run_info{{command=\"upgrade\",run_id=\"{run_id}\",target=\"head\"}} 1"
        )),
        "{text}"
    );
    assert!(
        sample(&text, "flotilla_run_end_timestamp_seconds").unwrap()
            >= sample(&text, "flotilla_run_start_timestamp_seconds").unwrap()
    );

    // The event stream tells the same story.
    let events = read_events(&events);
    let applied_events = events.iter().filter(|e| e["event"] == "revision_applied").count();
    assert_eq!(applied_events, applied_in_ledger);
}

/// `--metrics-linger`: `/metrics` still answers, with the finished run's numbers, after the run printed its
/// summary; a signal then ends the wait at once, and the exit code stays the run's.
#[tokio::test]
async fn observe_metrics_linger_after_the_run() {
    let fleet = Fleet::new("observe_linger", 3, 0, Revisions::Repo, 2);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Far longer than the test may take: only the signal can end it in time.
    let mut child = fleet.spawn_upgrade(&["--metrics-addr", &addr.to_string(), "--metrics-linger", "1h"]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // The linger line is logged after the summary, once the run is over.
    while !seen.contains("the run is over; serving") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "stderr closed before the linger line:\n{seen}");
        seen.push_str(&line);
    }
    assert!(
        seen.contains(&format!("http://{addr}/metrics for 1h00m more")),
        "{seen}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited instead of lingering:\n{seen}"
    );
    let text = scrape(addr).unwrap_or_else(|| panic!("no /metrics after the run\n{seen}"));
    assert_eq!(tenants_in(&text, "succeeded"), 3.0, "{text}");
    assert!(
        sample(&text, "flotilla_run_end_timestamp_seconds").unwrap_or(0.0) > 0.0,
        "{text}"
    );

    // SAFETY: sending a signal to our own child by its pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    child.stderr = Some(stderr.into_inner());
    let (code, stdout, rest) = finish(child, Duration::from_secs(60));
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{seen}{rest}");
    assert!(stdout.contains("  succeeded    3\n"), "{stdout}");
    assert!(scrape(addr).is_none(), "still serving after exit");
}
