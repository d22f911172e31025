//! The statistical classifier end to end: `moat learn` and `moat check` on the SpamAssassin
//! corpus, a `moat serve` that picks up a learned model and gives the same score after a
//! restart, a corrupt model file that leaves Moat running on rules alone, concurrent `moat
//! learn` runs that lose no update, and a release from the quarantine that learns ham.
//!
//! The corpus comes from `scripts/fetch-corpus`; without it these tests fail saying so.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{CorpusMessage, Moat, SmtpConnection, TempDir, spamassassin_corpus, wait_until};
use moat_gateway::classifier::ModelStore;

/// The corpus's messages of one group (`spam-2`, `easy-ham-1`), in file order.
fn group(corpus: &[CorpusMessage], name: &str) -> Vec<PathBuf> {
    let prefix = format!("sa-{name}-");
    corpus
        .iter()
        .filter(|m| m.name.starts_with(&prefix))
        .map(|m| m.path.clone())
        .collect()
}

/// Runs `moat ARGS`, with `stdin` given on standard input.
fn run_moat(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run moat");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for moat")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "moat failed ({:?}): {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn paths_text(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| format!("{}\n", p.display())).collect()
}

/// Learns `count` spam (every other from spam-2) and ham (every other from easy-ham-1) into
/// `data_dir`; returns the messages not learned, for checking.
fn train(data_dir: &Path, count: usize) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let corpus = spamassassin_corpus();
    let spam = group(&corpus, "spam-2");
    let ham = group(&corpus, "easy-ham-1");
    let every_other = |list: &[PathBuf], offset: usize| -> Vec<PathBuf> {
        list.iter().skip(offset).step_by(2).cloned().collect()
    };
    let dir = data_dir.to_str().expect("utf-8 path");
    for (label, list) in [("spam", &spam), ("ham", &ham)] {
        let learned = &every_other(list, 0)[..count];
        let out = ok(run_moat(
            &["learn", label, "--data-dir", dir, "-"],
            &paths_text(learned),
        ));
        assert!(
            out.starts_with(&format!(
                "learned {count} {label} messages (0 unreadable skipped)"
            )),
            "{out}"
        );
    }
    (every_other(&spam, 1), every_other(&ham, 1))
}

/// `moat check` lines of `paths`: (probability, action, contributions).
fn check(data_dir: &Path, paths: &[PathBuf]) -> Vec<(f64, String, String)> {
    let dir = data_dir.to_str().expect("utf-8 path");
    let mut args = vec!["check", "--no-network", "--data-dir", dir];
    let texts: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(texts.iter().map(String::as_str));
    let out = ok(run_moat(&args, ""));
    out.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 5, "{line}");
            let probability = fields[2]
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("{line}"));
            (probability, fields[3].to_owned(), fields[4].to_owned())
        })
        .collect()
}

#[test]
fn learning_corpus_messages_classifies_others_in_the_expected_direction() {
    let dir = TempDir::new("classifier-direction");
    let (spam, ham) = train(dir.path(), 250);

    let spam_checked = check(dir.path(), &spam[..60]);
    let ham_checked = check(dir.path(), &ham[..60]);
    let spam_right = spam_checked.iter().filter(|c| c.0 > 0.5).count();
    let ham_right = ham_checked.iter().filter(|c| c.0 < 0.5).count();
    assert!(spam_right >= 50, "only {spam_right} of 60 spam above 0.5");
    assert!(ham_right >= 58, "only {ham_right} of 60 ham below 0.5");
    let (p, _, contributions) = &ham_checked[0];
    assert!(
        contributions.contains(&format!("bayes:{p:.4}=")),
        "{contributions}"
    );
}

#[test]
fn below_the_minimum_learned_the_classifier_says_untrained_and_counts_nothing() {
    let dir = TempDir::new("classifier-untrained");
    let (spam, _) = train(dir.path(), 20);
    let d = dir.path().to_str().expect("utf-8");
    let out = ok(run_moat(
        &["check", "--data-dir", d, &spam[0].display().to_string()],
        "",
    ));
    let fields: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(fields[2], "-", "{out}");
    assert!(fields[4].contains("bayes:untrained(20/20)=0.0"), "{out}");
}

