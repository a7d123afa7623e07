//! Alembic projects: the graph as Alembic's `ScriptDirectory` sees it, and each revision's SQL as Alembic
//! renders it offline (`alembic upgrade DOWN:REV --sql`, `alembic downgrade REV:DOWN --sql`, one run per
//! revision and direction, with the project's own env.py), in the user's Python environment.
//!
//! Alembic's output marks each revision with a `-- Running upgrade A -> B` comment; the chunk after a
//! revision's marker is its SQL, less Alembic's own version-table statements and its transaction framing. A
//! revision whose Python cannot be rendered offline (it reads data, say) becomes a revision that fails when
//! run, flagged in the file and the report; one whose Python asks whether it runs offline or uses the
//! connection is flagged as well, since its offline SQL may differ from what ran online.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ImportError;
use super::format::SourceFormat;
use super::source::{SourceGraph, SourceRevision, SourceSet, SqlText};
use super::write::{plan, ImportReport, ToolInfo};
use crate::script::split_statements;

/// How to run Alembic.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Python interpreter that has the project's Alembic installed.
    pub python: String,
    /// The ini file, relative to the project directory.
    pub ini: PathBuf,
}

/// Prints JSON: Python's and Alembic's versions, and every revision (in Alembic's load order) with its SQL as
/// `alembic upgrade DOWN:REV --sql` and `alembic downgrade REV:DOWN --sql` print it (Alembic's own command
/// functions, in one interpreter so SQLAlchemy is imported once), or the error that stopped Alembic.
const ALEMBIC_SCRIPT: &str = r#"
import contextlib, io, json, platform, sys, traceback
import alembic
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

def as_list(x):
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return list(x)

def render(ini, direction, rev_range):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            getattr(command, direction)(Config(ini), rev_range, sql=True)
    except BaseException as e:
        lines = traceback.format_exception_only(type(e), e)
        return {"error": " ".join(l.strip() for l in lines)}
    return {"sql": out.getvalue()}

ini = sys.argv[1]
directory = ScriptDirectory.from_config(Config(ini))
revisions = []
for sc in directory.walk_revisions("base", "heads"):
    labels = sc._orig_branch_labels if hasattr(sc, "_orig_branch_labels") else sc.branch_labels
    downs = as_list(sc.down_revision)
    start = downs[0] if downs else "base"
    revisions.append({
        "id": sc.revision,
        "down_revisions": downs,
        "branch_labels": sorted(labels or ()),
        "depends_on": as_list(sc.dependencies),
        "doc": (sc.doc or "").strip(),
        "path": sc.path,
        "upgrade": render(ini, "upgrade", start + ":" + sc.revision),
        "downgrade": render(ini, "downgrade", sc.revision + ":" + start),
    })
# Alembic breaks ties between branches by the order it loaded the files (sorted names per version location):
# the revisions are written in that order so Flotilla, reading files in name order, plans as Alembic does.
try:
    seen = []
    for sc in directory.revision_map._revision_map.values():
        if sc is not None and getattr(sc, "revision", None) and sc.revision not in seen:
            seen.append(sc.revision)
    position = {rev: i for i, rev in enumerate(seen)}
    revisions.sort(key=lambda r: position[r["id"]])
except (AttributeError, KeyError):
    revisions.reverse()
print(json.dumps({
    "python": sys.executable,
    "python_version": platform.python_version(),
    "alembic_version": alembic.__version__,
    "revisions": revisions,
}))
"#;

#[derive(Debug, Deserialize)]
struct GraphJson {
    python: String,
    python_version: String,
    alembic_version: String,
    revisions: Vec<RevisionJson>,
}

#[derive(Debug, Deserialize)]
struct RevisionJson {
    id: String,
    down_revisions: Vec<String>,
    branch_labels: Vec<String>,
    depends_on: Vec<String>,
    doc: String,
    path: PathBuf,
    upgrade: Rendered,
    downgrade: Rendered,
}

/// Alembic's offline output for one revision and direction, or why it failed.
#[derive(Debug, Deserialize)]
struct Rendered {
    sql: Option<String>,
    error: Option<String>,
}

impl Rendered {
    fn chunk(&self, direction: &str, revision: &str) -> Result<String, String> {
        match (&self.sql, &self.error) {
            (Some(sql), _) => chunk(sql, direction, revision),
            (None, Some(error)) => Err(error.clone()),
            (None, None) => Err("Alembic printed nothing".into()),
        }
    }
}

