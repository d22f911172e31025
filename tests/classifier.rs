//! The statistical classifier end to end: `moat learn` and `moat check` on the SpamAssassin
//! corpus, a `moat serve` that picks up a learned model and gives the same score after a
//! restart, a corrupt model file that leaves Moat running on rules alone, concurrent `moat
//! learn` runs that lose no update, and a release from the quarantine that learns ham; then
//! the review's regressions: symbolic links, FIFOs and non-messages skipped, de-duplication and
//! relearning, test patterns never auto-learned, exit codes, error text and file modes.
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
            out.starts_with(&format!("learned {count} {label} messages ({count} new, ")),
            "{out}"
        );
        assert!(
            out.contains("skipped 0 not a regular file, 0 unreadable, 0 not a message"),
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
    // Two different messages: the same one twice would be one message to the classifier.
    let first = b"Subject: quarterly report\r\n\r\nThe figures are attached.\r\n.\r\n";
    let second = b"Subject: quarterly report\r\n\r\nThe figures follow.\r\n.\r\n";
    assert_eq!(send(&moat, first), 250);
    assert_eq!(send(&moat, second), 250);

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
    let first = b"Subject: minutes\r\n\r\nThe minutes of the meeting.\r\n.\r\n";
    let second = b"Subject: minutes\r\n\r\nThe minutes of the next meeting.\r\n.\r\n";
    assert_eq!(send(&moat, first), 250);
    assert_eq!(send(&moat, second), 250);

    let store = ModelStore::new(&moat.data_dir.join("classifier"));
    wait_until(
        Duration::from_secs(10),
        "the auto-learned model saved",
        || store.load().is_ok_and(|(model, _)| model.ham_messages == 2),
    );
    let (model, _) = store.load().expect("model loads");
    assert_eq!(model.spam_messages, 0);
}

// ---- Regressions from the review of the first version ----

/// A small message file with a Message-ID, so that each is its own message to the classifier.
fn message_file(dir: &Path, name: &str, id: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(
        &path,
        format!("Message-ID: <{id}@example.com>\nSubject: {id}\n\n{body}\n"),
    )
    .expect("write message");
    path
}

