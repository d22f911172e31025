//! The shared harness of Moat's end-to-end tests: a real `moat serve`, a throwaway Dovecot, the
//! Python helpers in `tests/support/`, and the corpora that `scripts/fetch-corpus` lays out.
//!
//! A test file uses it with `mod common;` and `use common::*;`. Everything runs on loopback, on
//! ports the kernel picked, in a fresh temporary directory that is removed when the test passes
//! and kept (its path printed) when the test fails, so the logs can be read afterwards. Set
//! `MOAT_TEST_KEEP=1` to keep every directory.
//!
//! * [`Moat::start`] writes a configuration around the sections a test gives, starts the binary
//!   and waits until it listens; [`Moat::maildir`] says where the default route delivers.
//! * [`Dovecot::start`] runs a private Dovecot with LMTP, IMAP and POP3 on free ports; every user
//!   exists and has the password [`DOVECOT_PASSWORD`].
//! * [`python`] and [`python_ok`] run a script from `tests/support/`.
//! * [`SmtpConnection`] speaks SMTP line by line for tests that check replies.
//! * [`smtp_crlf`], [`strip_received`] and [`first_difference`] compare what was sent with what
//!   was delivered; [`cpython_corpus`] and [`spamassassin_corpus`] list the test messages.
//!
//! The harness is split by what it drives: `moat` (the `moat serve` process), `dovecot`,
//! `smtp` (the line-by-line client), `corpus` (the corpora and the comparison of sent and
//! delivered messages), `fs` (temporary directories and files) and `process` (ports, polling,
//! signals and the Python helpers). Everything they offer is re-exported here, so
//! `use common::*;` brings all of it. The exception is `raw`, the client and assertions of the
//! refusal tests, which those files import by name: its short names (`start`, `HOST`) would
//! otherwise land in every test file.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

mod corpus;
mod dovecot;
mod fs;
mod moat;
mod process;
pub mod raw;
mod smtp;

// Each binary uses only some of these re-exports; the rest would warn as unused imports.
#[allow(unused_imports)]
pub use corpus::{
    CorpusMessage, assert_has_hard_cases, cpython_corpus, every_nth, first_difference, smtp_crlf,
    spamassassin_corpus, strip_received,
};
#[allow(unused_imports)]
pub use dovecot::{DOVECOT_PASSWORD, Dovecot};
#[allow(unused_imports)]
pub use fs::{TempDir, files_in, maildir_new, queued_messages, repo_root, write_file};
#[allow(unused_imports)]
pub use moat::{Moat, service_addrs};
#[allow(unused_imports)]
pub use process::{STARTUP_DEADLINE, free_port, python, python_ok, wait_until};
#[allow(unused_imports)]
pub use smtp::{Reply, SmtpConnection};
