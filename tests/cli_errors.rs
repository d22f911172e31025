//! `moat serve` and `moat dnsbl serve` refuse to start with a clear message and a sysexits
//! code when they cannot run: 64 for a bad command line, 66 for missing input, 69 for a busy
//! port, 73 for an unusable data directory, 78 for a bad configuration file.

mod common;

use std::fs;
use std::net::TcpListener;
use std::process::{Command, Output};

use common::*;

fn moat(dir: &TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moat"))
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .expect("run moat")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_config_with_an_unknown_key_names_the_file_line_and_key() {
    let dir = TempDir::new("cli-config");
    let config = dir.path().join("moat.toml");
    fs::write(
        &config,
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\nmax_mesage_size = 10\n",
    )
    .expect("write");
    let output = moat(
        &dir,
        &["serve", "--config", config.to_str().expect("utf-8 path")],
    );
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("moat.toml") && text.contains("line 3"),
        "{text}"
    );
    assert!(text.contains("max_mesage_size"), "{text}");
}

#[test]
fn a_bad_value_names_the_key_and_what_is_accepted() {
    let dir = TempDir::new("cli-value");
    let config = dir.path().join("moat.toml");
    fs::write(
        &config,
        "[[domain]]\nname = \"example.com\"\nroute = \"mbox:/var/mail\"\n",
    )
    .expect("write");
    let output = moat(
        &dir,
        &["serve", "--config", config.to_str().expect("utf-8 path")],
    );
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("maildir:PATH, lmtp:HOST:PORT or smtp:HOST:PORT"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_busy_port_is_reported_with_its_address() {
    let dir = TempDir::new("cli-port");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind a port to keep busy");
    let addr = busy.local_addr().expect("address").to_string();
    let output = moat(&dir, &["serve", "--listen", &addr]);
    assert_eq!(output.status.code(), Some(69), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("cannot listen on {addr}")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unusable_data_dir_is_reported_with_its_path() {
    let dir = TempDir::new("cli-data");
    // A path below a regular file cannot be created, even by root.
    fs::write(dir.path().join("plain-file"), b"").expect("write");
    let output = moat(
        &dir,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "plain-file/data",
        ],
    );
    assert_eq!(output.status.code(), Some(73), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("plain-file/data"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn dnsbl_serve_tells_a_bad_command_line_from_a_missing_dataset() {
    let dir = TempDir::new("cli-dnsbl");
    write_file(dir.path(), "bl.txt", "192.0.2.1\n");

    for (args, code, said) in [
        (&["--zone", "bl.test:ip4set"][..], 64, "--zone"),
        (&["--zone", "bl.test:nosuchtype:bl.txt"], 64, "--zone"),
        (
            &[
                "--listen",
                "not-an-address",
                "--zone",
                "bl.test:ip4set:bl.txt",
            ],
            64,
            "not-an-address",
        ),
        (&[], 64, "no zone to serve"),
        (&["--zone", "bl.test:ip4set:missing.txt"], 66, "missing.txt"),
    ] {
        let mut command = vec!["dnsbl", "serve", "--listen", "127.0.0.1:0"];
        if args.first() == Some(&"--listen") {
            command.truncate(2);
        }
        command.extend_from_slice(args);
        let output = moat(&dir, &command);

        assert_eq!(
            output.status.code(),
            Some(code),
            "{command:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(said),
            "{command:?}: {}",
            stderr(&output)
        );
    }
}