/// Runs `moat ARGS` with no stdin, killed and failed after 20 seconds (a FIFO once hung it).
fn run_moat_within(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run moat");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("poll moat").is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            panic!("moat {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait for moat")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

#[test]
fn learn_does_not_follow_symlinks_inside_directories_and_counts_what_it_skipped() {
    let dir = TempDir::new("classifier-symlinks");
    let outside = TempDir::new("classifier-symlinks-outside");
    let mail = dir.path().join("mail");
    fs::create_dir_all(&mail).expect("mkdir");
    message_file(&mail, "a.eml", "a", "hello there");
    let secret = message_file(outside.path(), "secret.eml", "secret", "not for learning");
    std::os::unix::fs::symlink("..", mail.join("loop")).expect("symlink");
    std::os::unix::fs::symlink(&secret, mail.join("secret.eml")).expect("symlink");
    mkfifo(&mail.join("fifo"));
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");

    let out = ok(run_moat_within(&[
        "learn",
        "spam",
        "--data-dir",
        d,
        mail.to_str().expect("utf-8"),
    ]));
    assert!(out.starts_with("learned 1 spam message (1 new, "), "{out}");
    assert!(
        out.contains("skipped 3 not a regular file, 0 unreadable, 0 not a message"),
        "{out}"
    );

    // A symbolic link to a regular file named on the command line is followed.
    let link = dir.path().join("named.eml");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    let out = ok(run_moat_within(&[
        "learn",
        "spam",
        "--data-dir",
        d,
        link.to_str().expect("utf-8"),
    ]));
    assert!(out.starts_with("learned 1 spam message (1 new, "), "{out}");
}

#[test]
fn a_fifo_or_device_is_refused_as_not_a_regular_file_without_hanging() {
    let dir = TempDir::new("classifier-fifo");
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");
    let fifo = fifo.to_str().expect("utf-8");
    for args in [
        vec!["learn", "ham", "--data-dir", d, fifo],
        vec!["check", "--no-network", "--data-dir", d, fifo],
        vec!["check", "--no-network", "--data-dir", d, "/dev/null"],
    ] {
        let output = run_moat_within(&args);
        assert_eq!(
            output.status.code(),
            Some(66),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("not a regular file"),
            "{}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?} scored something");
    }
}

#[test]
fn empty_and_binary_files_are_not_messages() {
    let dir = TempDir::new("classifier-not-messages");
    let mail = dir.path().join("mail");
    fs::create_dir_all(&mail).expect("mkdir");
    fs::write(mail.join("empty"), b"").expect("write");
    fs::write(
        mail.join("binary"),
        [0u8, 159, 146, 150, 0, 1, 2, b':', 10, 10],
    )
    .expect("write");
    fs::write(mail.join("text"), b"just some words\n\nmore words: here\n").expect("write");
    message_file(&mail, "real.eml", "real", "a real message");
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");

    let out = ok(run_moat_within(&[
        "learn",
        "ham",
        "--data-dir",
        d,
        mail.to_str().expect("utf-8"),
    ]));
    assert!(out.starts_with("learned 1 ham message (1 new, "), "{out}");
    assert!(out.contains("0 unreadable, 3 not a message"), "{out}");
}

#[test]
fn learning_a_message_twice_counts_once_and_the_other_class_moves_it() {
    let dir = TempDir::new("classifier-seen");
    let message = message_file(dir.path(), "m.eml", "seen", "cheap watches for everyone");
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");
    let m = message.to_str().expect("utf-8");

    let out = ok(run_moat(&["learn", "spam", "--data-dir", d, m], ""));
    assert!(
        out.contains("(1 new, 0 relearned, 0 already learned)"),
        "{out}"
    );
    let out = ok(run_moat(&["learn", "spam", "--data-dir", d, m, m], ""));
    assert!(
        out.starts_with("learned 0 spam messages (0 new, 0 relearned, 2 already learned)"),
        "{out}"
    );
    assert!(out.contains("model now 1 spam / 0 ham"), "{out}");

    let out = ok(run_moat(&["learn", "ham", "--data-dir", d, m], ""));
    assert!(
        out.contains("(0 new, 1 relearned, 0 already learned)"),
        "{out}"
    );
    assert!(out.contains("model now 0 spam / 1 ham"), "{out}");
    let (model, _) = ModelStore::new(&dir.path().join("data/classifier"))
        .load()
        .expect("model loads");
    assert!(
        model.counts.values().all(|c| c.spam == 0 && c.ham == 1),
        "{model:?}"
    );
}

/// A message that the default rules score on both sides: 3.5 header points (Subject rules)
/// and 4.5 body points.
const SURE_SPAM: &[u8] =
    b"Message-ID: <sure-spam@example.com>\r\nSubject: free money viagra\r\n\r\n\
    As the next of kin you will receive the transfer of the sum of ten million.\r\n.\r\n";

#[test]
fn releasing_an_autolearned_spam_moves_it_to_ham() {
    let moat = Moat::start(
        "[content]\n[verdict]\ntag_at = -100.0\nquarantine_at = -100.0\nreject_at = 1000.0\n\
         [classifier]\nautolearn_spam_at = 5.0\nautolearn_ham_at = -50.0\n",
    );
    assert_eq!(send(&moat, SURE_SPAM), 250);
    let store = ModelStore::new(&moat.data_dir.join("classifier"));
    wait_until(
        Duration::from_secs(10),
        "the auto-learned spam saved",
        || {
            store
                .load()
                .is_ok_and(|(model, _)| model.spam_messages == 1)
        },
    );

    let d = moat.data_dir.to_str().expect("utf-8").to_owned();
    let list = ok(run_moat(&["quarantine", "--data-dir", &d, "list"], ""));
    let id = list.split_whitespace().next().expect("one held").to_owned();
    let released = ok(run_moat(
        &["quarantine", "--data-dir", &d, "release", &id],
        "",
    ));
    assert!(
        released.contains("relearned as ham, model now 0 spam / 1 ham"),
        "{released}"
    );
}

#[test]
fn gtube_and_one_sided_spam_are_never_autolearned() {
    // Sure ham is learned here (score 0 <= 1), which shows when the learning was saved.
    let moat =
        Moat::start("[content]\n[classifier]\nautolearn_spam_at = 2.0\nautolearn_ham_at = 1.0\n");
    let gtube = format!(
        "Subject: free money viagra\r\n\r\nnext of kin, transfer of the sum of\r\n{}\r\n.\r\n",
        moat_gateway::content::GTUBE
    );
    assert_eq!(send(&moat, gtube.as_bytes()), 554);
    // Body points alone (4.5), over autolearn_spam_at but with no header-side evidence.
    let one_sided = b"Subject: hello\r\n\r\nnext of kin, transfer of the sum of\r\n.\r\n";
    assert_eq!(send(&moat, one_sided), 250);
    assert_eq!(
        send(&moat, b"Subject: minutes\r\n\r\nThe minutes.\r\n.\r\n"),
        250
    );

    let store = ModelStore::new(&moat.data_dir.join("classifier"));
    wait_until(
        Duration::from_secs(10),
        "the auto-learned ham saved",
        || store.load().is_ok_and(|(model, _)| model.ham_messages == 1),
    );
    let (model, _) = store.load().expect("model loads");
    assert_eq!(model.spam_messages, 0);
}

#[test]
fn learn_and_check_exit_66_when_nothing_could_be_used_and_check_the_rest() {
    let dir = TempDir::new("classifier-exit");
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");
    let e = empty.to_str().expect("utf-8");

    let output = run_moat(&["learn", "spam", "--data-dir", d, e], "");
    assert_eq!(output.status.code(), Some(66));
    assert!(
        stderr(&output).contains("nothing to learn"),
        "{}",
        stderr(&output)
    );
    let output = run_moat(&["check", "--data-dir", d, e], "");
    assert_eq!(output.status.code(), Some(66));
    assert!(
        stderr(&output).contains("nothing to check"),
        "{}",
        stderr(&output)
    );

    let good = message_file(dir.path(), "good.eml", "good", "lunch on friday");
    let good = good.to_str().expect("utf-8");
    let output = run_moat(
        &["check", "--data-dir", d, "/nonexistent/moat-test", good],
        "",
    );
    assert_eq!(output.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&output.stdout).starts_with(good));
    assert!(
        stderr(&output).contains("/nonexistent/moat-test: does not exist"),
        "{}",
        stderr(&output)
    );
    // No model under this data directory: said, not passed off as untrained.
    assert!(
        stderr(&output).contains("no classifier model at"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_corrupt_model_makes_learn_exit_65_naming_the_file() {
    let dir = TempDir::new("classifier-corrupt-learn");
    let message = message_file(dir.path(), "m.eml", "corrupt", "some words");
    let classifier = dir.path().join("data/classifier");
    fs::create_dir_all(&classifier).expect("mkdir");
    fs::write(classifier.join("model.bin"), b"garbage").expect("write");
    let d = dir.path().join("data");
    let output = run_moat(
        &[
            "learn",
            "spam",
            "--data-dir",
            d.to_str().expect("utf-8"),
            message.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(65), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("model.bin"), "{text}");
    assert!(
        text.contains("restore it from a backup or delete it and retrain"),
        "{text}"
    );
}

#[test]
fn an_os_error_is_printed_once_and_a_missing_held_message_says_where_to_look() {
    let dir = TempDir::new("classifier-errors");
    let message = message_file(dir.path(), "m.eml", "errors", "some words");
    let classifier = dir.path().join("data/classifier");
    // A lock file that cannot be opened for writing: a directory in its place.
    fs::create_dir_all(classifier.join("model.lock")).expect("mkdir");
    let d = dir.path().join("data");
    let d = d.to_str().expect("utf-8");
    let output = run_moat(
        &[
            "learn",
            "spam",
            "--data-dir",
            d,
            message.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(73));
    let text = stderr(&output);
    assert_eq!(text.matches("os error").count(), 1, "{text}");

    let output = run_moat(
        &["quarantine", "--data-dir", d, "release", "0123456789abcdef"],
        "",
    );
    assert_eq!(output.status.code(), Some(66));
    let text = stderr(&output);
    assert!(text.contains("not in the quarantine"), "{text}");
    assert!(text.contains("moat quarantine list"), "{text}");
    assert!(text.matches("os error").count() <= 1, "{text}");
}

#[test]
fn the_classifier_directory_and_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("classifier-modes");
    let message = message_file(dir.path(), "m.eml", "modes", "some words");
    let d = dir.path().join("data");
    ok(run_moat(
        &[
            "learn",
            "spam",
            "--data-dir",
            d.to_str().expect("utf-8"),
            message.to_str().expect("utf-8"),
        ],
        "",
    ));
    let mode = |path: PathBuf| fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    let classifier = d.join("classifier");
    assert_eq!(mode(classifier.clone()), 0o700);
    for file in ["model.bin", "model.lock", "seen.bin"] {
        assert_eq!(mode(classifier.join(file)), 0o600, "{file}");
    }
}
