//! The `shoal` binary: parse arguments, run the command, map failures to
//! exit codes.

use std::process::ExitCode;

use clap::Parser;

use shoal_server::cli::Cli;
use shoal_server::image::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colour only on a terminal: logs piped to files stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false);
    match cli.log_format {
        shoal_server::cli::LogFormat::Text => logs.with_ansi(ansi).init(),
        shoal_server::cli::LogFormat::Json => logs.json().init(),
    }
    match shoal_server::image::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Verify(e)) => {
            eprintln!("shoal: verification failed: {e:#}");
            ExitCode::from(3)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("shoal: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Other(e)) => {
            eprintln!("shoal: {e:#}");
            ExitCode::from(1)
        }
    }
}
