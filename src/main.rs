//! Thin entry point: parse arguments, run, map the outcome to an exit status.

use clap::Parser;
use midas_cancel::{cli::Cli, Exit};
use std::process::ExitCode;

/// A core dump would hold the app key, the AppSecret, tokens and session
/// keys: forbid them for this process before any secret is read, as
/// secret-handling tools do (soft and hard limit 0, so it cannot be raised).
fn no_core_dumps() {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads the struct we pass and touches no memory of ours.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
    }
}

fn main() -> ExitCode {
    no_core_dumps();
    // A panic's message goes out through the one redacting exit too.
    std::panic::set_hook(Box::new(|info| midas_cancel::say!("{info}")));
    let cli = Cli::parse();
    match midas_cancel::run(cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            // A closed pipe (`report | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            midas_cancel::say!("Error: {e:#}");
            ExitCode::from(Exit::Usage as u8)
        }
    }
}
