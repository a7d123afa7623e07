//! Reading another tool's migration directory into [`SourceRevision`]s, in that tool's version order.
//!
//! One reader per plain-SQL layout (sqlx, diesel, Flyway, golang-migrate, dbmate), each following the tool's
//! documented file naming. Only files are read here; deciding transactions is `sql.rs`, writing is `write.rs`.
//! Every problem is collected with its path (and line when it has one) before anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{ImportError, SourceProblem};
use super::format::SourceFormat;

/// The SQL of one direction, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlText {
    pub path: PathBuf,
    /// 1-based line of `path` where `text` starts; 0 when the tool rendered `text` from `path` (Alembic), so
    /// lines of `text` are not lines of `path`.
    pub first_line: usize,
    pub text: String,
}

/// One revision of the other tool, before it becomes a Flotilla file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRevision {
    /// The version as the tool records it in its bookkeeping table.
    pub version: String,
    pub message: String,
    pub up: SqlText,
    pub down: Option<SqlText>,
    /// False when the tool's own marker says the revision runs outside a transaction.
    pub is_transactional: bool,
    /// Why the revision is no-transaction or otherwise worth knowing, for the header and the report.
    pub notes: Vec<String>,
    /// What the import could not carry over faithfully (the revision is still written, marked).
    pub flags: Vec<String>,
    /// The graph, when the tool has one (Alembic); `None` makes the revisions one line in the order given.
    pub graph: Option<SourceGraph>,
}

/// A revision's place in a tool's own graph (Alembic).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceGraph {
    pub down_revisions: Vec<String>,
    pub branch_labels: Vec<String>,
    pub depends_on: Vec<String>,
}

/// A file the import did not turn into a revision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
    /// True for what the tool would run but Flotilla cannot import (Flyway repeatables, callbacks); false for
    /// files the tool itself ignores.
    pub is_unsupported: bool,
}

/// What a directory holds.
#[derive(Debug, Default)]
pub struct SourceSet {
    pub revisions: Vec<SourceRevision>,
    pub skipped: Vec<Skipped>,
    /// Problems found while reading; [`super::plan`] reports them with its own, and writes nothing.
    pub problems: Vec<SourceProblem>,
}

/// How a tool orders its versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum OrderKey {
    Number(Vec<u128>),
    Text(String),
}

struct Entry {
    key: OrderKey,
    revision: SourceRevision,
}

