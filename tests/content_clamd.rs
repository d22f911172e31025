//! Both anti-virus layers against a real clamd on loopback, with one small signature set that
//! the test writes and both load: EICAR (by MD5 and by body) and a custom `.ndb` signature
//! with wildcards. Then clamd's failures: stopped, frozen (too slow) and answering `ERROR` at
//! its stream size limit, each leaving the message unscanned under the configured failure
//! mode rather than clean.

#[path = "support/content_clamd.rs"]
mod clamd;
mod common;
#[path = "support/content_samples.rs"]
mod samples;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use clamd::Clamd;
use moat_gateway::content::{
    ClamdAddress, ClamdOutcome, ClamdSettings, ContentReport, ContentScanner, ContentSettings,
    FailureMode, Layer,
};
use samples::{
    CUSTOM_MALWARE, CUSTOM_NAME, EICAR, EICAR_BODY_NAME, EICAR_HASH_NAME, Part, message_with,
    text_message, write_body_only, write_eicar_hash_only, write_signatures, zip,
};

/// The suffix clamd gives the names of signatures that are not ClamAV's own.
const UNOFFICIAL: &str = ".UNOFFICIAL";

fn scanner(clamd: &Clamd, address: ClamdAddress, failure_mode: FailureMode) -> ContentScanner {
    let settings = ContentSettings {
        signatures_dir: Some(clamd.database.clone()),
        clamd: Some(ClamdSettings {
            address,
            timeout: Duration::from_secs(10),
            failure_mode,
        }),
        ..ContentSettings::default()
    };
    ContentScanner::load(settings).expect("the test signatures load")
}

fn tcp(clamd: &Clamd) -> ClamdAddress {
    ClamdAddress::Tcp(clamd.tcp.to_string())
}

