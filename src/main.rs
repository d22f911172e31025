//! `moat`: the one binary of the Moat mail gateway; `moat serve` runs the gateway and its queue.

mod check;
mod config;
mod dnsbl;
mod greylist;
mod inputs;
mod learn;
mod metrics;
mod quarantine;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use config::Overrides;

/// Exit codes from sysexits.h, so init systems and scripts can tell failures apart.
pub(crate) mod exit {
    /// A configuration error (EX_CONFIG).
    pub const CONFIG: u8 = 78;
    /// The data directory cannot be written (EX_CANTCREAT).
    pub const CANT_CREATE: u8 = 73;
    /// A listening port is busy or not allowed (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// The command line is wrong (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// A named input does not exist (EX_NOINPUT).
    pub const NO_INPUT: u8 = 66;
    /// An input exists but its data is damaged, as a corrupt model file (EX_DATAERR).
    pub const DATA_ERR: u8 = 65;
    /// Try again later: the data directory is in use (EX_TEMPFAIL).
    pub const TEMP_FAIL: u8 = 75;
    /// Anything else (EX_SOFTWARE).
    pub const SOFTWARE: u8 = 70;
}

/// The log filter when RUST_LOG is not set: Moat's info lines, and only warnings from
/// hickory-server, which logs every TCP query at info.
const DEFAULT_LOG_FILTER: &str = "info,hickory_server=warn";

/// Moat: an inbound mail gateway.
#[derive(Debug, Parser)]
#[command(name = "moat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the SMTP gateway and the delivery queue.
    Serve {
        /// A TOML configuration file (see moat.example.toml); without one, the embedded
        /// default: SMTP on 127.0.0.1:2525, mail for localhost into ./moat-data/mail.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen on this address instead (repeatable), as 0.0.0.0:25.
        #[arg(long)]
        listen: Vec<String>,
        /// Accept mail for this domain instead (repeatable), into the default Maildir.
        #[arg(long)]
        domain: Vec<String>,
        /// Keep the queue, TLS files and default Maildir here.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// DNS blocklists: `moat dnsbl serve` runs a DNS node serving rbldnsd-compatible zones.
    Dnsbl {
        #[command(subcommand)]
        command: dnsbl::Command,
    },
    /// Held messages: list, show, release or delete them.
    Quarantine {
        #[command(flatten)]
        location: quarantine::Location,
        #[command(subcommand)]
        command: quarantine::Command,
    },
    /// Train the statistical classifier on message files, directories or Maildirs (`-` reads
    /// paths from stdin).
    Learn {
        /// What the messages are.
        #[arg(value_enum)]
        label: learn::LabelArg,
        #[command(flatten)]
        location: learn::Location,
        /// Message files, directories of them, Maildirs, or `-` for paths on stdin.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the content verdict `moat serve` would give each message, without network checks:
    /// path, score, classifier probability, action and contributions, tab-separated.
    Check {
        #[command(flatten)]
        location: learn::Location,
        /// No clamd either, even if the configuration has one.
        #[arg(long)]
        no_network: bool,
        /// Message files, directories of them, Maildirs, or `-` for paths on stdin.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Cross-validate the classifier's candidate models on the training half of a corpus
    /// laid out as `<group>/<file>` (see scripts/fetch-corpus); the figures behind
    /// ARCHITECTURE.md's choice.
    #[command(hide = true)]
    ClassifierEval {
        /// The corpus directory, as .corpus/spamassassin.
        corpus: PathBuf,
        /// Number of folds.
        #[arg(long, default_value_t = 5)]
        folds: usize,
    },
    /// Triplet greylisting: `moat greylist policy` serves Postfix's policy protocol.
    Greylist {
        #[command(subcommand)]
        command: greylist::Command,
    },
}

/// A failure with the exit code that says its kind.
pub(crate) struct Failure {
    code: u8,
    error: anyhow::Error,
}

/// Wraps an error with the exit code of its kind, for `map_err`.
pub(crate) fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

fn main() -> ExitCode {
    // A wrong command line exits 64 (EX_USAGE), as the other failures follow sysexits; help
    // and version go to stdout with 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(exit::USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            domain,
            data_dir,
        } => serve::run(
            config,
            Overrides {
                listen,
                domains: domain,
                data_dir,
            },
        ),
        Command::Learn {
            label,
            location,
            paths,
        } => learn::run(label, location, paths),
        Command::Check {
            location,
            no_network,
            paths,
        } => check::run(location, no_network, paths),
        Command::ClassifierEval { corpus, folds } => learn::evaluate(&corpus, folds),
        Command::Dnsbl { command } => dnsbl::run(command),
        Command::Greylist { command } => greylist::run(command),
        Command::Quarantine { location, command } => quarantine::run(location, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("moat: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
