//! The `invited` binary. All logic is in the library; this only parses the command line,
//! sets up logging, and turns errors into one line and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = invited::cli::Cli::parse();
    match invited::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("invited: error: {e}");
            ExitCode::FAILURE
        }
    }
}
