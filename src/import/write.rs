//! Turning [`SourceRevision`]s into Flotilla revision files: ids, parents, headers, the check that every file
//! parses and the graph builds, and writing without overwriting anything.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::error::{ImportError, SourceProblem};
use super::format::{revision_id, SourceFormat};
use super::source::{Skipped, SourceSet};
use super::sql::check_transactions;
use crate::revision::RevisionId;
use crate::script::{build_graph, parse_script, slugify};

/// One revision file the import writes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub id: RevisionId,
    /// The version as the other tool records it (kept in the file's header).
    pub version: String,
    pub down_revisions: Vec<RevisionId>,
    pub branch_labels: Vec<String>,
    pub depends_on: Vec<String>,
    pub message: String,
    pub transaction: bool,
    pub notes: Vec<String>,
    pub flags: Vec<String>,
    pub sources: Vec<PathBuf>,
    pub file: PathBuf,
    #[serde(skip)]
    pub text: String,
}

/// The tool the import ran to read the revisions (Alembic), for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolInfo {
    pub python: String,
    pub python_version: String,
    pub alembic_version: String,
}

/// Everything an import writes and reports.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub format: SourceFormat,
    pub from: PathBuf,
    pub into: PathBuf,
    pub revisions: Vec<Imported>,
    pub skipped: Vec<Skipped>,
    pub tool: Option<ToolInfo>,
}

