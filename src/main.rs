//! The `flotilla` binary: parse the command line, set up logging, start the runtime, run the command, print the
//! error chain once, and exit with the code from the table in `flotilla::error`.

use clap::Parser;
use flotilla::cli::{self, Cli, ColorArg, LogFormat};
use flotilla::error::ExitCode;
use flotilla::observe::{self, LogRoute};

fn main() {
    // Die quietly on a closed pipe (`flotilla history | head`), as other command-line tools do, instead of
    // panicking inside println!.
    // SAFETY: setting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // Log lines go through the route, so they print above the progress bars while bars are drawn.
    let route = LogRoute::new();
    let format = match cli.global.log_format {
        LogFormat::Text => observe::LogFormat::Text,
        LogFormat::Json => observe::LogFormat::Json,
    };
    let color = match cli.global.color {
        ColorArg::Auto => observe::ColorChoice::Auto,
        ColorArg::Always => observe::ColorChoice::Always,
        ColorArg::Never => observe::ColorChoice::Never,
    };
    let no_color = std::env::var("NO_COLOR").ok();
    let colors = observe::color::apply(color, no_color.as_deref());
    if let Err(e) = observe::init_logging(format, Some(&route), colors.stderr) {
        eprintln!("error: {e}");
        std::process::exit(ExitCode::Usage.code());
    }
    // One thread: Flotilla's own work per tenant is small and IO-bound, and on the 2-core machines we measured,
    // a multi-threaded runtime spent a third more CPU (mostly futex wake-ups between workers) that the database
    // server needed (load-tests/FINDINGS.md). SQLite, progress and textfile writers have threads of their own.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            std::process::exit(ExitCode::Failed.code());
        }
    };
    let code = match runtime.block_on(cli::run(cli, route)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {:#}", err.error);
            err.code
        }
    };
    std::process::exit(code.code());
}