/// The names each layer found, clamd's without its `.UNOFFICIAL` suffix.
fn names(report: &ContentReport, layer: Layer) -> BTreeSet<String> {
    report
        .viruses
        .iter()
        .filter(|hit| hit.layer == layer)
        .map(|hit| hit.name.trim_end_matches(UNOFFICIAL).to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn start_clamd(signatures: fn(&Path), extra: &str) -> Clamd {
    assert!(
        clamd::installed(),
        "clamd is not installed: run scripts/setup (Debian package clamav-daemon)"
    );
    Clamd::start(signatures, extra)
}

fn eicar_attachment() -> Vec<u8> {
    message_with(
        "test file",
        "The anti-virus test file is attached.",
        &[Part {
            name: "eicar.com",
            content_type: "application/octet-stream",
            data: EICAR,
        }],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_attachment_is_caught_by_both_layers_with_the_same_signatures() {
    let clamd = start_clamd(write_signatures, "");
    let scanner = scanner(&clamd, tcp(&clamd), FailureMode::TempFail);

    let report = scanner.scan(&eicar_attachment()).await;

    assert_eq!(report.clamd, ClamdOutcome::Virus, "{report:#?}");
    assert!(report.failure.is_none());
    // clamd names the first signature that matched; the built-in scanner names them all.
    let both = set(&[EICAR_HASH_NAME, EICAR_BODY_NAME]);
    let clamd_found = names(&report, Layer::Clamd);
    assert!(
        clamd_found.len() == 1 && clamd_found.is_subset(&both),
        "{clamd_found:?}"
    );
    assert_eq!(names(&report, Layer::Builtin), both);
    assert!(
        report
            .viruses
            .iter()
            .any(|hit| hit.layer == Layer::Builtin && hit.part == "eicar.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_hash_signature_alone_is_caught_by_both_layers() {
    let clamd = start_clamd(write_eicar_hash_only, "");
    let scanner = scanner(&clamd, tcp(&clamd), FailureMode::TempFail);

    let report = scanner.scan(&eicar_attachment()).await;

    assert_eq!(
        names(&report, Layer::Clamd),
        set(&[EICAR_HASH_NAME]),
        "{report:#?}"
    );
    assert_eq!(names(&report, Layer::Builtin), set(&[EICAR_HASH_NAME]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_body_signature_alone_is_caught_by_both_layers() {
    let clamd = start_clamd(write_body_only, "");
    let scanner = scanner(&clamd, tcp(&clamd), FailureMode::TempFail);

    let report = scanner.scan(&eicar_attachment()).await;

    assert_eq!(
        names(&report, Layer::Clamd),
        set(&[EICAR_BODY_NAME]),
        "{report:#?}"
    );
    assert_eq!(names(&report, Layer::Builtin), set(&[EICAR_BODY_NAME]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_signature_with_wildcards_is_caught_by_both_layers() {
    let clamd = start_clamd(write_signatures, "");
    let scanner = scanner(&clamd, tcp(&clamd), FailureMode::TempFail);
    let message = text_message(
        "custom",
        &format!("Some words before.\r\n{CUSTOM_MALWARE}\r\nAnd after."),
    );

    let report = scanner.scan(&message).await;

    assert_eq!(report.clamd, ClamdOutcome::Virus, "{report:#?}");
    assert_eq!(names(&report, Layer::Clamd), set(&[CUSTOM_NAME]));
    assert_eq!(names(&report, Layer::Builtin), set(&[CUSTOM_NAME]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_in_zip_in_multipart_is_caught_by_both_layers_over_the_unix_socket() {
    let clamd = start_clamd(write_signatures, "");
    let address = ClamdAddress::Unix(clamd.socket.clone());
    let scanner = scanner(&clamd, address, FailureMode::TempFail);
    let archive = zip(&[("readme.txt", b"nothing here"), ("docs/eicar.com", EICAR)]);
    let message = message_with(
        "archive",
        "Zipped.",
        &[Part {
            name: "files.zip",
            content_type: "application/zip",
            data: &archive,
        }],
    );

    let report = scanner.scan(&message).await;

    assert_eq!(report.clamd, ClamdOutcome::Virus, "{report:#?}");
    let both = set(&[EICAR_HASH_NAME, EICAR_BODY_NAME]);
    let clamd_found = names(&report, Layer::Clamd);
    assert!(
        clamd_found.len() == 1 && clamd_found.is_subset(&both),
        "{clamd_found:?}"
    );
    assert_eq!(names(&report, Layer::Builtin), both);
    assert!(
        report
            .viruses
            .iter()
            .any(|hit| hit.layer == Layer::Builtin && hit.part == "files.zip/docs/eicar.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_message_is_clean_for_both_layers() {
    let clamd = start_clamd(write_signatures, "");
    let scanner = scanner(&clamd, tcp(&clamd), FailureMode::TempFail);
    let report = scanner
        .scan(&text_message("lunch", "Noon at the usual place?"))
        .await;
    assert_eq!(report.clamd, ClamdOutcome::Clean);
    assert!(report.viruses.is_empty());
    assert!(report.failure.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_clamd_is_unavailable_and_the_failure_mode_applies() {
    let mut clamd = start_clamd(write_signatures, "");
    let tempfail = scanner(&clamd, tcp(&clamd), FailureMode::TempFail);
    let accept = scanner(
        &clamd,
        ClamdAddress::Unix(clamd.socket.clone()),
        FailureMode::Accept,
    );
    let message = text_message("hello", "Just words.");
    assert_eq!(tempfail.scan(&message).await.clamd, ClamdOutcome::Clean);

    clamd.stop();

    let report = tempfail.scan(&message).await;
    assert!(
        matches!(report.clamd, ClamdOutcome::Unavailable(ref r) if r.contains("cannot connect")),
        "{report:#?}"
    );
    let failure = report.failure.expect("an unscanned message is a failure");
    assert_eq!(failure.mode, FailureMode::TempFail);
    assert!(report.viruses.is_empty());

    let report = accept.scan(&message).await;
    assert!(
        matches!(report.clamd, ClamdOutcome::Unavailable(_)),
        "{report:#?}"
    );
    assert_eq!(report.failure.expect("a failure").mode, FailureMode::Accept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_clamd_times_out_as_unavailable_and_recovers() {
    let clamd = start_clamd(write_signatures, "");
    let settings = ContentSettings {
        clamd: Some(ClamdSettings {
            address: tcp(&clamd),
            timeout: Duration::from_millis(500),
            failure_mode: FailureMode::TempFail,
        }),
        ..ContentSettings::default()
    };
    let scanner = ContentScanner::load(settings).expect("loads");
    let message = text_message("hello", "Just words.");

    clamd.freeze();
    let started = Instant::now();
    let report = scanner.scan(&message).await;
    let waited = started.elapsed();
    clamd.thaw();

    assert!(
        matches!(report.clamd, ClamdOutcome::Unavailable(ref r) if r.contains("no verdict within")),
        "{report:#?}"
    );
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(
        report.failure.expect("a failure").mode,
        FailureMode::TempFail
    );
    assert_eq!(scanner.scan(&message).await.clamd, ClamdOutcome::Clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_size_limit_error_is_neither_clean_nor_a_virus() {
    let clamd = start_clamd(write_signatures, "StreamMaxLength 2K");
    let scanner = scanner(&clamd, tcp(&clamd), FailureMode::TempFail);
    // Over the limit in one INSTREAM chunk (clamd reads it, then answers ERROR), with EICAR
    // at the end, past what clamd would look at.
    let filler = "All work and no play makes Jack a dull boy.\r\n".repeat(100);
    let small = text_message(
        "big",
        &format!("{filler}{}", String::from_utf8_lossy(EICAR)),
    );
    // Over the limit by many chunks: clamd closes the connection while it is being written.
    let large = text_message("bigger", &filler.repeat(200));

    for message in [small, large] {
        let report = scanner.scan(&message).await;
        let ClamdOutcome::Error(reason) = &report.clamd else {
            panic!("expected an error from clamd: {report:#?}");
        };
        assert!(
            reason.contains("size limit") || reason.contains("closed the stream"),
            "{reason}"
        );
        assert!(names(&report, Layer::Clamd).is_empty());
        let failure = report.failure.as_ref().expect("not clean: a failure");
        assert_eq!(failure.mode, FailureMode::TempFail);
    }

    // The built-in layer still sees what clamd refused to look at.
    let message = text_message(
        "big",
        &format!("{filler}{}", String::from_utf8_lossy(EICAR)),
    );
    let report = scanner.scan(&message).await;
    assert!(names(&report, Layer::Builtin).contains(EICAR_BODY_NAME));
}
