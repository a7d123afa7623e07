//! The fleet coordinator, in two halves: a synchronous state machine that decides (`state`) and an async shell
//! that turns channel messages, timers and signals into its inputs and carries its decisions out (`shell`).

mod shell;
mod state;

pub use shell::{run, run_with_signals};
pub use state::{FleetOutcome, FleetRequest, Source, WaveRun};
