//! The appliance image builds, boots under BIOS and under UEFI, and runs the whole mail system.
//!
//! `appliance-image/boot-test.sh` builds the disk image (mmdebstrap base, cached in
//! `appliance-image/.cache`) with the `moat` binary of this test build, boots it in qemu under
//! software emulation inside a network namespace of its own, and checks from outside the VM: mail
//! sent with swaks to port 25 read back over IMAP and POP3, the DNSBL zone over UDP and TCP, EICAR
//! through clamd, the webmail login over HTTPS, and no failed unit. `appliance-image/boot_test.py`
//! says how. It needs root (network namespaces, the image's file owners) and the packages that
//! `scripts/setup` installs; a cold run takes about 10 minutes on 2 cores, most of it the two
//! boots under emulation.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn appliance_image_boots_under_bios_and_uefi_with_mail_flowing_smtp_to_imap_and_pop3() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance-image/boot-test.sh");
    let mut child = Command::new(&script)
        .args(["bios", "uefi"])
        // The debug binary of this build: a release build would add minutes to every run.
        .env("MOAT_BINARY", env!("CARGO_BIN_EXE_moat"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("run {}: {error}", script.display()));

    // Each line as it comes, so a long run shows its progress (with --nocapture).
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut last_line = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the boot test's output");
        println!("{line}");
        if !line.trim().is_empty() {
            last_line = line;
        }
    }
    let status = child.wait().expect("wait for the boot test");

    assert!(
        status.success(),
        "boot-test.sh failed ({status}); last line: {last_line}"
    );
    assert!(
        last_line.ends_with(" passed, 0 failed") && !last_line.starts_with("0 passed"),
        "boot-test.sh ended with {last_line:?}"
    );
}