/// The files for `set`, checked: every id valid and distinct, every file parses as a Flotilla revision, and the
/// revisions form a graph. Nothing is written.
pub fn plan(format: SourceFormat, from: &Path, into: &Path, set: SourceSet) -> Result<ImportReport, ImportError> {
    if set.revisions.is_empty() && set.problems.is_empty() {
        return Err(ImportError::Empty(from.to_path_buf()));
    }
    let mut problems = set.problems;
    let mut ids: BTreeMap<RevisionId, PathBuf> = BTreeMap::new();
    let mut revisions = Vec::new();
    let mut previous: Option<RevisionId> = None;
    for (i, mut rev) in set.revisions.into_iter().enumerate() {
        // A file the splitter cannot read is reported once, at its own line, and not parsed again below.
        let is_splittable = match check_transactions(&mut rev) {
            Ok(()) => true,
            Err(p) => {
                problems.push(p);
                false
            }
        };
        let id = match revision_id(&rev.version) {
            Ok(id) => id,
            Err(e) => {
                problems.push(SourceProblem::file(
                    &rev.up.path,
                    format!("version `{}` cannot be a revision id: {e}", rev.version),
                ));
                continue;
            }
        };
        if let Some(other) = ids.insert(id.clone(), rev.up.path.clone()) {
            problems.push(SourceProblem::file(
                &rev.up.path,
                format!(
                    "version `{}` maps to revision id {id}, as does {}",
                    rev.version,
                    other.display()
                ),
            ));
            // Its file would only repeat the problem.
            continue;
        }
        let (down_revisions, branch_labels, depends_on) = match &rev.graph {
            None => (previous.iter().cloned().collect(), Vec::new(), Vec::new()),
            Some(g) => {
                let mut downs = Vec::new();
                for d in &g.down_revisions {
                    match revision_id(d) {
                        Ok(d) => downs.push(d),
                        Err(e) => problems.push(SourceProblem::file(
                            &rev.up.path,
                            format!("down revision `{d}` cannot be a revision id: {e}"),
                        )),
                    }
                }
                (downs, g.branch_labels.clone(), g.depends_on.clone())
            }
        };
        previous = Some(id.clone());
        let slug = slugify(&rev.message);
        let name = if slug.is_empty() {
            format!("{:04}_{id}.sql", i + 1)
        } else {
            format!("{:04}_{id}_{slug}.sql", i + 1)
        };
        let file = into.join(name);
        let mut sources = vec![rev.up.path.clone()];
        if let Some(down) = &rev.down {
            if down.path != rev.up.path {
                sources.push(down.path.clone());
            }
        }
        let mut imported = Imported {
            id,
            version: rev.version,
            down_revisions,
            branch_labels,
            depends_on,
            message: rev.message.lines().next().unwrap_or_default().trim().to_string(),
            transaction: rev.is_transactional,
            notes: rev.notes,
            flags: rev.flags,
            sources,
            file,
            text: String::new(),
        };
        imported.text = render(
            format,
            &imported,
            &rev.up.text,
            rev.down.as_ref().map(|d| d.text.as_str()),
        );
        match parse_script(&imported.file, &imported.text) {
            Ok(script) => revisions.push((imported, script)),
            Err(_) if !is_splittable => {}
            Err(e) => problems.push(SourceProblem::file(
                &rev.up.path,
                format!("the imported revision would not be a valid Flotilla file: {e}"),
            )),
        }
    }
    problems.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    if problems.is_empty() {
        let scripts: Vec<_> = revisions.iter().map(|(_, s)| s.clone()).collect();
        if let Err(e) = build_graph(&scripts) {
            problems.push(SourceProblem::file(
                from,
                format!("the imported revisions do not form a graph: {e}"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ImportError::Malformed(problems));
    }
    Ok(ImportReport {
        format,
        from: from.to_path_buf(),
        into: into.to_path_buf(),
        revisions: revisions.into_iter().map(|(i, _)| i).collect(),
        skipped: set.skipped,
        tool: None,
    })
}

fn section(text: &str) -> String {
    let mut out = text.trim_end_matches([' ', '\t', '\n']).to_string();
    out.push('\n');
    out
}

/// The text of one Flotilla revision file.
pub fn render(format: SourceFormat, rev: &Imported, up: &str, down: Option<&str>) -> String {
    let list = |ids: &[String]| ids.join(", ");
    let mut out = format!("-- revision: {}\n", rev.id);
    let downs: Vec<String> = rev.down_revisions.iter().map(ToString::to_string).collect();
    if !downs.is_empty() {
        out.push_str(&format!("-- down_revision: {}\n", list(&downs)));
    }
    if !rev.branch_labels.is_empty() {
        out.push_str(&format!("-- branch_labels: {}\n", list(&rev.branch_labels)));
    }
    if !rev.depends_on.is_empty() {
        out.push_str(&format!("-- depends_on: {}\n", list(&rev.depends_on)));
    }
    if !rev.message.is_empty() {
        out.push_str(&format!("-- message: {}\n", rev.message));
    }
    if !rev.transaction {
        out.push_str("-- transaction: false\n");
    }
    let sources: Vec<String> = rev
        .sources
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    out.push_str(&format!(
        "-- Imported from {} version {} - {}\n",
        format.name(),
        rev.version,
        sources.join(" + ")
    ));
    for note in &rev.notes {
        out.push_str(&format!("-- Import note - {note}\n"));
    }
    for flag in &rev.flags {
        out.push_str(&format!("-- Import FLAG - {flag}\n"));
    }
    out.push_str("\n-- flotilla:upgrade\n");
    out.push_str(&section(up));
    if let Some(down) = down {
        out.push_str("\n-- flotilla:downgrade\n");
        out.push_str(&section(down));
    }
    out
}

/// Write every planned file, refusing (before writing any) when one exists; a failed write removes the files
/// written before it.
pub fn write(report: &ImportReport) -> Result<(), ImportError> {
    let existing: Vec<PathBuf> = report
        .revisions
        .iter()
        .filter(|r| r.file.exists())
        .map(|r| r.file.clone())
        .collect();
    if !existing.is_empty() {
        return Err(ImportError::Exists(existing));
    }
    std::fs::create_dir_all(&report.into).map_err(|source| ImportError::Write {
        path: report.into.clone(),
        source,
    })?;
    let mut written: Vec<&Path> = Vec::new();
    for rev in &report.revisions {
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&rev.file)
            .and_then(|mut f| f.write_all(rev.text.as_bytes()));
        if let Err(source) = result {
            for path in written {
                let _ = std::fs::remove_file(path);
            }
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(ImportError::Exists(vec![rev.file.clone()]));
            }
            return Err(ImportError::Write {
                path: rev.file.clone(),
                source,
            });
        }
        written.push(&rev.file);
    }
    Ok(())
}

impl ImportReport {
    /// The JSON report, shape version 1 (documented in docs/import.md).
    pub fn to_json(&self) -> serde_json::Value {
        let ids = |pred: &dyn Fn(&Imported) -> bool| -> Vec<&RevisionId> {
            self.revisions.iter().filter(|r| pred(r)).map(|r| &r.id).collect()
        };
        serde_json::json!({
            "v": 1,
            "format": self.format,
            "from": self.from,
            "into": self.into,
            "revisions": self.revisions,
            "merges": ids(&|r| r.down_revisions.len() > 1),
            "no_transaction": ids(&|r| !r.transaction),
            "flagged": ids(&|r| !r.flags.is_empty()),
            "unsupported": self.skipped.iter().filter(|s| s.is_unsupported).collect::<Vec<_>>(),
            "ignored": self.skipped.iter().filter(|s| !s.is_unsupported).collect::<Vec<_>>(),
            "tool": self.tool,
        })
    }

    /// The text report.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "Imported {} revision(s) from {} ({}) into {}\n",
            self.revisions.len(),
            self.format,
            self.from.display(),
            self.into.display()
        );
        if let Some(tool) = &self.tool {
            out.push_str(&format!(
                "Rendered with Alembic {} on {} (Python {})\n",
                tool.alembic_version, tool.python, tool.python_version
            ));
        }
        for r in &self.revisions {
            let file = r
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut marks = Vec::new();
            if r.down_revisions.len() > 1 {
                marks.push("merge");
            }
            if !r.transaction {
                marks.push("no-transaction");
            }
            if !r.flags.is_empty() {
                marks.push("FLAGGED");
            }
            let marks = if marks.is_empty() {
                String::new()
            } else {
                format!(" [{}]", marks.join(", "))
            };
            out.push_str(&format!("  {}  {file}  {}{marks}\n", r.id, r.message));
        }
        let section = |out: &mut String, title: &str, lines: Vec<String>| {
            if !lines.is_empty() {
                out.push_str(&format!("{title}:\n"));
                for line in lines {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        };
        section(
            &mut out,
            "Merges",
            self.revisions
                .iter()
                .filter(|r| r.down_revisions.len() > 1)
                .map(|r| {
                    let downs: Vec<String> = r.down_revisions.iter().map(ToString::to_string).collect();
                    format!("{} merges {}", r.id, downs.join(", "))
                })
                .collect(),
        );
        section(
            &mut out,
            "No-transaction revisions",
            self.revisions
                .iter()
                .filter(|r| !r.transaction)
                .map(|r| format!("{}: {}", r.id, r.notes.join("; ")))
                .collect(),
        );
        section(
            &mut out,
            "Flagged (check these by hand)",
            self.revisions
                .iter()
                .flat_map(|r| r.flags.iter().map(move |f| format!("{}: {f}", r.id)))
                .collect(),
        );
        section(
            &mut out,
            "Not imported (unsupported)",
            self.skipped
                .iter()
                .filter(|s| s.is_unsupported)
                .map(|s| format!("{}: {}", s.path.display(), s.reason))
                .collect(),
        );
        section(
            &mut out,
            "Ignored",
            self.skipped
                .iter()
                .filter(|s| !s.is_unsupported)
                .map(|s| format!("{}: {}", s.path.display(), s.reason))
                .collect(),
        );
        out.push_str(&format!(
            "Next: `flotilla stamp --from {}` records what each database already has (`flotilla fleet stamp --from {}` for a fleet)\n",
            self.format, self.format
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::source::{SourceRevision, SqlText};

    fn rev(version: &str, up: &str) -> SourceRevision {
        SourceRevision {
            version: version.to_string(),
            message: format!("step {version}"),
            up: SqlText {
                path: PathBuf::from(format!("src/{version}.sql")),
                first_line: 1,
                text: up.to_string(),
            },
            down: None,
            is_transactional: true,
            notes: Vec::new(),
            flags: Vec::new(),
            graph: None,
        }
    }

    fn set(revisions: Vec<SourceRevision>) -> SourceSet {
        SourceSet {
            revisions,
            ..SourceSet::default()
        }
    }

    #[test]
    fn revisions_form_a_line_with_mapped_ids_and_notes() {
        let report = plan(
            SourceFormat::Dbmate,
            Path::new("src"),
            Path::new("out"),
            set(vec![
                rev("2024-01", "CREATE TABLE a ();\n"),
                rev("2024-02", "VACUUM a;\n"),
            ]),
        )
        .expect("a valid import");
        let ids: Vec<&str> = report.revisions.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["2024_01", "2024_02"]);
        assert_eq!(report.revisions[1].down_revisions, [RevisionId::new("2024_01")]);
        assert_eq!(report.revisions[1].file, Path::new("out/0002_2024_02_step_2024_02.sql"));
        assert_eq!(
            report.revisions[1].text,
            "-- revision: 2024_02\n-- down_revision: 2024_01\n-- message: step 2024-02\n-- transaction: false\n\
             -- Imported from dbmate version 2024-02 - 2024-02.sql\n-- Import note - src/2024-02.sql:1: VACUUM\n\n\
             -- flotilla:upgrade\nVACUUM a;\n"
        );
        assert!(report.revisions[0].transaction);
        assert_eq!(report.to_json()["no_transaction"], serde_json::json!(["2024_02"]));
    }

    #[test]
    fn versions_mapping_to_one_id_are_refused() {
        let err = plan(
            SourceFormat::Dbmate,
            Path::new("src"),
            Path::new("out"),
            set(vec![rev("1-a", "SELECT 1;"), rev("1_a", "SELECT 2;")]),
        )
        .expect_err("a collision");
        assert_eq!(
            err.to_string(),
            "nothing was imported:\nsrc/1_a.sql: version `1_a` maps to revision id 1_a, as does src/1-a.sql"
        );
    }

    #[test]
    fn sql_flotilla_cannot_read_is_refused_at_its_source() {
        let err = plan(
            SourceFormat::Sqlx,
            Path::new("src"),
            Path::new("out"),
            set(vec![rev(
                "1",
                "SELECT 1;\n-- flotilla:downgrade\nSELECT 2;\n-- flotilla:downgrade\n",
            )]),
        )
        .expect_err("a second downgrade marker");
        assert!(
            err.to_string().starts_with(
                "nothing was imported:\nsrc/1.sql: the imported revision would not be a valid Flotilla file"
            ),
            "{err}"
        );
    }
}