/// Run `python ARGS` in `dir`; stdout on success, else the last lines of stderr.
async fn run(python: &str, dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = tokio::process::Command::new(python)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("could not run `{python}`: {e}"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
    Err(format!(
        "`{python} {}` failed ({}): {tail}",
        args.join(" "),
        output.status
    ))
}

/// Import the Alembic project in `from` (the directory of its ini file).
pub async fn import(from: &Path, into: &Path, options: &Options) -> Result<ImportReport, ImportError> {
    if !from.is_dir() {
        return Err(ImportError::NotADirectory(from.to_path_buf()));
    }
    let ini = options.ini.to_string_lossy().into_owned();
    let json = run(&options.python, from, &["-c", ALEMBIC_SCRIPT, &ini])
        .await
        .map_err(|e| ImportError::Tool(format!("running Alembic on {}: {e}", from.display())))?;
    let graph: GraphJson = serde_json::from_str(json.trim()).map_err(|e| {
        ImportError::Tool(format!(
            "unexpected output from Alembic (does env.py print to stdout?): {e}"
        ))
    })?;
    let mut revisions = Vec::new();
    for rev in &graph.revisions {
        let mut flags = python_flags(&rev.path);
        let up = rev.upgrade.chunk("upgrade", &rev.id);
        let down = rev.downgrade.chunk("downgrade", &rev.id);
        let up = up.unwrap_or_else(|e| {
            flags.push(format!(
                "Alembic could not render its upgrade offline, so it fails until written by hand: {e}"
            ));
            unrenderable(&rev.id, "upgrade")
        });
        let down = down.unwrap_or_else(|e| {
            flags.push(format!(
                "Alembic could not render its downgrade offline, so it fails until written by hand: {e}"
            ));
            unrenderable(&rev.id, "downgrade")
        });
        let text = |sql: String| SqlText {
            path: rev.path.clone(),
            first_line: 0,
            text: sql,
        };
        revisions.push(SourceRevision {
            version: rev.id.clone(),
            message: rev.doc.lines().next().unwrap_or_default().to_string(),
            up: text(up),
            down: Some(text(down)),
            is_transactional: true,
            notes: Vec::new(),
            flags,
            graph: Some(SourceGraph {
                down_revisions: rev.down_revisions.clone(),
                branch_labels: rev.branch_labels.clone(),
                depends_on: rev.depends_on.clone(),
            }),
        });
    }
    let set = SourceSet {
        revisions,
        skipped: Vec::new(),
        problems: Vec::new(),
    };
    let mut report = plan(SourceFormat::Alembic, from, into, set)?;
    report.tool = Some(ToolInfo {
        python: graph.python,
        python_version: graph.python_version,
        alembic_version: graph.alembic_version,
    });
    Ok(report)
}

/// Why a revision's Python may render offline SQL other than what it ran online.
fn python_flags(path: &Path) -> Vec<String> {
    let Ok(source) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut flags = Vec::new();
    if source.contains("is_offline_mode") {
        flags.push(
            "its Python checks is_offline_mode(): the SQL rendered offline may differ from what ran online".into(),
        );
    }
    if source.contains("get_bind(") || source.contains("inspect(") {
        flags.push(
            "its Python uses the database connection: the SQL rendered offline may differ from what ran online".into(),
        );
    }
    flags
}

/// SQL that refuses to run, standing in for what Alembic could not render.
fn unrenderable(id: &str, direction: &str) -> String {
    format!(
        "DO $$ BEGIN RAISE EXCEPTION 'revision {id} was imported from Alembic without its {direction} SQL (Alembic \
         could not render it offline): write it by hand, see the Import FLAG lines of its file'; END $$;\n"
    )
}

/// The revision named by a `-- Running upgrade A -> B` or `-- Running downgrade B -> A` line.
fn marker_revision<'a>(line: &'a str, direction: &str) -> Option<&'a str> {
    let rest = line
        .strip_prefix("-- Running ")?
        .strip_prefix(direction)?
        .strip_prefix(' ')?;
    let (before, after) = rest
        .split_once(" -> ")
        .or_else(|| rest.strip_suffix(" ->").map(|b| (b, "")))?;
    Some(if direction == "upgrade" {
        after.trim()
    } else {
        before.trim()
    })
}

