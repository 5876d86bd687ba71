//! `mqadmin`: the raftmq admin command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("mqadmin: not yet; the admin commands arrive with the broker.");
    }
    ExitCode::from(2)
}
