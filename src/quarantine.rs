//! `moat quarantine list|show|release|delete|learn-spam`: the operator's view of held
//! messages. Releasing a message teaches the classifier it is ham (unless `--no-learn`);
//! `learn-spam` teaches it a held message is spam.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use moat_delivery::{Quarantine, QueueId, SpoolError};
use moat_gateway::classifier::{Label, Learned};

use crate::config::{DEFAULT_DATA_DIR, FileConfig};
use crate::{Failure, exit, fail};

/// Where to find the data directory, shared by every quarantine command.
#[derive(Debug, clap::Args)]
pub(crate) struct Location {
    /// The configuration file `moat serve` uses; its `data_dir` is read.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// The data directory instead.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

/// `moat quarantine ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List held messages: queue id, sender, recipients, score and reasons.
    List,
    /// Print one held message: its verdict, then the message as received.
    Show {
        /// The queue id, as `list` gives it.
        id: String,
    },
    /// Deliver a held message normally (the running `moat serve` picks it up within seconds),
    /// and teach the classifier it is ham.
    Release {
        /// The queue id, as `list` gives it.
        id: String,
        /// Do not teach the classifier.
        #[arg(long)]
        no_learn: bool,
    },
    /// Teach the classifier that a held message is spam; it stays held (delete it after).
    LearnSpam {
        /// The queue id, as `list` gives it.
        id: String,
    },
    /// Delete a held message for good.
    Delete {
        /// The queue id, as `list` gives it.
        id: String,
    },
}

/// Runs a `moat quarantine` command.
pub(crate) fn run(location: Location, command: Command) -> Result<(), Failure> {
    let data_dir = data_dir(&location).map_err(fail(exit::CONFIG))?;
    // The spool's errors end with the OS error already: formatted once, not chained.
    let quarantine = Quarantine::open(&data_dir.join("quarantine")).map_err(|error| {
        fail(exit::CANT_CREATE)(anyhow::anyhow!("opening the quarantine: {error}"))
    })?;

    match command {
        Command::List => {
            let held = quarantine.list().map_err(|error| {
                fail(exit::SOFTWARE)(anyhow::anyhow!("listing the quarantine: {error}"))
            })?;
            for message in &held {
                println!(
                    "{}  score={:.1}  from=<{}>  to={}  reasons={}",
                    message.id,
                    message.verdict.score,
                    message.envelope.reverse_path,
                    message.envelope.recipients.join(","),
                    message.verdict.checks.join(" ")
                );
            }
            eprintln!("{} message(s) held", held.len());
        }
        Command::Show { id } => {
            let (message, content) = quarantine
                .show(parse_id(&id)?)
                .map_err(|error| held_failure(&id, "showing", &error))?;
            println!("Queue-ID: {}", message.id);
            println!("Score: {:.1}", message.verdict.score);
            println!("Reasons: {}", message.verdict.checks.join(" "));
            println!("Envelope-From: <{}>", message.envelope.reverse_path);
            println!("Envelope-To: {}", message.envelope.recipients.join(", "));
            println!();
            use std::io::Write;
            std::io::stdout()
                .write_all(&content)
                .context("writing the message")
                .map_err(fail(exit::SOFTWARE))?;
        }
        Command::Release { id, no_learn } => {
            let queue_id = parse_id(&id)?;
            let (_, content) = quarantine
                .show(queue_id)
                .map_err(|error| held_failure(&id, "releasing", &error))?;
            let held = quarantine
                .release(queue_id, &data_dir.join("queue"))
                .map_err(|error| held_failure(&id, "releasing", &error))?;
            tracing::info!(queue_id = %held.id, "released from quarantine");
            println!(
                "{} released to {}",
                held.id,
                held.envelope.recipients.join(",")
            );
            if !no_learn {
                learn(&data_dir, &id, &content, Label::Ham)?;
            }
        }
        Command::LearnSpam { id } => {
            let (_, content) = quarantine
                .show(parse_id(&id)?)
                .map_err(|error| held_failure(&id, "learning", &error))?;
            learn(&data_dir, &id, &content, Label::Spam)?;
        }
        Command::Delete { id } => {
            quarantine
                .delete(parse_id(&id)?)
                .map_err(|error| held_failure(&id, "deleting", &error))?;
            println!("{id} deleted");
        }
    }
    Ok(())
}

/// Teaches the classifier that held message `id` is `label`, and says so: a message
/// auto-learned as the other class is moved ("relearned"), one learned as this class before
/// is left alone ("already learned").
fn learn(data_dir: &Path, id: &str, content: &[u8], label: Label) -> Result<(), Failure> {
    let (model, learned) = crate::learn::learn_message(data_dir, content, label)
        .with_context(|| format!("loading the message parser to learn {id}"))
        .map_err(fail(exit::SOFTWARE))?
        .map_err(crate::learn::store_failure)?;
    let how = match learned {
        Learned::New => "learned",
        Learned::Relearned => "relearned",
        Learned::Already => "already learned",
    };
    println!(
        "{id} {how} as {}, model now {} spam / {} ham",
        label.name(),
        model.spam_messages,
        model.ham_messages
    );
    Ok(())
}

/// The failure for a held message that cannot be read: exit 66 and, when it is not there,
/// where to look; otherwise the spool's error once (its message holds the OS error, which
/// the chain would print a second time).
fn held_failure(id: &str, action: &str, error: &SpoolError) -> Failure {
    if let SpoolError::Io { source, .. } = error
        && source.kind() == std::io::ErrorKind::NotFound
    {
        return fail(exit::NO_INPUT)(anyhow::anyhow!(
            "{action} {id}: it is not in the quarantine (released or deleted already?); run \
             `moat quarantine list` to see what is held"
        ));
    }
    fail(exit::NO_INPUT)(anyhow::anyhow!("{action} {id}: {error}"))
}

/// The data directory: `--data-dir`, else the configuration's `data_dir`, else the default.
fn data_dir(location: &Location) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &location.data_dir {
        return Ok(dir.clone());
    }
    let Some(path) = &location.config else {
        return Ok(PathBuf::from(DEFAULT_DATA_DIR));
    };
    let file = FileConfig::load(Path::new(path))?;
    Ok(file
        .data_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)))
}

fn parse_id(text: &str) -> Result<QueueId, Failure> {
    QueueId::parse(text).ok_or_else(|| {
        fail(exit::USAGE)(anyhow::anyhow!(
            "{text:?} is not a queue id: expected 16 hex digits, as `moat quarantine list` prints"
        ))
    })
}