/// A corpus message as a client sends it: no mbox line, CRLF, dots stuffed.
fn smtp_data(path: &Path) -> Vec<u8> {
    let raw = fs::read(path).expect("read message");
    let text = String::from_utf8_lossy(&raw);
    let text = match text.strip_prefix("From ") {
        Some(rest) => rest
            .split_once('\n')
            .map_or("", |(_, after)| after)
            .to_owned(),
        None => text.into_owned(),
    };
    let mut data = String::new();
    for line in text.lines() {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line.trim_end_matches('\r'));
        data.push_str("\r\n");
    }
    data.push_str(".\r\n");
    data.into_bytes()
}

fn send(moat: &Moat, data: &[u8]) -> u16 {
    let mut smtp = SmtpConnection::connect(moat.smtp_addr);
    assert_eq!(smtp.read_reply().code, 220);
    assert_eq!(smtp.command("EHLO client.example.org").code, 250);
    assert_eq!(smtp.command("MAIL FROM:<alice@example.org>").code, 250);
    assert_eq!(smtp.command("RCPT TO:<bob@localhost>").code, 250);
    assert_eq!(smtp.command("DATA").code, 354);
    smtp.send_raw(data);
    let code = smtp.read_reply().code;
    smtp.command("QUIT");
    code
}

