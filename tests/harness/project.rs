//! Temporary project directories: a `flotilla.toml` and a `migrations/` directory of revision files, built from
//! strings, from `tests/fixtures/`, or from the repository's own `migrations/`.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// The repository root (where `Cargo.toml` is).
pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures/`, home of the small per-scenario revision sets.
pub fn fixtures_dir() -> PathBuf {
    repo_dir().join("tests/fixtures")
}

/// A project in a temporary directory, deleted on drop unless the test panicked (then its path is printed).
#[derive(Debug)]
pub struct TempProject {
    dir: Option<TempDir>,
}

impl TempProject {
    /// A project with `config_toml` as its `flotilla.toml` and an empty `migrations/`.
    pub fn new(config_toml: &str) -> TempProject {
        let dir = tempfile::Builder::new()
            .prefix("flotilla-test-")
            .tempdir()
            .expect("create a temporary project directory");
        let project = TempProject { dir: Some(dir) };
        project.write("flotilla.toml", config_toml);
        fs::create_dir_all(project.migrations_dir()).expect("create migrations/");
        project
    }

    /// A project as [`TempProject::new`] with the given `(file name, contents)` revision files in `migrations/`.
    pub fn with_revisions(config_toml: &str, revisions: &[(&str, &str)]) -> TempProject {
        let project = TempProject::new(config_toml);
        for (file_name, contents) in revisions {
            project.revision(file_name, contents);
        }
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("flotilla.toml")
    }

    pub fn migrations_dir(&self) -> PathBuf {
        self.path().join("migrations")
    }

    /// Writes a file relative to the project root, creating parent directories; returns its path.
    pub fn write(&self, rel_path: impl AsRef<Path>, contents: &str) -> PathBuf {
        let path = self.path().join(rel_path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Writes one revision file into `migrations/`; returns its path.
    pub fn revision(&self, file_name: &str, contents: &str) -> PathBuf {
        self.write(Path::new("migrations").join(file_name), contents)
    }

    /// Copies the files of `src` (recursively) into `migrations/`; returns how many files it copied.
    pub fn copy_revisions_from(&self, src: impl AsRef<Path>) -> usize {
        copy_tree(src.as_ref(), &self.migrations_dir())
    }

    /// Copies the repository's `migrations/` into this project's `migrations/`.
    pub fn copy_repo_migrations(&self) -> usize {
        self.copy_revisions_from(repo_dir().join("migrations"))
    }

    /// Copies `tests/fixtures/<name>/` into this project's `migrations/`.
    pub fn copy_fixture(&self, name: &str) -> usize {
        self.copy_revisions_from(fixtures_dir().join(name))
    }

    /// A `flotilla` command running in the project directory.
    pub fn flotilla(&self) -> super::Cmd {
        let mut cmd = super::flotilla();
        cmd.current_dir(self.path());
        cmd
    }
}

impl Drop for TempProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept test project (the test failed): {}", dir.keep().display());
            }
        }
    }
}

fn copy_tree(src: &Path, dst: &Path) -> usize {
    let entries = fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    fs::create_dir_all(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    let mut n_files = 0;
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            n_files += copy_tree(&from, &to);
        } else {
            fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
            n_files += 1;
        }
    }
    n_files
}
