//! Where revisions come from. [`RevisionSource`] is the extension point: a source turns a script location into
//! [`Script`]s, the form the graph and the executor work on (header metadata, and per direction the statements
//! and phases to run). Built in: [`SqlFiles`] (registered as `sql`, a directory of revision files) and
//! [`Embedded`] (revision texts compiled into a program, for tools that ship their migrations inside the
//! binary).

use std::path::{Path, PathBuf};

use super::load::{load_locations, parse_files};
use super::parse::Script;
use super::problem::ScriptError;

/// Where a project's revisions live: flotilla.toml's `version_locations` (default: the script location), and
/// the directories below them too when `recursive_version_locations` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    pub dirs: Vec<PathBuf>,
    pub recursive: bool,
}

impl Locations {
    /// One directory, not searched below.
    pub fn one(dir: impl Into<PathBuf>) -> Self {
        Locations {
            dirs: vec![dir.into()],
            recursive: false,
        }
    }

    /// The first directory: where a source without directories of its own places its revisions' names.
    pub fn first(&self) -> &Path {
        self.dirs.first().map(PathBuf::as_path).unwrap_or(Path::new("."))
    }
}

/// A kind of revision source. `load` returns every revision of the location, or every problem found in it
/// (each naming its file and line), never a partial set: nothing may run from a location with a problem.
pub trait RevisionSource: Send + Sync {
    fn load(&self, locations: &Locations) -> Result<Vec<Script>, ScriptError>;

    /// Whether a revision file written into the script location (by `revision` and `merge`) becomes one of
    /// this source's revisions; when not, those commands refuse instead of writing a file nothing reads.
    fn reads_new_files(&self) -> bool {
        false
    }
}

/// Revision files (`*.sql`) directly inside the script location, in file-name order; see
/// `docs/revision-format.md`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqlFiles;

impl RevisionSource for SqlFiles {
    fn load(&self, locations: &Locations) -> Result<Vec<Script>, ScriptError> {
        load_locations(locations)
    }

    fn reads_new_files(&self) -> bool {
        true
    }
}

/// Revision texts held in memory, each with the file name its problems are reported under (joined to the
/// script location). For example `include_str!` of every file, so a program carries its migrations.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    files: Vec<(String, String)>,
}

impl Embedded {
    /// `files` are `(file name, text)` pairs, loaded in the order given.
    pub fn new<N: Into<String>, T: Into<String>>(files: impl IntoIterator<Item = (N, T)>) -> Self {
        Embedded {
            files: files.into_iter().map(|(n, t)| (n.into(), t.into())).collect(),
        }
    }
}

impl RevisionSource for Embedded {
    fn load(&self, locations: &Locations) -> Result<Vec<Script>, ScriptError> {
        let location = locations.first();
        let files = self
            .files
            .iter()
            .map(|(name, text)| (location.join(name), Ok(text.clone())));
        parse_files(files, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "-- revision: a1\n-- down_revision:\n\n-- flotilla:upgrade\nCREATE TABLE t (id int);\n";

    #[test]
    fn embedded_revisions_parse_like_files() {
        let source = Embedded::new([("a.sql", A)]);
        let scripts = source.load(&Locations::one("mig")).unwrap();
        assert_eq!(scripts[0].meta.id.as_str(), "a1");
        assert_eq!(scripts[0].path, Path::new("mig/a.sql"));
        assert_eq!(scripts[0].upgrade.statements[0].sql, "CREATE TABLE t (id int)");
    }

    #[test]
    fn embedded_problems_name_the_file_and_line() {
        let source = Embedded::new([("a.sql", A), ("b.sql", A)]);
        let error = source.load(&Locations::one("mig")).unwrap_err();
        assert_eq!(error.problems.len(), 1);
        let text = error.to_string();
        assert!(text.contains("mig/b.sql:1"), "{text}");
        assert!(text.contains("mig/a.sql"), "{text}");
    }
}
