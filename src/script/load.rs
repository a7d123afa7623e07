//! Loading a directory of revision files, with the checks that need more than one file.
//!
//! Graph checks (unknown parents, cycles, label clashes) are left to `graph`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::revision::RevisionId;

use super::parse::{parse_script, Script};
use super::problem::{Problem, ProblemKind, ScriptError};
use super::source::Locations;

/// Load and parse every revision file (`*.sql`) directly inside `dir`, collecting all problems.
///
/// Files are read in file-name order; hidden files (names starting with `.`), other extensions and
/// subdirectories are ignored. Returns every problem of every file at once, plus one problem per revision
/// id defined in more than one file (at the later file, naming the earlier one), and a problem at line 0
/// when `dir` or a file cannot be read or a file is not UTF-8.
pub fn load_dir(dir: &Path) -> Result<Vec<Script>, ScriptError> {
    load_locations(&Locations::one(dir))
}

/// [`load_dir`] over several directories (Alembic's `version_locations`), one after the other, and below them
/// too when `recursive` (each directory's files in file-name order, then its subdirectories in name order;
/// hidden ones and symbolic links to directories skipped, as Alembic's walk does). A file reached twice (through
/// overlapping locations or a link) is read once; a revision id defined in two files is a problem like one
/// defined twice in one directory.
pub fn load_locations(locations: &Locations) -> Result<Vec<Script>, ScriptError> {
    let mut problems = Vec::new();
    let mut paths = Vec::new();
    for dir in &locations.dirs {
        collect_files(dir, locations.recursive, &mut paths, &mut problems);
    }
    let mut seen = HashSet::new();
    paths.retain(|path| seen.insert(fs::canonicalize(path).unwrap_or_else(|_| path.clone())));
    let files = paths.into_iter().map(|path| {
        let text = read_text(&path);
        (path, text)
    });
    parse_files(files, problems)
}

fn collect_files(dir: &Path, recursive: bool, paths: &mut Vec<PathBuf>, problems: &mut Vec<Problem>) {
    let mut files = Vec::new();
    let mut subdirs = Vec::new();
    match fs::read_dir(dir) {
        Err(error) => problems.push(Problem::new(dir, 0, read_dir_error(error))),
        Ok(entries) => {
            for entry in entries {
                match entry {
                    Err(error) => problems.push(Problem::new(dir, 0, read_dir_error(error))),
                    Ok(entry) => {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        let path = entry.path();
                        if name.starts_with('.') {
                            continue;
                        }
                        // `file_type` does not follow links: a linked directory could loop back on itself.
                        let is_real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                        if name.ends_with(".sql") && path.is_file() {
                            files.push((name, path));
                        } else if recursive && is_real_dir {
                            subdirs.push((name, path));
                        }
                    }
                }
            }
        }
    }
    files.sort();
    subdirs.sort();
    paths.extend(files.into_iter().map(|(_, path)| path));
    for (_, subdir) in subdirs {
        collect_files(&subdir, recursive, paths, problems);
    }
}

/// Parse named revision texts in the order given, adding to `problems` every problem of every file and one per
/// revision id defined twice (at the later file, naming the earlier one). A text that could not be read
/// comes as the line and kind of its problem.
pub(crate) fn parse_files(
    files: impl IntoIterator<Item = (PathBuf, Result<String, (usize, ProblemKind)>)>,
    mut problems: Vec<Problem>,
) -> Result<Vec<Script>, ScriptError> {
    let mut scripts = Vec::new();
    let mut first_seen: HashMap<RevisionId, (PathBuf, usize)> = HashMap::new();
    for (path, text) in files {
        let text = match text {
            Ok(text) => text,
            Err((line, kind)) => {
                problems.push(Problem::new(&path, line, kind));
                continue;
            }
        };
        match parse_script(&path, &text) {
            Err(e) => problems.extend(e.problems),
            Ok(script) => {
                let line = script.header_lines.revision;
                if let Some((other_path, other_line)) = first_seen.get(&script.meta.id) {
                    let kind = ProblemKind::DuplicateRevision {
                        id: script.meta.id.clone(),
                        other_path: other_path.clone(),
                        other_line: *other_line,
                    };
                    problems.push(Problem::new(&path, line, kind));
                } else {
                    first_seen.insert(script.meta.id.clone(), (path.clone(), line));
                }
                scripts.push(script);
            }
        }
    }
    if problems.is_empty() {
        Ok(scripts)
    } else {
        Err(ScriptError { problems })
    }
}

fn read_dir_error(error: std::io::Error) -> ProblemKind {
    ProblemKind::ReadDir { error: Arc::new(error) }
}