/// Read `dir` as `format` lays it out. Alembic is read by `alembic.rs`, not here.
pub fn read_dir(format: SourceFormat, dir: &Path) -> Result<SourceSet, ImportError> {
    if !dir.is_dir() {
        return Err(ImportError::NotADirectory(dir.to_path_buf()));
    }
    let mut problems = Vec::new();
    let mut skipped = Vec::new();
    let entries = match format {
        SourceFormat::Sqlx => sqlx(dir, &mut problems, &mut skipped)?,
        SourceFormat::Diesel => diesel(dir, &mut problems, &mut skipped)?,
        SourceFormat::Flyway => flyway(dir, &mut problems, &mut skipped)?,
        SourceFormat::GolangMigrate => golang_migrate(dir, &mut problems, &mut skipped)?,
        SourceFormat::Dbmate => dbmate(dir, &mut problems, &mut skipped)?,
        SourceFormat::Alembic => unreachable!("alembic projects are read by running alembic"),
    };
    let mut entries = entries;
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    for pair in entries.windows(2) {
        if pair[0].key == pair[1].key {
            problems.push(SourceProblem::file(
                &pair[1].revision.up.path,
                format!(
                    "version {} is used twice (also by {})",
                    pair[1].revision.version,
                    pair[0].revision.up.path.display()
                ),
            ));
        }
    }
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(SourceSet {
        revisions: entries.into_iter().map(|e| e.revision).collect(),
        skipped,
        problems,
    })
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let read = std::fs::read_dir(dir).map_err(|e| ImportError::read(dir, e))?;
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| ImportError::read(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Every file under `dir`, recursively (Flyway scans its locations recursively).
fn list_recursive(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let mut out = Vec::new();
    for path in list(dir)? {
        if path.is_dir() {
            out.extend(list_recursive(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String, ImportError> {
    let bytes = std::fs::read(path).map_err(|e| ImportError::read(path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ImportError::Malformed(vec![SourceProblem::file(
            path,
            "the file is not UTF-8 text".to_string(),
        )])
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text).replace("\r\n", "\n");
    Ok(text)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn words(name: &str) -> String {
    name.replace('_', " ").trim().to_string()
}

fn ignored(path: PathBuf, reason: &str) -> Skipped {
    Skipped {
        path,
        reason: reason.to_string(),
        is_unsupported: false,
    }
}

fn digits_number(text: &str) -> Option<u128> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn revision(version: String, message: String, up: SqlText, down: Option<SqlText>) -> SourceRevision {
    SourceRevision {
        version,
        message,
        up,
        down,
        is_transactional: true,
        notes: Vec::new(),
        flags: Vec::new(),
        graph: None,
    }
}

fn whole(path: &Path) -> Result<SqlText, ImportError> {
    Ok(SqlText {
        path: path.to_path_buf(),
        first_line: 1,
        text: read_text(path)?,
    })
}

/// sqlx: `<VERSION>_<DESCRIPTION>.sql`, or `.up.sql` with `.down.sql`; the version is an i64 (leading zeros
/// dropped), the description has `_` for spaces, and a file starting with `-- no-transaction` runs outside a
/// transaction.
fn sqlx(dir: &Path, problems: &mut Vec<SourceProblem>, skipped: &mut Vec<Skipped>) -> Result<Vec<Entry>, ImportError> {
    // By version: (description, up, down).
    let mut found: BTreeMap<i64, (String, Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    for path in list(dir)? {
        let name = file_name(&path);
        if path.is_dir() || !name.ends_with(".sql") {
            skipped.push(ignored(
                path,
                "not a sqlx migration file (`<VERSION>_<DESCRIPTION>.sql`)",
            ));
            continue;
        }
        let (stem, kind) = if let Some(stem) = name.strip_suffix(".up.sql") {
            (stem, Some(true))
        } else if let Some(stem) = name.strip_suffix(".down.sql") {
            (stem, Some(false))
        } else {
            (name.strip_suffix(".sql").unwrap_or(&name), None)
        };
        let Some((version, description)) = stem.split_once('_') else {
            problems.push(SourceProblem::file(
                &path,
                "expected `<VERSION>_<DESCRIPTION>.sql`".to_string(),
            ));
            continue;
        };
        let Some(version) = digits_number(version).and_then(|v| i64::try_from(v).ok()) else {
            problems.push(SourceProblem::file(
                &path,
                format!("`{version}` is not a sqlx version (a number that fits in 64 bits)"),
            ));
            continue;
        };
        let slot = found.entry(version).or_insert_with(|| (words(description), None, None));
        let target = if kind == Some(false) { &mut slot.2 } else { &mut slot.1 };
        if let Some(other) = target.replace(path.clone()) {
            problems.push(SourceProblem::file(
                &path,
                format!("version {version} is used twice (also by {})", other.display()),
            ));
        }
    }
    let mut out = Vec::new();
    for (version, (description, up, down)) in found {
        let Some(up) = up else {
            let path = down.unwrap_or_default();
            problems.push(SourceProblem::file(
                &path,
                "a `.down.sql` without its `.up.sql`".to_string(),
            ));
            continue;
        };
        let up = whole(&up)?;
        let down = down.as_deref().map(whole).transpose()?;
        let mut rev = revision(version.to_string(), description, up, down);
        for (text, which) in [(Some(&rev.up), "up"), (rev.down.as_ref(), "down")] {
            if text.is_some_and(|t| t.text.starts_with("-- no-transaction")) {
                rev.is_transactional = false;
                rev.notes.push(format!(
                    "sqlx ran it outside a transaction (`-- no-transaction` in its {which} file)"
                ));
            }
        }
        out.push(Entry {
            key: OrderKey::Number(vec![version as u128]),
            revision: rev,
        });
    }
    Ok(out)
}

/// diesel: a directory `<VERSION>_<NAME>` per revision with `up.sql` (required), `down.sql` and
/// `metadata.toml` (`run_in_transaction = false`); the version is the part before the first `_` without `-`.
fn diesel(
    dir: &Path,
    problems: &mut Vec<SourceProblem>,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Entry>, ImportError> {
    let mut out = Vec::new();
    for path in list(dir)? {
        if !path.is_dir() {
            skipped.push(ignored(path, "not a diesel migration directory"));
            continue;
        }
        let name = file_name(&path);
        let up_path = path.join("up.sql");
        if !up_path.is_file() {
            problems.push(SourceProblem::file(
                &path,
                "a diesel migration directory without `up.sql`".to_string(),
            ));
            continue;
        }
        let (version, rest) = name.split_once('_').unwrap_or((&name, ""));
        let version = version.replace('-', "");
        if version.is_empty() {
            problems.push(SourceProblem::file(
                &path,
                "the directory name has no version before `_`".to_string(),
            ));
            continue;
        }
        let down_path = path.join("down.sql");
        let down = if down_path.is_file() {
            Some(whole(&down_path)?)
        } else {
            None
        };
        let mut rev = revision(version.clone(), words(rest), whole(&up_path)?, down);
        let metadata = path.join("metadata.toml");
        if metadata.is_file() {
            let text = read_text(&metadata)?;
            match toml::from_str::<toml::Table>(&text) {
                Ok(table) => match table.get("run_in_transaction") {
                    Some(toml::Value::Boolean(false)) => {
                        rev.is_transactional = false;
                        rev.notes
                            .push("diesel ran it outside a transaction (`run_in_transaction = false`)".to_string());
                    }
                    Some(toml::Value::Boolean(true)) | None => {}
                    Some(other) => problems.push(SourceProblem::file(
                        &metadata,
                        format!("`run_in_transaction` must be true or false, not {other}"),
                    )),
                },
                Err(e) => problems.push(SourceProblem {
                    path: metadata.clone(),
                    line: e.span().map(|s| text[..s.start].matches('\n').count() + 1),
                    message: format!("invalid TOML: {}", e.message()),
                }),
            }
        }
        out.push(Entry {
            key: OrderKey::Text(version),
            revision: rev,
        });
    }
    Ok(out)
}

/// Flyway's version: parts separated by `.` or `_`, compared as numbers with trailing zeros ignored.
pub fn flyway_version_key(version: &str) -> Option<Vec<u128>> {
    let mut parts = version
        .split(['.', '_'])
        .map(digits_number)
        .collect::<Option<Vec<u128>>>()?;
    while parts.len() > 1 && parts.last() == Some(&0) {
        parts.pop();
    }
    Some(parts)
}

/// Flyway: `V<VERSION>__<DESCRIPTION>.sql` (versioned), `U<VERSION>__<DESCRIPTION>.sql` (undo, the downgrade),
/// `R__<DESCRIPTION>.sql` (repeatable: not supported), scanned recursively; `<file>.conf` with
/// `executeInTransaction=false` runs outside a transaction.
fn flyway(
    dir: &Path,
    problems: &mut Vec<SourceProblem>,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Entry>, ImportError> {
    let mut versioned: BTreeMap<Vec<u128>, (String, String, PathBuf)> = BTreeMap::new();
    let mut undo: BTreeMap<Vec<u128>, PathBuf> = BTreeMap::new();
    for path in list_recursive(dir)? {
        let name = file_name(&path);
        let Some(stem) = name.strip_suffix(".sql") else {
            if !name.ends_with(".sql.conf") {
                skipped.push(ignored(path, "not a Flyway SQL migration"));
            }
            continue;
        };
        if stem.starts_with("R__") {
            skipped.push(Skipped {
                path,
                reason: "Flyway repeatable migrations are not supported: add their SQL as a new revision".into(),
                is_unsupported: true,
            });
            continue;
        }
        let (prefix, rest) = stem.split_at(stem.chars().next().map_or(0, char::len_utf8));
        let parsed = rest.split_once("__");
        let (version, description) = match (prefix, parsed) {
            ("V" | "U", Some((v, d))) => (v, d),
            _ => {
                skipped.push(Skipped {
                    path,
                    reason: "not a versioned (`V`) or undo (`U`) migration: Flyway callbacks and other scripts are \
                             not imported"
                        .into(),
                    is_unsupported: true,
                });
                continue;
            }
        };
        let Some(key) = flyway_version_key(version) else {
            problems.push(SourceProblem::file(
                &path,
                format!("`{version}` is not a Flyway version (numbers separated by `.` or `_`)"),
            ));
            continue;
        };
        let other = if prefix == "V" {
            versioned
                .insert(key, (version.replace('_', "."), words(description), path.clone()))
                .map(|(_, _, p)| p)
        } else {
            undo.insert(key, path.clone())
        };
        if let Some(other) = other {
            problems.push(SourceProblem::file(
                &path,
                format!("version {version} is used twice (also by {})", other.display()),
            ));
        }
    }
    for (key, path) in &undo {
        if !versioned.contains_key(key) {
            problems.push(SourceProblem::file(
                path,
                "an undo migration without its versioned migration".into(),
            ));
        }
    }
    let mut out = Vec::new();
    for (key, (version, description, path)) in versioned {
        let down = undo.get(&key).map(|p| whole(p)).transpose()?;
        let mut rev = revision(version, description, whole(&path)?, down);
        let conf = path.with_file_name(format!("{}.conf", file_name(&path)));
        if conf.is_file() {
            let text = read_text(&conf)?;
            let off = text.lines().any(|l| {
                l.split_once('=')
                    .is_some_and(|(k, v)| k.trim() == "executeInTransaction" && v.trim() == "false")
            });
            if off {
                rev.is_transactional = false;
                rev.notes
                    .push("Flyway ran it outside a transaction (`executeInTransaction=false`)".to_string());
            }
        }
        for text in std::iter::once(&rev.up).chain(rev.down.as_ref()) {
            if let Some(line) = text.text.lines().position(|l| l.contains("${")) {
                rev.flags.push(format!(
                    "{}:{}: `${{...}}` may be a Flyway placeholder, which is copied as written",
                    text.path.display(),
                    line + 1
                ));
            }
        }
        out.push(Entry {
            key: OrderKey::Number(key),
            revision: rev,
        });
    }
    Ok(out)
}

/// golang-migrate: `<VERSION>_<TITLE>.up.sql` and `.down.sql`, the version an unsigned number.
fn golang_migrate(
    dir: &Path,
    problems: &mut Vec<SourceProblem>,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Entry>, ImportError> {
    let mut found: BTreeMap<u64, (String, Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    for path in list(dir)? {
        let name = file_name(&path);
        let parsed = name
            .strip_suffix(".up.sql")
            .map(|s| (s, true))
            .or_else(|| name.strip_suffix(".down.sql").map(|s| (s, false)));
        let Some((stem, is_up)) = parsed.filter(|_| path.is_file()) else {
            skipped.push(ignored(
                path,
                "not a golang-migrate SQL file (`<VERSION>_<TITLE>.up.sql`)",
            ));
            continue;
        };
        let (version, title) = stem.split_once('_').unwrap_or((stem, ""));
        let Some(version) = digits_number(version).and_then(|v| u64::try_from(v).ok()) else {
            problems.push(SourceProblem::file(
                &path,
                format!("`{version}` is not a golang-migrate version"),
            ));
            continue;
        };
        let slot = found.entry(version).or_insert_with(|| (words(title), None, None));
        let target = if is_up { &mut slot.1 } else { &mut slot.2 };
        if let Some(other) = target.replace(path.clone()) {
            problems.push(SourceProblem::file(
                &path,
                format!("version {version} is used twice (also by {})", other.display()),
            ));
        }
    }
    let mut out = Vec::new();
    for (version, (title, up, down)) in found {
        let Some(up) = up else {
            problems.push(SourceProblem::file(
                &down.unwrap_or_default(),
                "a `.down.sql` without its `.up.sql`".into(),
            ));
            continue;
        };
        let down = down.as_deref().map(whole).transpose()?;
        out.push(Entry {
            key: OrderKey::Number(vec![version as u128]),
            revision: revision(version.to_string(), title, whole(&up)?, down),
        });
    }
    Ok(out)
}

/// dbmate: `<VERSION>_<NAME>.sql` with `-- migrate:up` and `-- migrate:down` sections (`transaction:false` after
/// a marker runs that section outside a transaction); versions ordered as file names.
fn dbmate(
    dir: &Path,
    problems: &mut Vec<SourceProblem>,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Entry>, ImportError> {
    let mut out = Vec::new();
    for path in list(dir)? {
        let name = file_name(&path);
        let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
        if !path.is_file() || !name.ends_with(".sql") || digits.is_empty() {
            skipped.push(ignored(path, "not a dbmate migration (`<VERSION>_<NAME>.sql`)"));
            continue;
        }
        let rest = name[digits.len()..].trim_end_matches(".sql").trim_start_matches('_');
        let text = read_text(&path)?;
        match dbmate_sections(&path, &text) {
            Ok((up, down, notes)) => {
                let mut rev = revision(digits.clone(), words(rest), up, down);
                if !notes.is_empty() {
                    rev.is_transactional = false;
                    rev.notes = notes;
                }
                out.push(Entry {
                    key: OrderKey::Text(digits),
                    revision: rev,
                });
            }
            Err(problem) => problems.push(problem),
        }
    }
    Ok(out)
}

type Sections = (SqlText, Option<SqlText>, Vec<String>);

fn dbmate_sections(path: &Path, text: &str) -> Result<Sections, SourceProblem> {
    // (line index, is_up, options)
    let mut markers: Vec<(usize, bool, &str)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_end();
        for (marker, is_up) in [("-- migrate:up", true), ("-- migrate:down", false)] {
            if let Some(options) = trimmed.strip_prefix(marker) {
                if options.is_empty() || options.starts_with(char::is_whitespace) {
                    if markers.iter().any(|m| m.1 == is_up) {
                        return Err(SourceProblem::line(path, i + 1, format!("a second `{marker}`")));
                    }
                    markers.push((i, is_up, options.trim()));
                }
            }
        }
    }
    let Some(&(up_at, _, up_options)) = markers.iter().find(|m| m.1) else {
        return Err(SourceProblem::file(path, "no `-- migrate:up` marker".into()));
    };
    let lines: Vec<&str> = text.lines().collect();
    let before = markers.iter().map(|m| m.0).min().unwrap_or(0);
    if let Some(i) = lines[..before].iter().position(|l| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with("--")
    }) {
        return Err(SourceProblem::line(
            path,
            i + 1,
            "SQL before the first `-- migrate:` marker".into(),
        ));
    }
    let section = |start: usize| -> SqlText {
        let end = markers
            .iter()
            .map(|m| m.0)
            .filter(|&m| m > start)
            .min()
            .unwrap_or(lines.len());
        let mut body = lines[start + 1..end].join("\n");
        body.push('\n');
        SqlText {
            path: path.to_path_buf(),
            first_line: start + 2,
            text: body,
        }
    };
    let mut notes = Vec::new();
    let mut check_options = |at: usize, options: &str, which: &str| -> Result<(), SourceProblem> {
        for option in options.split_whitespace() {
            match option {
                "transaction:false" => notes.push(format!(
                    "dbmate ran its {which} section outside a transaction (`transaction:false`)"
                )),
                "transaction:true" => {}
                other => {
                    return Err(SourceProblem::line(
                        path,
                        at + 1,
                        format!("unknown dbmate option `{other}`"),
                    ));
                }
            }
        }
        Ok(())
    };
    check_options(up_at, up_options, "up")?;
    let down = match markers.iter().find(|m| !m.1) {
        Some(&(at, _, options)) => {
            check_options(at, options, "down")?;
            Some(section(at))
        }
        None => None,
    };
    Ok((section(up_at), down, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flyway_versions_compare_as_numbers() {
        assert_eq!(flyway_version_key("1.1"), Some(vec![1, 1]));
        assert_eq!(flyway_version_key("1_10"), Some(vec![1, 10]));
        assert_eq!(flyway_version_key("2.0.0"), Some(vec![2]));
        assert!(flyway_version_key("1.1") < flyway_version_key("1.10"));
        assert_eq!(flyway_version_key("1.a"), None);
        assert_eq!(flyway_version_key(""), None);
    }

    #[test]
    fn dbmate_sections_and_options() {
        let text =
            "-- a comment\n-- migrate:up transaction:false\nCREATE TABLE t ();\n\n-- migrate:down\nDROP TABLE t;\n";
        let (up, down, notes) = dbmate_sections(Path::new("x.sql"), text).expect("parses");
        assert_eq!(up.first_line, 3);
        assert_eq!(up.text, "CREATE TABLE t ();\n\n");
        let down = down.expect("a down section");
        assert_eq!(down.first_line, 6);
        assert_eq!(down.text, "DROP TABLE t;\n");
        assert_eq!(notes.len(), 1);

        let err = dbmate_sections(Path::new("x.sql"), "CREATE TABLE t ();\n-- migrate:up\n").unwrap_err();
        assert_eq!(err.to_string(), "x.sql:1: SQL before the first `-- migrate:` marker");
        let err = dbmate_sections(Path::new("x.sql"), "-- migrate:up bogus\n").unwrap_err();
        assert_eq!(err.to_string(), "x.sql:1: unknown dbmate option `bogus`");
        let err = dbmate_sections(Path::new("x.sql"), "-- migrate:down\n").unwrap_err();
        assert_eq!(err.to_string(), "x.sql: no `-- migrate:up` marker");
    }
}
