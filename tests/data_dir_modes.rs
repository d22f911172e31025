//! What `moat serve` creates in its data directory is its owner's alone, whatever the umask:
//! the queue, the quarantine, the TLS key and the Maildirs hold other people's mail.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::raw::{Client, assert_queued, start, wait_for_messages};

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|error| panic!("stat {}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn directories_are_0700_and_files_0600() {
    let moat = start("");
    let mut client = Client::in_transaction(&moat, "user@localhost");
    client.expect("DATA", 354, "");
    client.send(b"Subject: private\r\n\r\nbody\r\n.\r\n");
    assert_queued(&client.reply());
    let delivered = wait_for_messages(&moat, "user", 1);

    let data = moat.data_dir.as_path();
    for directory in [
        data.join("tls"),
        data.join("queue"),
        data.join("quarantine"),
        data.join("mail"),
        data.join("mail/localhost/user/new"),
    ] {
        assert_eq!(mode(&directory), 0o700, "{}", directory.display());
    }
    for file in [
        data.join("moat.lock"),
        data.join("tls/key.pem"),
        delivered[0].clone(),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