fn first_word(sql: &str) -> String {
    sql.split_whitespace().next().unwrap_or_default().to_ascii_uppercase()
}

/// Alembic's own bookkeeping: `INSERT INTO` / `UPDATE` / `DELETE FROM` its version table.
fn is_version_statement(sql: &str) -> bool {
    matches!(first_word(sql).as_str(), "INSERT" | "UPDATE" | "DELETE") && sql.contains("version_num")
}

/// The SQL of `revision` in Alembic's offline output, without Alembic's version-table statements and
/// transaction framing; a revision that commits inside (an autocommit block) keeps Alembic's transactions
/// around its parts.
fn chunk(output: &str, direction: &str, revision: &str) -> Result<String, String> {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|l| marker_revision(l, direction) == Some(revision))
        .ok_or_else(|| format!("Alembic's output has no `-- Running {direction}` line for {revision}"))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("-- Running "))
        .map_or(lines.len(), |i| start + 1 + i);
    let text = lines[start + 1..end].join("\n");
    let mut statements: Vec<String> = split_statements(&text, 1)
        .map_err(|e| format!("cannot split Alembic's SQL into statements: {e}"))?
        .into_iter()
        .map(|s| s.sql)
        .collect();
    // Framing comes after the revision's version statement: a COMMIT closing the run (or the revision), and
    // with transaction_per_migration the BEGIN of the next revision.
    if statements.last().is_some_and(|s| first_word(s) == "BEGIN") {
        statements.pop();
    }
    if statements.last().is_some_and(|s| first_word(s) == "COMMIT") {
        statements.pop();
    }
    statements.retain(|s| !is_version_statement(s));
    let has_own_control = statements
        .iter()
        .any(|s| matches!(first_word(s).as_str(), "BEGIN" | "COMMIT" | "ROLLBACK" | "END"));
    if has_own_control {
        statements.insert(0, "BEGIN".to_string());
        statements.push("COMMIT".to_string());
    }
    Ok(statements
        .iter()
        .map(|s| format!("{s};\n"))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "BEGIN;\n\nCREATE TABLE alembic_version (\n    version_num VARCHAR(32) NOT NULL\n);\n\n\
        -- Running upgrade  -> a1\n\nCREATE TABLE account (id int);\n\n\
        INSERT INTO alembic_version (version_num) VALUES ('a1') RETURNING alembic_version.version_num;\n\n\
        -- Running upgrade a1 -> e5\n\nCOMMIT;\n\nCREATE INDEX CONCURRENTLY ix ON account (id);\n\nBEGIN;\n\n\
        UPDATE alembic_version SET version_num='e5' WHERE alembic_version.version_num = 'a1';\n\n\
        -- Running upgrade e5, f6 -> g7\n\nCREATE VIEW v AS SELECT 1;\n\n\
        UPDATE alembic_version SET version_num='g7' WHERE alembic_version.version_num = 'e5';\n\nCOMMIT;\n";

    #[test]
    fn chunks_lose_alembics_bookkeeping_and_framing() {
        assert_eq!(
            chunk(OUTPUT, "upgrade", "a1").as_deref(),
            Ok("CREATE TABLE account (id int);\n")
        );
        assert_eq!(
            chunk(OUTPUT, "upgrade", "g7").as_deref(),
            Ok("CREATE VIEW v AS SELECT 1;\n")
        );
        assert_eq!(
            chunk(OUTPUT, "upgrade", "e5").as_deref(),
            Ok("BEGIN;\n\nCOMMIT;\n\nCREATE INDEX CONCURRENTLY ix ON account (id);\n\nBEGIN;\n\nCOMMIT;\n")
        );
        assert!(chunk(OUTPUT, "upgrade", "zz").is_err());
    }

    #[test]
    fn markers_name_the_revision_that_runs() {
        assert_eq!(marker_revision("-- Running upgrade  -> a1", "upgrade"), Some("a1"));
        assert_eq!(
            marker_revision("-- Running upgrade e5, f6 -> g7", "upgrade"),
            Some("g7")
        );
        assert_eq!(
            marker_revision("-- Running downgrade g7 -> e5, f6", "downgrade"),
            Some("g7")
        );
        assert_eq!(marker_revision("-- Running downgrade a1 -> ", "downgrade"), Some("a1"));
        assert_eq!(marker_revision("-- Running upgrade a1 -> b2", "downgrade"), None);
    }
}
