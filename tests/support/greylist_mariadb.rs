//! Private MariaDB servers for the greylist's MySQL tests (`#[path]`-included): each in its own
//! data directory, on a loopback port, started with `mariadbd` directly and stopped when the
//! test process ends, even if it panics.

#![allow(dead_code)]

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The database and user the tests give Moat.
pub const DATABASE: &str = "moat";

/// A template data directory made once per root by `mariadb-install-db`; each server of the
/// root starts from a copy, which takes milliseconds instead of seconds.
fn template(root: &Path) -> PathBuf {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = root.join("template");
    if dir.is_dir() {
        return dir;
    }
    // A temporary directory of its own: bootstraps running at once must not share /tmp's
    // temporary table names.
    let tmp = root.join("template-tmp");
    std::fs::create_dir_all(&tmp).expect("create the bootstrap's temporary directory");
    let output = Command::new("mariadb-install-db")
        .env("TMPDIR", &tmp)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--user=root",
            "--skip-test-db",
        ])
        .output()
        .expect(
            "run mariadb-install-db (Debian package mariadb-server; scripts/setup installs it)",
        );
    assert!(
        output.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// One running MariaDB server.
pub struct Mariadb {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    server_id: u32,
    child: Option<Child>,
}

impl Mariadb {
    /// Starts a server in `root/name` with a binary log (so it can be a primary), and creates
    /// the database and Moat's user.
    pub fn start(root: &Path, name: &str, server_id: u32) -> Mariadb {
        let template = template(root);
        let dir = root.join(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&dir)
            .status()
            .expect("cp");
        assert!(status.success(), "copy the template data directory");
        let mut server = Mariadb {
            port: 0,
            dir,
            server_id,
            child: None,
        };
        server.launch();
        server.sql(&format!(
            "CREATE DATABASE {DATABASE};
             CREATE USER moat@'127.0.0.1' IDENTIFIED BY 'moat';
             GRANT ALL ON {DATABASE}.* TO moat@'127.0.0.1';
             CREATE USER repl@'127.0.0.1' IDENTIFIED BY 'repl';
             GRANT REPLICATION SLAVE ON *.* TO repl@'127.0.0.1';"
        ));
        server
    }

    /// Starts a server in `root/name` replicating `primary` from its first transaction.
    pub fn start_replica(root: &Path, name: &str, server_id: u32, primary: &Mariadb) -> Mariadb {
        let template = template(root);
        let dir = root.join(name);
        let status = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&dir)
            .status()
            .expect("cp");
        assert!(status.success(), "copy the template data directory");
        let mut replica = Mariadb {
            port: 0,
            dir,
            server_id,
            child: None,
        };
        replica.launch();
        replica.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl',
             MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos;
             START SLAVE;",
            primary.port
        ));
        replica
    }

    fn launch(&mut self) {
        // A port picked by binding port 0; reused on restart so that URLs stay valid.
        if self.port == 0 {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
            self.port = listener.local_addr().expect("local address").port();
        }
        let dir = self.dir.display().to_string();
        let mariadbd = format!(
            "/usr/sbin/mariadbd --no-defaults --datadir={dir} --port={} --bind-address=127.0.0.1 \
             --socket={dir}/sock --pid-file={dir}/pid --log-error={dir}/error.log --user=root \
             --tmpdir={dir} \
             --server-id={} --log-bin={dir}/binlog --skip-name-resolve \
             --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
             --innodb-flush-log-at-trx-commit=2 --skip-log-slave-updates",
            self.port, self.server_id
        );
        // The watchdog ends the server when the test process goes, whatever way it goes.
        let watchdog = format!(
            "{mariadbd} & server=$!; while kill -0 {} 2>/dev/null && kill -0 $server 2>/dev/null; \
             do sleep 0.5; done; kill -9 $server 2>/dev/null; wait",
            std::process::id()
        );
        let child = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "mariadbd did not listen; its log:\n{}",
                fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moat's URL for this server.
    pub fn url(&self) -> String {
        format!("mysql://moat:moat@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Runs SQL as root over the socket; returns the output, tab-separated, without headers.
    pub fn sql(&self, statements: &str) -> String {
        let output = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}/sock", self.dir.display()))
            .args(["-uroot", "-N", "-B", "-e", statements])
            .output()
            .expect("run the mariadb client");
        assert!(
            output.status.success(),
            "SQL failed: {statements}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Kills the server as a crash would; [`Mariadb::restart`] brings it back.
    pub fn kill(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.dir.join("pid"));
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.launch();
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.kill();
    }
}
