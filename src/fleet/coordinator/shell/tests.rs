//! The shell with fake workers: a panicking worker task and a stop that must reach a waiting worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::error::ExitCode;
use crate::fleet::worker::Outcome;
use crate::signals::{Interrupt, NoSignals};

/// The state tests' request, one tenant at a time and no retries.
fn request(n: usize) -> FleetRequest {
    let mut req = crate::fleet::coordinator::state::tests::request(n);
    req.concurrency = 1;
    req.limits.retries = 0;
    req
}

/// A sink that keeps each event's name and tenant.
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Sink for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn event(&mut self, event: &crate::observe::RunEvent) -> Result<(), crate::observe::SinkError> {
        let v = serde_json::to_value(&event.event).expect("events serialize");
        let mut line = v["event"].as_str().expect("tagged").to_string();
        if let Some(tenant) = v.get("tenant").and_then(|t| t.as_str()) {
            line = format!("{line} {tenant}");
        }
        self.0.lock().expect("not poisoned").push(line);
        Ok(())
    }
}

/// One signal at once, then none.
struct OneSignal(bool);

impl SignalSource for OneSignal {
    async fn next(&mut self) -> Interrupt {
        if std::mem::replace(&mut self.0, true) {
            std::future::pending::<()>().await;
        }
        Interrupt::Stop
    }
}

/// Drive a run of `n` tenants whose workers `work` plays, with no servers; a hang fails the test.
async fn drive<S, F, Fut>(n: usize, signals: S, work: F) -> (FleetOutcome, Vec<String>)
where
    S: SignalSource,
    F: Fn(Launch, mpsc::UnboundedSender<WorkerMsg>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let events = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Coordinator::new(request(n), vec!["s1".into()]);
    let shell = Shell::new(
        Vec::new(),
        vec![Box::new(Recorder(events.clone()))],
        signals,
        Arc::new(AtomicBool::new(false)),
    );
    let launch = move |start: Launch| work(start, tx.clone());
    let outcome = tokio::time::timeout(Duration::from_secs(60), shell.drive(state, rx, launch))
        .await
        .expect("the run ends");
    let events = events.lock().expect("not poisoned").clone();
    (outcome, events)
}

fn succeeded(index: usize) -> WorkerMsg {
    WorkerMsg::Done {
        index,
        outcome: Outcome::Succeeded {
            from: Vec::new(),
            to: Vec::new(),
            n_steps: 0,
            attempts: 1,
            elapsed: Duration::ZERO,
        },
    }
}

#[tokio::test]
async fn a_panicking_worker_fails_its_tenant_instead_of_hanging_the_run() {
    let (outcome, events) = drive(3, NoSignals, |start, tx| async move {
        if start.index == 1 {
            panic!("worker bug");
        }
        let _ = tx.send(succeeded(start.index));
    })
    .await;
    assert_eq!(outcome.exit_code, ExitCode::Failed);
    assert_eq!((outcome.n_succeeded, outcome.n_failed), (2, 1));
    assert_eq!(outcome.failed, [(1, "the worker panicked: worker bug".to_string())]);
    assert!(events.contains(&"tenant_failed t1".to_string()), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("run_finished"));
}

/// The message of a worker stopped through its token before its first revision.
fn interrupted_at_once(index: usize) -> WorkerMsg {
    WorkerMsg::Done {
        index,
        outcome: Outcome::Interrupted {
            from: Vec::new(),
            to: Vec::new(),
            attempts: 1,
            elapsed: Duration::ZERO,
        },
    }
}

#[tokio::test]
async fn a_stop_reaches_a_waiting_worker_through_its_token() {
    let (outcome, events) = drive(2, OneSignal(false), |start, tx| async move {
        start.cancel.cancelled().await;
        let _ = tx.send(interrupted_at_once(start.index));
    })
    .await;
    assert_eq!(outcome.exit_code, ExitCode::Interrupted);
    assert_eq!((outcome.n_interrupted, outcome.n_not_started), (1, 1));
    assert!(events.contains(&"tenant_interrupted t0".to_string()), "{events:?}");
}

#[tokio::test]
async fn a_wave_gate_that_ends_without_an_answer_refuses_the_wave_it_was_asked_about() {
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    drop(tx);
    match gate_input(3, rx.await) {
        Input::WaveGate { wave, result } => {
            assert_eq!(wave, 3);
            assert!(result.unwrap_err().contains("without an answer"));
        }
        _ => panic!("expected a wave gate answer"),
    }
}

/// A recorded run whose ledger writer thread dies on the first rows it writes, while the only running tenant
/// waits (so nothing more is written): the shell hears it from the writer's health, stops starting tenants, stops
/// the running one through its token, and ends with the ledger-failure exit code.
#[tokio::test]
async fn a_ledger_writer_thread_that_dies_stops_the_run_with_the_ledger_exit_code() {
    let (ledger, run) = crate::fleet::record::tests::dies_at_record(1, 3);
    let writer = crate::fleet::record::LedgerWriter::new(Box::new(ledger), run, Default::default());
    let mut req = request(3);
    req.source = crate::fleet::Source::Claims {
        poll: Duration::from_millis(50),
    };
    let state = Coordinator::new(req, vec!["s1".into()]);
    let events = Arc::new(Mutex::new(Vec::new()));
    let shell = Shell::new(
        Vec::new(),
        vec![Box::new(Recorder(events.clone()))],
        NoSignals,
        Arc::new(AtomicBool::new(false)),
    )
    .with_ledger(writer, &state, Arc::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let launch = move |start: Launch| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(WorkerMsg::Started {
                index: start.index,
                attempt: start.attempt,
            });
            start.cancel.cancelled().await;
            let _ = tx.send(interrupted_at_once(start.index));
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(20), shell.drive(state, rx, launch))
        .await
        .expect("the run stops once the ledger writer is gone");
    assert_eq!(outcome.exit_code, ExitCode::LedgerFailed);
    let failure = outcome.ledger_failure.unwrap_or_default();
    assert!(failure.contains("the ledger writer thread stopped"), "{failure}");
    assert_eq!((outcome.n_interrupted, outcome.n_not_started), (1, 2));
    let events = events.lock().expect("not poisoned");
    assert_eq!(
        events.iter().filter(|e| e.starts_with("tenant_started")).count(),
        1,
        "{events:?}"
    );
}