/// The file's text, or the line and kind of the problem reading it.
fn read_text(path: &Path) -> Result<String, (usize, ProblemKind)> {
    let bytes = fs::read(path).map_err(|error| {
        let error = Arc::new(error);
        (0, ProblemKind::ReadFile { error })
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        (1 + valid.iter().filter(|&&c| c == b'\n').count(), ProblemKind::NotUtf8)
    })
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;

    use super::*;
    use crate::script::{render_file_name, slugify, FileNameParts, MINUTE_FILE_TEMPLATE};

    fn revision(id: &str, down: &str) -> String {
        format!("-- revision: {id}\n-- down_revision: {down}\n\n-- flotilla:upgrade\nSELECT 1;\n")
    }

    /// Writes `files` into a temporary directory, loads it, and compares `(file name, line, message)` of
    /// every problem, or the loaded ids when `expected` is empty.
    fn check(files: &[(&str, &[u8])], expected_ids: &[&str], expected_problems: &[(&str, usize, &str)]) {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let path = dir.path().join(name);
            if name.ends_with('/') {
                fs::create_dir(&path).unwrap();
            } else {
                fs::write(&path, content).unwrap();
            }
        }
        match load_dir(dir.path()) {
            Ok(scripts) => {
                let ids: Vec<&str> = scripts.iter().map(|s| s.meta.id.as_str()).collect();
                assert_eq!(ids, expected_ids);
                assert!(expected_problems.is_empty(), "expected problems, got none");
            }
            Err(e) => {
                let got: Vec<(String, usize, String)> = e
                    .problems
                    .iter()
                    .map(|p| {
                        let name = p.path.strip_prefix(dir.path()).unwrap().display().to_string();
                        (
                            name,
                            p.line,
                            p.message.replace(&dir.path().display().to_string(), "DIR"),
                        )
                    })
                    .collect();
                let expected: Vec<(String, usize, String)> = expected_problems
                    .iter()
                    .map(|(f, l, m)| (f.to_string(), *l, m.to_string()))
                    .collect();
                assert_eq!(got, expected);
            }
        }
    }

    #[test]
    fn loads_sorted_and_ignores_other_files() {
        let (a, b) = (revision("aaa", ""), revision("bbb", "aaa"));
        check(
            &[
                ("2_b.sql", b.as_bytes()),
                ("1_a.sql", a.as_bytes()),
                (".hidden.sql", b"garbage"),
                ("notes.txt", b"garbage"),
                ("README.md", b"garbage"),
                ("sub.sql/", b""),
            ],
            &["aaa", "bbb"],
            &[],
        );
        check(&[], &[], &[]);
    }

    #[test]
    fn duplicate_ids_name_both_files() {
        let (a, a2) = (revision("aaa", ""), format!("-- note\n{}", revision("aaa", "")));
        check(
            &[("1_a.sql", a.as_bytes()), ("2_a.sql", a2.as_bytes())],
            &[],
            &[(
                "2_a.sql",
                2,
                "duplicate revision id `aaa`, also defined at DIR/1_a.sql:1",
            )],
        );
    }

    #[test]
    fn collects_problems_across_files() {
        let good = revision("aaa", "");
        check(
            &[
                ("1.sql", b"-- revision: x\n-- colour: red\n-- flotilla:upgrade\n"),
                ("2.sql", good.as_bytes()),
                ("3.sql", b"-- revision: y\n-- flotilla:upgrade\nSELECT '\xff';\n"),
                ("4.sql", b"SELECT 1;\n"),
            ],
            &[],
            &[
                ("1.sql", 2, "unknown header key `colour` (known keys: revision, down_revision, branch_labels, depends_on, message, create_date, transaction; a comment in the header must not look like `-- word: ...`, write `-- word - ...`)"),
                ("3.sql", 3, "revision file is not valid UTF-8"),
                ("4.sql", 1, "SQL before the `-- flotilla:upgrade` marker; the header holds only `-- key: value` comment lines"),
                ("4.sql", 1, "missing `-- revision: <id>` header"),
                ("4.sql", 1, "missing `-- flotilla:upgrade` section marker"),
            ],
        );
    }

    #[test]
    fn several_locations_and_recursive_search() {
        let root = tempfile::tempdir().unwrap();
        let (one, two) = (root.path().join("one"), root.path().join("two"));
        for (dir, files) in [
            (
                &one,
                vec![
                    ("1_a.sql", revision("aaa", "")),
                    ("sub/2_c.sql", revision("ccc", "bbb")),
                ],
            ),
            (
                &two,
                vec![
                    ("1_b.sql", revision("bbb", "aaa")),
                    (".hidden/x.sql", revision("zzz", "")),
                ],
            ),
        ] {
            for (name, text) in files {
                let path = dir.join(name);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
        }
        let ids = |recursive| {
            let locations = Locations {
                dirs: vec![one.clone(), two.clone()],
                recursive,
            };
            let scripts = load_locations(&locations).unwrap_or_else(|e| panic!("{e}"));
            scripts.iter().map(|s| s.meta.id.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(ids(false), ["aaa", "bbb"]);
        assert_eq!(ids(true), ["aaa", "ccc", "bbb"]);

        // Overlapping locations and a link back up read each file once, and do not loop.
        std::os::unix::fs::symlink(&one, one.join("sub/loop")).unwrap();
        let overlapping = Locations {
            dirs: vec![one.clone(), one.join("sub"), two.clone(), one.clone()],
            recursive: true,
        };
        let scripts = load_locations(&overlapping).unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<_> = scripts.iter().map(|s| s.meta.id.to_string()).collect();
        assert_eq!(ids, ["aaa", "ccc", "bbb"]);

        // One id in two locations is a duplicate naming both files.
        fs::write(two.join("3_a.sql"), revision("aaa", "")).unwrap();
        let error = load_locations(&Locations {
            dirs: vec![one.clone(), two.clone()],
            recursive: false,
        })
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("3_a.sql:1: duplicate revision id `aaa`"), "{text}");
        assert!(text.contains("one/1_a.sql:1"), "{text}");
    }

    #[test]
    fn missing_dir_is_a_problem_at_line_zero() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = load_dir(&missing).unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].line, 0);
        assert_eq!(e.problems[0].path, missing);
        assert!(e
            .to_string()
            .starts_with(&format!("{}: cannot read revision directory: ", missing.display())));
    }

    #[test]
    fn example_migrations_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let scripts = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        assert!(scripts.len() >= 7, "{} revisions", scripts.len());
        let roots = scripts.iter().filter(|s| s.meta.down_revisions.is_empty()).count();
        assert_eq!(roots, 1);
        let merges = scripts.iter().filter(|s| s.meta.down_revisions.len() == 2).count();
        assert_eq!(merges, 1);
        let is_branch_point = |s: &Script| {
            scripts
                .iter()
                .filter(|c| c.meta.down_revisions.contains(&s.meta.id))
                .count()
                == 2
        };
        assert_eq!(scripts.iter().filter(|s| is_branch_point(s)).count(), 1);
        let audit: Vec<&Script> = scripts.iter().filter(|s| s.meta.branch_labels == ["audit"]).collect();
        assert_eq!(audit.len(), 1);
        assert!(audit[0]
            .upgrade
            .statements
            .iter()
            .any(|s| s.sql.contains("$body$") && s.sql.contains("LANGUAGE plpgsql")));
        let no_tx: Vec<&Script> = scripts.iter().filter(|s| !s.is_transactional).collect();
        assert_eq!(no_tx.len(), 1);
        assert!(no_tx[0]
            .upgrade
            .statements
            .iter()
            .all(|s| s.sql.starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS")));
        assert!(no_tx[0]
            .downgrade
            .statements
            .iter()
            .all(|s| s.sql.starts_with("DROP INDEX CONCURRENTLY IF EXISTS")));
        for script in &scripts {
            let name = script.path.file_name().unwrap().to_string_lossy();
            let create_date = script.create_date.as_deref().unwrap();
            let parts = FileNameParts {
                rev: script.meta.id.to_string(),
                slug: slugify(&script.meta.message),
                date: NaiveDateTime::parse_from_str(create_date, "%Y-%m-%d %H:%M:%S%.f").unwrap(),
            };
            // Named with Alembic's minute template before the default gained seconds; flotilla.toml pins it.
            assert_eq!(render_file_name(MINUTE_FILE_TEMPLATE, &parts).unwrap(), name);
            assert!(name.starts_with("2026"), "{name}");
            assert!(!script.downgrade.statements.is_empty() || !script.upgrade.statements.is_empty());
            assert_eq!(
                script.upgrade.statements.is_empty(),
                script.downgrade.statements.is_empty(),
                "{name}"
            );
            for statement in script.upgrade.statements.iter().chain(&script.downgrade.statements) {
                let sql = statement.sql.to_ascii_uppercase();
                for forbidden in ["CREATE SCHEMA", "CREATE EXTENSION", "PUBLIC."] {
                    assert!(!sql.contains(forbidden), "{name}:{}: {forbidden}", statement.line);
                }
            }
        }
    }
}
