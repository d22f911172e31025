//! The `[content]` section as an operator writes it in TOML: the documented example
//! validates into the settings it describes, unknown keys are refused, and the files it names
//! are read (or refused with their line) when the scanner loads.

mod common;
#[path = "support/content_samples.rs"]
mod samples;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use moat_gateway::content::{
    ClamdAddress, ContentError, ContentScanner, ContentSection, FailureMode,
};

/// A configuration file with a `[content]` section, as the gateway's file would hold it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    content: ContentSection,
}

fn parse(text: &str) -> Result<ContentSection, toml::de::Error> {
    toml::from_str::<File>(text).map(|file| file.content)
}

/// The example of gateway/src/content/settings.rs, with the paths of this test.
const EXAMPLE: &str = r#"
[content]
rules_file = "RULES"
signatures_dir = "SIGNATURES"
max_scan_size = 26214400

[content.clamd]
address = "127.0.0.1:3310"
timeout = "30s"
failure_mode = "tempfail"

[content.attachments]
dangerous_extensions = ["exe", "scr", "js"]
double_extensions = true
executables = true
scripts = false
office_macros = true
encrypted_archives = true
"#;

#[test]
fn documented_example_validates_and_loads() {
    let dir = TempDir::new("content-config");
    let rules = write_file(
        dir.path(),
        "site.rules",
        "LOCAL_PHRASE 2 body \"quarterly bonus\"\n",
    );
    let signatures = dir.path().join("signatures");
    samples::write_signatures(&signatures);
    let text = EXAMPLE
        .replace("RULES", rules.to_str().expect("UTF-8 path"))
        .replace("SIGNATURES", signatures.to_str().expect("UTF-8 path"));

    let settings = parse(&text).expect("parses").validate().expect("validates");

    assert_eq!(settings.rules_file, Some(rules));
    assert_eq!(settings.max_scan_size, 25 * 1024 * 1024);
    let clamd = settings.clamd.as_ref().expect("clamd configured");
    assert_eq!(clamd.address, ClamdAddress::Tcp("127.0.0.1:3310".into()));
    assert_eq!(clamd.timeout, Duration::from_secs(30));
    assert_eq!(clamd.failure_mode, FailureMode::TempFail);
    let policy = &settings.attachment_policy;
    assert_eq!(policy.dangerous_extensions, ["exe", "scr", "js"]);
    assert!(!policy.scripts && policy.executables);

    ContentScanner::load(settings).expect("the files load");
}

#[test]
fn empty_section_is_all_defaults() {
    let settings = parse("[content]\n")
        .expect("parses")
        .validate()
        .expect("validates");
    assert!(settings.clamd.is_none());
    assert!(settings.signatures_dir.is_none());
    ContentScanner::load(settings).expect("the built-in rules load");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    for text in [
        "[content]\nvirus_scanner = true\n",
        "[content.clamd]\naddress = \"127.0.0.1:3310\"\nretries = 3\n",
        "[content.attachments]\nexecutable = true\n",
    ] {
        let error = parse(text).expect_err(text).to_string();
        assert!(error.contains("unknown field"), "{text}: {error}");
    }
}

#[test]
fn bad_values_name_the_key_and_what_is_accepted() {
    let error = parse("[content.clamd]\naddress = \"127.0.0.1\"\n")
        .expect("parses")
        .validate()
        .expect_err("no port");
    assert_eq!(
        error.to_string(),
        "config content.clamd.address = \"127.0.0.1\": expected \"HOST:PORT\" or the absolute \
path of a Unix socket"
    );
}

#[test]
fn malformed_rule_file_is_refused_with_its_line() {
    let dir = TempDir::new("content-config");
    let rules = write_file(
        dir.path(),
        "bad.rules",
        "# fine\nOK 1 body \"fine words\"\nBAD 1 body\n",
    );
    let settings = parse(&format!("[content]\nrules_file = {:?}\n", rules))
        .expect("parses")
        .validate()
        .expect("validates");
    let Err(error) = ContentScanner::load(settings) else {
        panic!("a malformed rule file loaded");
    };
    assert!(
        matches!(error, ContentError::Rule { line: 3, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("bad.rules line 3"), "{error}");
}

#[test]
fn missing_signature_directory_is_refused() {
    let missing = PathBuf::from("/nonexistent/moat-signatures");
    let settings = parse(&format!("[content]\nsignatures_dir = {missing:?}\n"))
        .expect("parses")
        .validate()
        .expect("validates");
    let Err(error) = ContentScanner::load(settings) else {
        panic!("a missing directory loaded");
    };
    assert!(matches!(error, ContentError::Read { .. }), "{error}");
}