/// The X-Spam-Bayes value of the `n`th message delivered to bob (waiting for it).
fn delivered_bayes(moat: &Moat, n: usize) -> String {
    let new = moat.maildir("localhost", "bob").join("new");
    wait_until(Duration::from_secs(10), "delivery to bob", || {
        fs::read_dir(&new).map(|e| e.count() >= n).unwrap_or(false)
    });
    let mut files: Vec<PathBuf> = fs::read_dir(&new)
        .expect("read new/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    let text = String::from_utf8_lossy(&fs::read(&files[n - 1]).expect("read")).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("X-Spam-Bayes: "))
        .unwrap_or_else(|| panic!("no X-Spam-Bayes in {text}"))
        .to_owned()
}

#[test]
fn a_learned_model_is_picked_up_live_and_gives_the_same_score_after_a_restart() {
    let mut moat =
        Moat::start("[content]\n[verdict]\nreject_at = 1000.0\nquarantine_at = 1000.0\n");
    let ham_message = group(&spamassassin_corpus(), "easy-ham-1")[1].clone();

    // Before learning: untrained, and the log line says so.
    assert_eq!(send(&moat, &smtp_data(&ham_message)), 250);
    assert!(delivered_bayes(&moat, 1).starts_with("untrained(0/0)"));

    train(&moat.data_dir, 250);
    // `moat learn` writes twice (spam, then ham): wait for the reload that has both.
    wait_until(Duration::from_secs(10), "the model reloaded", || {
        moat.log().lines().any(|line| {
            line.contains("classifier model reloaded")
                && line.contains("spam=250")
                && line.contains("ham=250")
        })
    });
    assert_eq!(send(&moat, &smtp_data(&ham_message)), 250);
    let before = delivered_bayes(&moat, 2);
    let p: f64 = before.parse().unwrap_or_else(|_| panic!("{before}"));
    assert!(p < 0.5, "ham scored {p}");

    moat.restart();
    assert_eq!(send(&moat, &smtp_data(&ham_message)), 250);
    assert_eq!(delivered_bayes(&moat, 3), before);
    assert!(
        moat.log().contains(&format!("bayes:{before}=")),
        "log line without the probability:\n{}",
        moat.log()
    );
}

#[test]
fn a_corrupt_model_is_reported_and_moat_runs_on_rules_alone() {
    let mut moat = Moat::start("[content]\n");
    moat.stop();
    let classifier = moat.data_dir.join("classifier");
    fs::create_dir_all(&classifier).expect("mkdir");
    fs::write(classifier.join("model.bin"), b"MOATBAYS not really a model").expect("write");
    moat.restart();

    let log = moat.log();
    assert!(
        log.contains("ERROR") && log.contains("model.bin") && log.contains("moat learn"),
        "{log}"
    );
    let message = b"Subject: lunch\r\n\r\nShall we meet at noon?\r\n.\r\n";
    assert_eq!(send(&moat, message), 250);
    assert_eq!(delivered_bayes(&moat, 1), "unavailable");
}

#[test]
fn concurrent_learn_runs_lose_no_update() {
    let dir = TempDir::new("classifier-concurrent");
    let spam = group(&spamassassin_corpus(), "spam-1");
    let d = dir.path().to_str().expect("utf-8").to_owned();
    let runs: Vec<_> = spam
        .chunks(40)
        .take(6)
        .map(|chunk| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
                .args(["learn", "spam", "--data-dir", &d, "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run moat learn");
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(paths_text(chunk).as_bytes())
                .expect("write");
            drop(stdin);
            child
        })
        .collect();
    for run in runs {
        ok(run.wait_with_output().expect("wait"));
    }

    let (model, _) = ModelStore::new(&dir.path().join("classifier"))
        .load()
        .expect("model loads");
    assert_eq!(model.spam_messages, 240);
    // The same messages learned in one run give exactly the same counts.
    let single = TempDir::new("classifier-sequential");
    let s = single.path().to_str().expect("utf-8");
    ok(run_moat(
        &["learn", "spam", "--data-dir", s, "-"],
        &paths_text(&spam[..240]),
    ));
    let (sequential, _) = ModelStore::new(&single.path().join("classifier"))
        .load()
        .expect("model loads");
    assert_eq!(model, sequential);
}

#[test]
fn releasing_a_held_message_learns_it_as_ham_and_learn_spam_as_spam() {
    // Every message is held: the score of a plain message (0) is over quarantine_at.
    let moat = Moat::start(
        "[content]\n[verdict]\ntag_at = -100.0\nquarantine_at = -100.0\nreject_at = 1000.0\n",
    );
    let message = b"Subject: quarterly report\r\n\r\nThe figures are attached.\r\n.\r\n";
    assert_eq!(send(&moat, message), 250);
    assert_eq!(send(&moat, message), 250);

    let d = moat.data_dir.to_str().expect("utf-8").to_owned();
    let list = run_moat(&["quarantine", "--data-dir", &d, "list"], "");
    let ids: Vec<String> = ok(list)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    let released = ok(run_moat(
        &["quarantine", "--data-dir", &d, "release", &ids[0]],
        "",
    ));
    assert!(
        released.contains("learned as ham, model now 0 spam / 1 ham"),
        "{released}"
    );
    let learned = ok(run_moat(
        &["quarantine", "--data-dir", &d, "learn-spam", &ids[1]],
        "",
    ));
    assert!(
        learned.contains("learned as spam, model now 1 spam / 1 ham"),
        "{learned}"
    );

    let (model, _) = ModelStore::new(&moat.data_dir.join("classifier"))
        .load()
        .expect("model loads");
    assert_eq!((model.spam_messages, model.ham_messages), (1, 1));
}

#[test]
fn learn_and_check_refuse_missing_paths_and_bad_arguments() {
    let dir = TempDir::new("classifier-cli");
    let d = dir.path().to_str().expect("utf-8");
    let missing = run_moat(
        &["learn", "spam", "--data-dir", d, "/nonexistent/moat-test"],
        "",
    );
    assert_eq!(missing.status.code(), Some(66));
    let missing = run_moat(&["check", "--data-dir", d, "/nonexistent/moat-test"], "");
    assert_eq!(missing.status.code(), Some(66));
    let bad = run_moat(&["learn", "maybe", "--data-dir", d, "x"], "");
    assert_eq!(bad.status.code(), Some(64));
}

#[test]
fn sure_verdicts_are_auto_learned_and_saved_within_seconds() {
    // Every message is "sure ham" here: its score (0) is under autolearn_ham_at.
    let moat =
        Moat::start("[content]\n[classifier]\nautolearn_ham_at = 1.0\nautolearn_spam_at = 2.0\n");
    let message = b"Subject: minutes\r\n\r\nThe minutes of the meeting.\r\n.\r\n";
    assert_eq!(send(&moat, message), 250);
    assert_eq!(send(&moat, message), 250);

    let store = ModelStore::new(&moat.data_dir.join("classifier"));
    wait_until(
        Duration::from_secs(10),
        "the auto-learned model saved",
        || store.load().is_ok_and(|(model, _)| model.ham_messages == 2),
    );
    let (model, _) = store.load().expect("model loads");
    assert_eq!(model.spam_messages, 0);
}
