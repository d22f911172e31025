//! Files of a test: the temporary directory that holds everything, files written into it, and
//! the Maildirs read back.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

/// The repository root, where `tests/`, `scripts/` and `.corpus/` are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A directory under the system temporary directory, removed on drop unless the test failed.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/moat-test-<label>-<pid>-<n>`, readable by all so that Dovecot's mail user
    /// can reach the mail directories inside it.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("moat-test-{label}-{}-{n}-{nanos}", std::process::id());
            let path = std::env::temp_dir().join(name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    set_mode(&path, 0o755);
                    return TempDir { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temporary directory {}: {e}", path.display()),
            }
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("MOAT_TEST_KEEP").is_some() {
            eprintln!("kept test directory {}", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}
pub(super) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {mode:o} {}: {e}", path.display()));
}

/// Writes `contents` to a new file `name` in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    let mut file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(contents.as_ref())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The files in `<maildir>/new`, sorted by name; none if it does not exist yet.
pub fn maildir_new(maildir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files
}

/// The regular files directly in `dir`; none when it cannot be read.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect()
}

/// Messages still in the queue `queue`, whatever their state: every file in its directories
/// but `tmp`, which never held an acknowledged message (Moat empties it at start).
pub fn queued_messages(queue: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(queue) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name() != "tmp" && entry.path().is_dir())
        .flat_map(|entry| files_in(&entry.path()))
        .collect()
}
