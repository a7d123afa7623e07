//! One revision file: its `-- key: value` header and its `-- flotilla:<name>` sections.
//!
//! The format is documented for users in `docs/revision-format.md`. This file checks a single file; checks
//! across files (duplicate ids) live in `load`, and checks across the graph (unknown parents, cycles) in
//! `graph`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::revision::{RevisionId, RevisionMeta, MAX_NAME_CHARS};

use super::checksum::checksum;
use super::phase::{BackfillStep, Phase};
use super::problem::{closest, NameError, NameKind, Problem, ProblemKind, ScriptError, HEADER_KEYS, MARKER_NAMES};
use super::split::{split_statements, Statement};
use crate::backfill::{BackfillSpec, BATCH_PLACEHOLDER};

/// One parsed revision file.
#[derive(Debug, Clone)]
pub struct Script {
    pub path: PathBuf,
    pub meta: RevisionMeta,
    /// `create_date` header, verbatim.
    pub create_date: Option<String>,
    /// False when the header carries the no-transaction marker (`-- transaction: false` or `-- no-transaction`).
    pub is_transactional: bool,
    pub upgrade: Section,
    /// Empty (no statements) when the file has no `-- flotilla:downgrade` section.
    pub downgrade: Section,
    /// Where the graph-relevant header lines are, for error messages about them.
    pub header_lines: HeaderLines,
}

/// 1-based file lines of header keys, 0 when the key is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderLines {
    pub revision: usize,
    pub down_revision: usize,
    pub branch_labels: usize,
    pub depends_on: usize,
}

/// The SQL of one direction of a revision.
#[derive(Debug, Clone, Default)]
pub struct Section {
    /// The section's text as in the file, from the line after its marker up to the next marker or the end of
    /// the file, with a byte-order mark removed and CRLF turned into LF. Used for offline SQL and checksums.
    pub text: String,
    /// 1-based line in the file where the section's text starts; 0 for an absent section.
    pub first_line: usize,
    /// Every statement of the section in file order, backfill statements included (with `{{batch}}`).
    pub statements: Vec<Statement>,
    /// The statements grouped into what runs as one unit: schema phases and backfills, in order. Always
    /// alternates `Sql`, `Backfill`, `Sql`, ..., starting and ending with a (possibly empty) `Sql` phase.
    pub phases: Vec<Phase>,
    /// Versioned checksum of the normalised text, `v1:<sha256 hex>`; see [`super::checksum()`].
    pub checksum: String,
}

impl Section {
    /// The section of a file that has no marker for it: no statements, checksum of the empty text.
    pub fn absent() -> Self {
        Section {
            checksum: checksum(""),
            phases: vec![Phase::Sql(Vec::new())],
            ..Section::default()
        }
    }

    /// Whether the section holds a backfill, and so runs phase by phase instead of in one transaction.
    pub fn has_backfill(&self) -> bool {
        self.phases.iter().any(|p| matches!(p, Phase::Backfill(_)))
    }

    pub fn backfills(&self) -> impl Iterator<Item = &BackfillStep> {
        self.phases.iter().filter_map(|p| match p {
            Phase::Backfill(b) => Some(b),
            Phase::Sql(_) => None,
        })
    }
}

impl Script {
    /// False when the upgrade changes data in a backfill that the downgrade cannot undo: the upgrade has a
    /// backfill without `reverse=none` and the downgrade section declares no backfill of its own.
    pub fn is_data_reversible(&self) -> bool {
        self.downgrade.has_backfill() || self.upgrade.backfills().all(|b| b.spec.is_reverse_none)
    }
}

/// The kinds of `-- flotilla:<name>` marker lines. New marker kinds (such as backfill) are added here, in
/// [`MARKER_NAMES`] and in [`MarkerKind::from_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkerKind {
    Upgrade,
    Downgrade,
    /// `-- flotilla:backfill <attributes>`: not a section of its own but a phase inside the enclosing one.
    Backfill,
}

impl MarkerKind {
    fn name(self) -> &'static str {
        match self {
            MarkerKind::Upgrade => "upgrade",
            MarkerKind::Downgrade => "downgrade",
            MarkerKind::Backfill => "backfill",
        }
    }

    fn from_name(name: &str) -> Option<MarkerKind> {
        match name {
            "upgrade" => Some(MarkerKind::Upgrade),
            "downgrade" => Some(MarkerKind::Downgrade),
            "backfill" => Some(MarkerKind::Backfill),
            _ => None,
        }
    }
}

enum Marker {
    /// Not a marker line: SQL, a comment, or a header line.
    None,
    /// A marker line, with the text after the marker (backfill attributes). `fault` is the problem when it is
    /// recognisably this marker but not written exactly (other spacing, case or a typo or two); the line is
    /// reported, then treated as the marker.
    Found {
        kind: MarkerKind,
        attrs: String,
        fault: Option<ProblemKind>,
    },
    Unknown(String),
}

/// A line is a marker candidate when, after optional whitespace and `--` and optional whitespace, it says
/// `flotilla:` followed by a letter, or when it looks like a misspelling of a marker (see [`misspelled_marker`]).
fn parse_marker(line: &str) -> Marker {
    let trimmed = line.trim();
    let Some(rest) = trimmed.strip_prefix("--") else {
        return Marker::None;
    };
    let Some(after) = rest.trim_start().strip_prefix("flotilla:") else {
        return misspelled_marker(trimmed).unwrap_or(Marker::None);
    };
    let name: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return misspelled_marker(trimmed).unwrap_or(Marker::None);
    }
    let Some(kind) = MarkerKind::from_name(&name) else {
        // Written `flotilla:<name>`, the line can only be meant as a marker, whatever follows the name.
        let Some(kind) = close_marker(&format!("flotilla:{}", name.to_lowercase())) else {
            return Marker::Unknown(name);
        };
        let written = &trimmed[..trimmed.len() - after.len() + name.len()];
        return Marker::Found {
            kind,
            attrs: after[name.len()..].trim().to_string(),
            fault: Some(ProblemKind::MisspelledMarker {
                written: written.to_string(),
                name: kind.name(),
            }),
        };
    };
    let exact = format!("-- flotilla:{name}");
    let is_valid = match kind {
        // Attributes follow after whitespace; the line must still start exactly with the marker.
        MarkerKind::Backfill => line
            .strip_prefix(&exact)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace)),
        _ => line.trim_end() == exact,
    };
    let fault = (!is_valid).then(|| ProblemKind::MalformedMarker { name: name.clone() });
    Marker::Found {
        kind,
        attrs: after[name.len()..].trim().to_string(),
        fault,
    }
}

/// A comment line (`trimmed`: without surrounding whitespace) that is not a marker but was most likely meant
/// as one: `-- Flotilla:downgrade`, `-- flotilla: downgrade`, `-- flotilla downgrade`, `-- flotila:downgrade`,
/// `-- flotilla:downgrad`.
///
/// The comment's first two words, lowercased and joined with a colon whatever separated them, must be at most
/// two edits from `flotilla:<name>` for a name in [`MARKER_NAMES`], and nothing but punctuation or backfill
/// attributes (`key=value`) may follow them: prose such as `-- Flotilla upgrades the orders table` and
/// Flotilla's own notes in generated revisions (`-- flotilla: backfill orders.total here ...`) are comments.
fn misspelled_marker(trimmed: &str) -> Option<Marker> {
    let comment = trimmed
        .strip_prefix("--")?
        .trim_start_matches(|c: char| c == '-' || c.is_whitespace());
    let word_end = |text: &str| text.find(|c: char| !c.is_alphanumeric()).unwrap_or(text.len());
    let (first, rest) = comment.split_at(word_end(comment));
    let separator_end = rest
        .find(|c: char| !(c.is_whitespace() || matches!(c, ':' | '_' | '-' | '.')))
        .unwrap_or(rest.len());
    let after_separator = &rest[separator_end..];
    let (second, tail) = after_separator.split_at(word_end(after_separator));
    if first.is_empty() {
        return None;
    }
    let (normalised, tail) = if second.is_empty() {
        (first.to_lowercase(), rest)
    } else {
        (format!("{}:{}", first.to_lowercase(), second.to_lowercase()), tail)
    };
    let kind = close_marker(&normalised)?;
    let is_attributes = kind == MarkerKind::Backfill
        && tail.starts_with(char::is_whitespace)
        && tail.split_whitespace().next().is_some_and(|word| word.contains('='));
    let is_punctuation = !tail.contains(char::is_alphanumeric);
    if !(is_punctuation || is_attributes) {
        return None;
    }
    Some(Marker::Found {
        kind,
        attrs: tail.trim().to_string(),
        fault: Some(ProblemKind::MisspelledMarker {
            written: trimmed[..trimmed.len() - tail.len()].trim_end().to_string(),
            name: kind.name(),
        }),
    })
}

/// The marker whose `flotilla:<name>` is at most two edits from `normalised`.
fn close_marker(normalised: &str) -> Option<MarkerKind> {
    let spelled: Vec<String> = MARKER_NAMES.iter().map(|name| format!("flotilla:{name}")).collect();
    MarkerKind::from_name(MARKER_NAMES[closest(normalised, &spelled)?])
}

/// A marker line: its kind, 1-based line, and byte offsets of the line and of the text after it.
struct MarkerLine {
    kind: MarkerKind,
    /// The text after the marker name (backfill attributes).
    attrs: String,
    line: usize,
    line_start: usize,
    text_start: usize,
}

/// A section as found in the file, before splitting.
struct RawSection {
    marker_line: usize,
    /// Byte range of its text in the normalised file text.
    start: usize,
    end: usize,
}

/// Collects problems for one file.
struct Problems<'a> {
    path: &'a Path,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn push(&mut self, line: usize, kind: ProblemKind) {
        self.list.push(Problem::new(self.path, line, kind));
    }
}

/// Parse one revision file's text; `path` is only used in problems and stored in the result.
///
/// Returns every problem in the file at once: header errors (unknown, duplicate or missing keys, invalid ids
/// and labels, SQL before the first marker), marker errors (unknown, malformed, duplicated, out of order,
/// missing upgrade), unterminated quoted constructs, and transaction control in a transactional revision.
pub fn parse_script(path: &Path, text: &str) -> Result<Script, ScriptError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n");
    let mut problems = Problems { path, list: Vec::new() };

    // Pass 1: find the marker lines; the header is everything before the first one.
    let mut markers: Vec<MarkerLine> = Vec::new();
    let mut offset = 0;
    for (index, line) in text.split('\n').enumerate() {
        let line_no = index + 1;
        let line_start = offset;
        offset = (offset + line.len() + 1).min(text.len());
        let (kind, attrs) = match parse_marker(line) {
            Marker::None => continue,
            Marker::Unknown(name) => {
                problems.push(line_no, ProblemKind::UnknownMarker { name });
                continue;
            }
            Marker::Found { kind, attrs, fault } => {
                if let Some(fault) = fault {
                    problems.push(line_no, fault);
                }
                (kind, attrs)
            }
        };
        markers.push(MarkerLine {
            kind,
            attrs,
            line: line_no,
            line_start,
            text_start: offset,
        });
    }
    let header_end = markers.first().map_or(text.len(), |m| m.line_start);
    let mut upgrade: Option<RawSection> = None;
    let mut downgrade: Option<RawSection> = None;
    let sections: Vec<&MarkerLine> = markers.iter().filter(|m| m.kind != MarkerKind::Backfill).collect();
    if let Some(stray) = markers
        .iter()
        .find(|m| m.kind == MarkerKind::Backfill && sections.first().is_none_or(|s| s.line > m.line))
    {
        problems.push(stray.line, ProblemKind::BackfillOutsideSection);
    }
    for (index, marker) in sections.iter().enumerate() {
        let (kind, line_no) = (marker.kind, marker.line);
        let end = sections.get(index + 1).map_or(text.len(), |m| m.line_start);
        if kind == MarkerKind::Downgrade && upgrade.is_none() {
            problems.push(line_no, ProblemKind::DowngradeBeforeUpgrade);
        }
        let slot = match kind {
            MarkerKind::Upgrade => &mut upgrade,
            MarkerKind::Downgrade => &mut downgrade,
            MarkerKind::Backfill => continue,
        };
        if let Some(first) = slot {
            let (name, first_line) = (kind.name(), first.marker_line);
            problems.push(line_no, ProblemKind::DuplicateSection { name, first_line });
            continue;
        }
        *slot = Some(RawSection {
            marker_line: line_no,
            start: marker.text_start,
            end,
        });
    }

    // Pass 2: the header.
    let header = parse_header(&text[..header_end], &mut problems);

    // Pass 3: the sections.
    if upgrade.is_none() {
        problems.push(1, ProblemKind::MissingUpgrade);
    }
    let mut section = |raw: Option<RawSection>| match raw {
        None => Section::absent(),
        Some(raw) => build_section(&text, &raw, &markers, header.is_transactional, &mut problems),
    };
    let upgrade_section = section(upgrade);
    let downgrade_section = section(downgrade);

    if !problems.list.is_empty() {
        problems.list.sort_by_key(|p| p.line);
        return Err(ScriptError {
            problems: problems.list,
        });
    }
    Ok(Script {
        path: path.to_path_buf(),
        meta: header.meta,
        create_date: header.create_date,
        is_transactional: header.is_transactional,
        upgrade: upgrade_section,
        downgrade: downgrade_section,
        header_lines: header.lines,
    })
}

fn build_section(
    text: &str,
    raw: &RawSection,
    markers: &[MarkerLine],
    is_transactional: bool,
    problems: &mut Problems,
) -> Section {
    let body = &text[raw.start..raw.end];
    let first_line = raw.marker_line + 1;
    // Backfill markers inside this section cut it into phases: the statement right after a marker is the
    // batch statement, and the statements after that form the next schema phase.
    let inner: Vec<&MarkerLine> = markers
        .iter()
        .filter(|m| m.kind == MarkerKind::Backfill && m.line_start >= raw.start && m.line_start < raw.end)
        .collect();
    let mut phases = Vec::new();
    let mut statements = Vec::new();
    let first_end = inner.first().map_or(raw.end, |m| m.line_start);
    let head = split_part(&text[raw.start..first_end], first_line, problems);
    statements.extend(head.iter().cloned());
    phases.push(Phase::Sql(head));
    for (index, marker) in inner.iter().enumerate() {
        let end = inner.get(index + 1).map_or(raw.end, |m| m.line_start);
        let mut part = split_part(&text[marker.text_start..end], marker.line + 1, problems).into_iter();
        statements.extend(part.clone());
        let spec = match BackfillSpec::parse(&marker.attrs) {
            Ok(spec) => Some(spec),
            Err(errors) => {
                for error in errors {
                    problems.push(marker.line, ProblemKind::BackfillSpec { error });
                }
                None
            }
        };
        if !is_transactional {
            problems.push(marker.line, ProblemKind::BackfillInNoTransaction);
        }
        let Some(statement) = part.next() else {
            problems.push(marker.line, ProblemKind::BackfillWithoutStatement);
            continue;
        };
        if !statement.sql.contains(BATCH_PLACEHOLDER) {
            problems.push(statement.line, ProblemKind::BackfillWithoutPlaceholder);
        }
        if let Some(spec) = spec {
            phases.push(Phase::Backfill(BackfillStep {
                spec,
                statement,
                marker_line: marker.line,
            }));
            phases.push(Phase::Sql(part.collect()));
        }
    }
    if is_transactional {
        for statement in &statements {
            if let Some(keyword) = transaction_control_keyword(&statement.sql) {
                problems.push(statement.line, ProblemKind::TransactionControl { keyword });
            }
        }
    }
    Section {
        text: body.to_string(),
        first_line,
        statements,
        phases,
        checksum: checksum(body),
    }
}

fn split_part(text: &str, first_line: usize, problems: &mut Problems) -> Vec<Statement> {
    match split_statements(text, first_line) {
        Ok(statements) => statements,
        Err(e) => {
            problems.push(e.line, ProblemKind::Unterminated { construct: e.construct });
            Vec::new()
        }
    }
}

/// The statement's leading keyword(s) when it begins, ends or aborts a transaction.
fn transaction_control_keyword(sql: &str) -> Option<String> {
    let mut words = sql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty());
    let first = words.next()?.to_ascii_uppercase();
    match first.as_str() {
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" => Some(first),
        "START" if words.next().is_some_and(|w| w.eq_ignore_ascii_case("transaction")) => {
            Some("START TRANSACTION".to_string())
        }
        _ => None,
    }
}

struct Header {
    meta: RevisionMeta,
    create_date: Option<String>,
    is_transactional: bool,
    lines: HeaderLines,
}

/// Parse the text before the first marker.
fn parse_header(header: &str, problems: &mut Problems) -> Header {
    // Anything that is not whitespace or a comment is SQL in the wrong place.
    match split_statements(header, 1) {
        Ok(statements) => {
            for statement in statements {
                problems.push(statement.line, ProblemKind::SqlBeforeMarker);
            }
        }
        Err(e) => problems.push(e.line, ProblemKind::Unterminated { construct: e.construct }),
    }

    let mut fields: HashMap<&'static str, (String, usize)> = HashMap::new();
    for (index, line) in header.split('\n').enumerate() {
        let line_no = index + 1;
        let Some(comment) = line.trim().strip_prefix("--") else {
            continue;
        };
        let comment = comment.trim();
        let (key, value) = if comment == "no-transaction" {
            ("transaction", "false")
        } else if let Some((key, value)) = split_key_value(comment) {
            (key, value)
        } else {
            continue;
        };
        let Some(&known) = HEADER_KEYS.iter().find(|k| **k == key) else {
            let kind = ProblemKind::UnknownHeaderKey {
                key: key.to_string(),
                close: super::problem::close_header_key(key),
            };
            problems.push(line_no, kind);
            continue;
        };
        if let Some((_, first_line)) = fields.get(known) {
            let first_line = *first_line;
            problems.push(
                line_no,
                ProblemKind::DuplicateHeaderKey {
                    key: known.to_string(),
                    first_line,
                },
            );
            continue;
        }
        fields.insert(known, (value.to_string(), line_no));
    }

    let field = |key: &str| fields.get(key).map(|(v, l)| (v.as_str(), *l));
    let line_of = |key: &str| field(key).map_or(0, |(_, l)| l);
    let lines = HeaderLines {
        revision: line_of("revision"),
        down_revision: line_of("down_revision"),
        branch_labels: line_of("branch_labels"),
        depends_on: line_of("depends_on"),
    };

    let id = match field("revision") {
        None => {
            problems.push(1, ProblemKind::MissingRevision);
            RevisionId::default()
        }
        Some((value, line)) => {
            if let Err(reason) = check_name(value) {
                problems.push(line, invalid("revision", NameKind::RevisionId, value, reason));
            }
            RevisionId::new(value)
        }
    };

    let down_revisions: Vec<RevisionId> = match field("down_revision") {
        Some(("None", _)) | None => Vec::new(),
        Some((value, line)) => name_list("down_revision", NameKind::RevisionId, value, line, problems)
            .into_iter()
            .map(RevisionId)
            .collect(),
    };
    let branch_labels = field("branch_labels").map_or_else(Vec::new, |(value, line)| {
        name_list("branch_labels", NameKind::BranchLabel, value, line, problems)
    });
    let depends_on = field("depends_on").map_or_else(Vec::new, |(value, line)| {
        name_list("depends_on", NameKind::Reference, value, line, problems)
    });
    if down_revisions.contains(&id) {
        problems.push(
            lines.down_revision,
            ProblemKind::SelfReference {
                key: "down_revision",
                id: id.clone(),
            },
        );
    }
    if depends_on.contains(&id.0) {
        problems.push(
            lines.depends_on,
            ProblemKind::SelfReference {
                key: "depends_on",
                id: id.clone(),
            },
        );
    }

    let is_transactional = match field("transaction") {
        None => true,
        Some((value, _)) if value.eq_ignore_ascii_case("true") => true,
        Some((value, _)) if value.eq_ignore_ascii_case("false") => false,
        Some((value, line)) => {
            problems.push(
                line,
                ProblemKind::BadTransactionValue {
                    value: value.to_string(),
                },
            );
            true
        }
    };

    Header {
        meta: RevisionMeta {
            id,
            down_revisions,
            branch_labels,
            depends_on,
            message: field("message").map_or_else(String::new, |(v, _)| v.to_string()),
        },
        create_date: field("create_date").map(|(v, _)| v.to_string()),
        is_transactional,
        lines,
    }
}

/// `key: value` where key is a word (letters, digits, `_`, `-`) and the colon is followed by whitespace or
/// nothing, so that `-- see https://example.com` is not taken for a header line.
fn split_key_value(comment: &str) -> Option<(&str, &str)> {
    let key_len = comment
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(comment.len());
    let (key, rest) = comment.split_at(key_len);
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = rest.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with(char::is_whitespace)) {
        return None;
    }
    Some((key, value.trim()))
}

/// A comma-separated list of names; empty means none.
fn name_list(key: &'static str, what: NameKind, value: &str, line: usize, problems: &mut Problems) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    let mut names: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if let Err(reason) = check_name(name) {
            problems.push(line, invalid(key, what, name, reason));
        } else if names.iter().any(|n| n == name) {
            problems.push(
                line,
                ProblemKind::DuplicateListEntry {
                    key,
                    value: name.to_string(),
                },
            );
        } else {
            names.push(name.to_string());
        }
    }
    names
}

fn invalid(key: &'static str, what: NameKind, value: &str, reason: NameError) -> ProblemKind {
    ProblemKind::InvalidName {
        key,
        what,
        value: value.to_string(),
        reason,
    }
}

/// Words that mean something else in a target (`head`, `heads`, `base`) or in `down_revision` (`None`).
const RESERVED_WORDS: &[&str] = &["head", "heads", "base", "none"];

/// Characters Alembic rejects in revision ids because targets use them: `label@rev`, `rev+2`, `-1`,
/// `a:b` ranges in offline mode.
const RESERVED_CHARS: &[char] = &['@', '+', '-', ':'];

/// Rules shared by revision ids, branch labels and `depends_on` entries.
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.contains(char::is_whitespace) {
        return Err(NameError::Whitespace);
    }
    if name.contains(',') {
        return Err(NameError::Comma);
    }
    if let Some(word) = RESERVED_WORDS.iter().find(|w| name.eq_ignore_ascii_case(w)) {
        return Err(NameError::ReservedWord(word.to_string()));
    }
    if let Some(c) = name.chars().find(|c| RESERVED_CHARS.contains(c)) {
        return Err(NameError::ReservedChar(c));
    }
    let n_chars = name.chars().count();
    if n_chars > MAX_NAME_CHARS {
        return Err(NameError::TooLong(n_chars));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "revs/x.sql";

    fn parse(input: &str) -> Result<Script, ScriptError> {
        parse_script(Path::new(PATH), input)
    }

    /// `expected` lists `(line, fragment of the message)` for every problem, in order.
    fn check_problems(input: &str, expected: &[(usize, &str)]) {
        let e = match parse(input) {
            Ok(_) => panic!("expected problems in {input:?}"),
            Err(e) => e,
        };
        let got: Vec<(usize, &str)> = e.problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(got.len(), expected.len(), "{got:#?}");
        for ((line, message), (expected_line, fragment)) in got.iter().zip(expected) {
            assert_eq!(line, expected_line, "{message}");
            assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
        }
        for p in &e.problems {
            assert_eq!(p.path, Path::new(PATH));
        }
    }

    fn check_ok(input: &str) -> Script {
        parse(input).unwrap_or_else(|e| panic!("{e}\nin {input:?}"))
    }

    fn sqls(section: &Section) -> Vec<(usize, &str)> {
        section.statements.iter().map(|s| (s.line, s.sql.as_str())).collect()
    }

    const FULL: &str = "\
-- revision: 3f2a9c1b7d4e
-- down_revision: 1a2b3c4d5e6f
-- branch_labels: billing
-- depends_on: 9c8b7a6d5e4f
-- message: add orders table
-- create_date: 2026-11-27 23:40:00.123456
-- transaction: false

-- flotilla:upgrade
CREATE TABLE orders (id bigserial PRIMARY KEY);

-- flotilla:downgrade
DROP TABLE orders;
";

    #[test]
    fn full_example() {
        let s = check_ok(FULL);
        assert_eq!(s.meta.id, RevisionId::new("3f2a9c1b7d4e"));
        assert_eq!(s.meta.down_revisions, vec![RevisionId::new("1a2b3c4d5e6f")]);
        assert_eq!(s.meta.branch_labels, vec!["billing"]);
        assert_eq!(s.meta.depends_on, vec!["9c8b7a6d5e4f"]);
        assert_eq!(s.meta.message, "add orders table");
        assert_eq!(s.create_date.as_deref(), Some("2026-11-27 23:40:00.123456"));
        assert!(!s.is_transactional);
        assert_eq!(s.upgrade.first_line, 10);
        assert_eq!(s.upgrade.text, "CREATE TABLE orders (id bigserial PRIMARY KEY);\n\n");
        assert_eq!(
            sqls(&s.upgrade),
            vec![(10, "CREATE TABLE orders (id bigserial PRIMARY KEY)")]
        );
        assert_eq!(sqls(&s.downgrade), vec![(13, "DROP TABLE orders")]);
        assert_eq!(
            s.upgrade.checksum,
            checksum("CREATE TABLE orders (id bigserial PRIMARY KEY);")
        );
        assert_eq!(
            s.header_lines,
            HeaderLines {
                revision: 1,
                down_revision: 2,
                branch_labels: 3,
                depends_on: 4
            }
        );
        assert_eq!(s.path, Path::new(PATH));
    }

    #[test]
    fn minimal_and_lists() {
        let s = check_ok("-- revision: a\n-- flotilla:upgrade\n");
        assert!(s.meta.down_revisions.is_empty() && s.is_transactional && s.create_date.is_none());
        assert!(s.upgrade.statements.is_empty() && s.downgrade.statements.is_empty());
        assert_eq!(s.downgrade.checksum, checksum(""));
        assert_eq!(s.downgrade.first_line, 0);
        for root in ["-- down_revision:", "-- down_revision: None", "-- down_revision:   "] {
            let s = check_ok(&format!("-- revision: a\n{root}\n-- flotilla:upgrade\n"));
            assert!(s.meta.down_revisions.is_empty(), "{root}");
        }
        let s = check_ok("-- revision: m\n-- down_revision: a, b ,c\n-- branch_labels: x,y\n-- flotilla:upgrade\n");
        assert_eq!(
            s.meta.down_revisions,
            vec![RevisionId::new("a"), RevisionId::new("b"), RevisionId::new("c")]
        );
        assert_eq!(s.meta.branch_labels, vec!["x", "y"]);
    }

    #[test]
    fn header_comments_and_no_transaction() {
        let s = check_ok(
            "-- Adds the orders table.\n-- see https://example.com/x\n--\n\n-- revision: a\n-- no-transaction\n/* block */\n-- flotilla:upgrade\nBEGIN;\n",
        );
        assert!(!s.is_transactional);
        assert_eq!(sqls(&s.upgrade), vec![(9, "BEGIN")]);
        assert!(check_ok("-- revision: a\n-- transaction: TRUE\n-- flotilla:upgrade\n").is_transactional);
    }

    #[test]
    fn header_errors() {
        check_problems(
            "-- revision: a\n-- colour: red\n-- flotilla:upgrade\n",
            &[(2, "unknown header key `colour`")],
        );
        check_problems(
            "-- revision: a\n-- message: x\n-- message: y\n-- flotilla:upgrade\n",
            &[(3, "duplicate header key `message` (first given on line 2)")],
        );
        check_problems(
            "-- revision: a\n-- transaction: false\n-- no-transaction\n-- flotilla:upgrade\n",
            &[(3, "duplicate header key `transaction`")],
        );
        check_problems(
            "-- message: x\n-- flotilla:upgrade\n",
            &[(1, "missing `-- revision: <id>` header")],
        );
        check_problems(
            "-- revision: a\nCREATE TABLE t ();\n\nDROP TABLE u\n-- flotilla:upgrade\n",
            &[(2, "SQL before the `-- flotilla:upgrade` marker"), (4, "SQL before")],
        );
        check_problems(
            "-- revision: a\n-- transaction: maybe\n-- flotilla:upgrade\n",
            &[(2, "`transaction` must be `true` or `false`, not `maybe`")],
        );
        check_problems(
            "-- revision: a\n-- down_revision: b, b\n-- flotilla:upgrade\n",
            &[(2, "`down_revision` lists `b` twice")],
        );
        check_problems(
            "-- revision: a\n-- down_revision: a\n-- depends_on: a\n-- flotilla:upgrade\n",
            &[
                (2, "revision `a` lists itself in `down_revision`"),
                (3, "lists itself in `depends_on`"),
            ],
        );
        // A quote in a header comment is not SQL.
        assert_eq!(
            check_ok("-- revision: a\n-- message: 'oops\n-- flotilla:upgrade\n")
                .meta
                .message,
            "'oops"
        );
    }

    #[test]
    fn reserved_names() {
        let check = |header: &str, fragment: &str| {
            check_problems(
                &format!("-- revision: ok\n{header}\n-- flotilla:upgrade\n"),
                &[(2, fragment)],
            );
        };
        check("-- revision: head", "duplicate header key");
        for (value, reason) in [
            ("head", "`head` is a reserved word"),
            ("HEADS", "`heads` is a reserved word"),
            ("base", "`base` is a reserved word"),
            ("None", "`none` is a reserved word"),
            ("a@b", "`@` is reserved"),
            ("a+b", "`+` is reserved"),
            ("a-b", "`-` is reserved"),
            ("a:b", "`:` is reserved"),
        ] {
            check_problems(
                &format!("-- revision: {value}\n-- flotilla:upgrade\n"),
                &[(1, &format!("invalid revision id `{value}` in `revision`: {reason}"))],
            );
            check(
                &format!("-- branch_labels: {value}"),
                &format!("invalid branch label `{value}`"),
            );
        }
        check(
            "-- revision2: x",
            "unknown header key `revision2` (did you mean `revision`?)",
        );
        check(
            "-- down_revison: x",
            "unknown header key `down_revison` (did you mean `down_revision`?)",
        );
        check(
            "-- Revises: x",
            "unknown header key `Revises` (did you mean `down_revision`?)",
        );
        check(
            "-- Depends_On: x",
            "unknown header key `Depends_On` (did you mean `depends_on`?)",
        );
        check("-- Note: x", "unknown header key `Note` (known keys: revision, ");
        check(
            "-- Note: x",
            "a comment in the header must not look like `-- word: ...`, write `-- word - ...`)",
        );
        check_problems("-- revision: a b\n-- flotilla:upgrade\n", &[(1, "contains whitespace")]);
        check_problems("-- revision: a,b\n-- flotilla:upgrade\n", &[(1, "contains a comma")]);
        check_problems("-- revision:\n-- flotilla:upgrade\n", &[(1, "it is empty")]);
        check(
            "-- down_revision: a,,b",
            "invalid revision id `` in `down_revision`: it is empty",
        );
        check(
            "-- depends_on: x@head",
            "invalid revision reference `x@head` in `depends_on`",
        );
    }

    #[test]
    fn markers() {
        check_problems(
            "-- revision: a\nSELECT 1;\n",
            &[(1, "missing `-- flotilla:upgrade`"), (2, "SQL before")],
        );
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\n-- flotilla:sideways\n",
            &[(
                3,
                "unknown section marker `-- flotilla:sideways` (known markers: upgrade, downgrade, backfill)",
            )],
        );
        check_problems(
            "-- revision: a\n--flotilla:upgrade\nSELECT 1;\n  -- flotilla:downgrade\n",
            &[
                (2, "must be written exactly `-- flotilla:upgrade`"),
                (4, "exactly `-- flotilla:downgrade`"),
            ],
        );
        check_problems(
            "-- revision: a\n-- flotilla:downgrade\n-- flotilla:upgrade\n",
            &[(
                2,
                "`-- flotilla:downgrade` section before the `-- flotilla:upgrade` section",
            )],
        );
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\nSELECT 1;\n-- flotilla:upgrade\n",
            &[(4, "second `-- flotilla:upgrade` section (the first starts on line 2)")],
        );
        // Trailing whitespace is fine, and a comment that merely mentions flotilla is not a marker.
        let s =
            check_ok("-- revision: a\n-- flotilla:upgrade  \t\n-- flotilla: note\nSELECT 1;\n-- flotilla:downgrade \n");
        assert_eq!(sqls(&s.upgrade), vec![(4, "SELECT 1")]);
        assert_eq!(s.downgrade.first_line, 6);
    }

    /// `line` placed between an upgrade and what would be its downgrade: `Some(name)` when it must be reported
    /// as a misspelling of `-- flotilla:<name>` (and then still start that section), `None` when it is an
    /// ordinary comment that leaves the SQL after it in the upgrade.
    fn check_marker_line(line: &str, expected: Option<&str>) {
        let input = format!("-- revision: a\n-- flotilla:upgrade\nCREATE TABLE t ();\n{line}\nDROP TABLE t;\n");
        match expected {
            Some(name) => {
                // A second upgrade marker would be a problem of its own, so an upgrade goes first.
                let (input, line_no) = match name {
                    "upgrade" => (format!("-- revision: a\n{line}\nCREATE TABLE t ();\n"), 2),
                    _ => (input, 4),
                };
                let written = line.trim();
                check_problems(
                    &input,
                    &[(
                        line_no,
                        &format!("misspelled section marker `{written}` (did you mean `-- flotilla:{name}`?)"),
                    )],
                );
            }
            None => {
                let s = check_ok(&input);
                assert_eq!(
                    sqls(&s.upgrade),
                    vec![(3, "CREATE TABLE t ()"), (5, "DROP TABLE t")],
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn misspelled_markers() {
        for line in [
            "-- flotila:downgrade",
            "-- Flotilla:downgrade",
            "-- FLOTILLA:DOWNGRADE",
            "-- flotilla: downgrade",
            "-- flotilla : downgrade",
            "-- flotilla downgrade",
            "-- flotilla_downgrade",
            "-- flotilladowngrade",
            "--- flotilla:downgrade",
            "-- flotilla:downgrad",
            "-- flotilla:Downgrade",
            "-- flotilla:downgrades",
            "-- flotlla:downgrade",
            "-- floltila:downgrade",
            "  -- Flotilla downgrade  ",
        ] {
            check_marker_line(line, Some("downgrade"));
        }
        check_marker_line("-- flotilla:upgrade2", Some("upgrade"));
        check_marker_line("-- flotilla:upgrade-x", Some("upgrade"));
        check_marker_line("-- flotila:upgrade", Some("upgrade"));
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\n-- flotilla: downgrade.\n",
            &[(3, "misspelled section marker `-- flotilla: downgrade` (did you mean")],
        );
        // Written `flotilla:<name>`, the line can only be meant as a marker, whatever follows.
        check_problems(
            "-- revision: a\n-- flotilla:upgrad this later\n",
            &[(
                2,
                "misspelled section marker `-- flotilla:upgrad` (did you mean `-- flotilla:upgrade`?)",
            )],
        );
        for line in [
            "-- flotilla: note",
            "-- flotilla downgrades this table by hand",
            "-- Flotilla upgrade notes follow",
            "-- see flotilla:downgrade",
            "-- TODO: downgrade",
            "-- downgrade",
            "-- floating: upgrade",
            "-- flotilla",
            "-- flotilla:",
            "-- fl:downgrade",
            "-- Flotilla: upgrade this later",
            "-- flotila:downgrade -- the reverse",
            // Notes `flotilla revision --autogenerate` and offline scripts write.
            "-- flotilla: backfill orders.total here (it has no default) before SET NOT NULL",
            "-- flotilla: destructive: DROP TABLE orders",
            "-- Flotilla 0.1.0 offline upgrade: 2 step(s).",
        ] {
            check_marker_line(line, None);
        }
        // A misspelled marker still ends the section before it, so nothing else is reported.
        let e =
            parse("-- revision: a\n-- Flotilla: upgrade\nSELECT 1;\n-- flotila:downgrade\nSELECT 2;\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "revs/x.sql:2: misspelled section marker `-- Flotilla: upgrade` (did you mean `-- flotilla:upgrade`?)\n\
             revs/x.sql:4: misspelled section marker `-- flotila:downgrade` (did you mean `-- flotilla:downgrade`?)"
        );
        // Backfill markers keep their attributes when misspelled.
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\n-- flotilla:backfil table=t key=id\nUPDATE t SET c = 1 WHERE {{batch}};\n\
             -- flotilla backfill table=t key=id\nUPDATE t SET c = 2 WHERE {{batch}};\n",
            &[
                (3, "misspelled section marker `-- flotilla:backfil` (did you mean `-- flotilla:backfill`?)"),
                (5, "misspelled section marker `-- flotilla backfill` (did you mean `-- flotilla:backfill`?)"),
            ],
        );
        check_marker_line("-- flotilla backfill of the orders", None);
    }

    #[test]
    fn names_longer_than_the_version_column() {
        let long = "a".repeat(MAX_NAME_CHARS + 1);
        let fits = "é".repeat(MAX_NAME_CHARS);
        assert_eq!(check_name(&fits), Ok(()));
        assert_eq!(check_name(&long), Err(NameError::TooLong(256)));
        check_problems(
            &format!("-- revision: {long}\n-- flotilla:upgrade\n"),
            &[(
                1,
                &format!(
                    "invalid revision id `{long}` in `revision`: it is 256 characters long, and the version \
                     table's `version_num` column holds at most 255"
                ),
            )],
        );
        check_problems(
            &format!("-- revision: a\n-- branch_labels: x, {long}\n-- depends_on: {long}\n-- flotilla:upgrade\n"),
            &[(2, "invalid branch label `aaa"), (3, "invalid revision reference `aaa")],
        );
        check_ok(&format!("-- revision: {fits}\n-- flotilla:upgrade\n"));
        // The limit is the built-in version table's column.
        let ddl = crate::executor::TableStore::default().version_create_sql();
        assert!(ddl.contains(&format!("version_num varchar({MAX_NAME_CHARS})")), "{ddl}");
    }

    #[test]
    fn section_errors() {
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\nSELECT 1;\nSELECT $$;\n-- flotilla:downgrade\nSELECT '\n",
            &[
                (4, "unterminated dollar-quoted body"),
                (6, "unterminated string literal"),
            ],
        );
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\nbegin;\nSTART  transaction;\nCOMMIT;\n-- flotilla:downgrade\nEnd;\nROLLBACK;\nabort;\n",
            &[
                (3, "transaction control (`BEGIN`) in a transactional revision; mark it `-- transaction: false`"),
                (4, "`START TRANSACTION`"),
                (5, "`COMMIT`"),
                (7, "`END`"),
                (8, "`ROLLBACK`"),
                (9, "`ABORT`"),
            ],
        );
        // Not transaction control: DO blocks, words that merely start like it, START without TRANSACTION.
        check_ok("-- revision: a\n-- flotilla:upgrade\nDO $$ BEGIN COMMIT; END $$;\nSELECT beginning;\nENDPOINT;\n");
    }

    #[test]
    fn collects_everything() {
        check_problems(
            "-- revision: head\n-- wat: 1\nSELECT 1;\n-- flotilla:downgrade\n-- flotilla:nope\n",
            &[
                (1, "invalid revision id `head`"),
                (1, "missing `-- flotilla:upgrade`"),
                (2, "unknown header key `wat`"),
                (3, "SQL before"),
                (4, "downgrade` section before"),
                (5, "unknown section marker `-- flotilla:nope`"),
            ],
        );
        let e = parse("-- revision: a\n-- wat: 1\n-- flotilla:upgrade\n").unwrap_err();
        assert!(
            e.to_string().starts_with("revs/x.sql:2: unknown header key `wat`"),
            "{e}"
        );
    }

    #[test]
    fn crlf_and_bom() {
        let crlf = format!("\u{feff}{}", FULL.replace('\n', "\r\n"));
        let s = check_ok(&crlf);
        let plain = check_ok(FULL);
        assert_eq!(s.meta, plain.meta);
        assert_eq!(s.upgrade.text, plain.upgrade.text);
        assert_eq!(s.upgrade.checksum, plain.upgrade.checksum);
        assert_eq!(s.downgrade.checksum, plain.downgrade.checksum);
        assert_eq!(sqls(&s.downgrade), vec![(13, "DROP TABLE orders")]);
    }

    #[test]
    fn checksum_ignores_line_end_whitespace_only() {
        let base = check_ok(FULL);
        let padded = check_ok(
            &FULL
                .replace("KEY);\n", "KEY);   \n\n\n")
                .replace("orders;\n", "orders;\t\n\n"),
        );
        assert_eq!(base.upgrade.checksum, padded.upgrade.checksum);
        assert_eq!(base.downgrade.checksum, padded.downgrade.checksum);
        let edited = check_ok(&FULL.replace("DROP TABLE orders;", "DROP TABLE  orders;"));
        assert_eq!(base.upgrade.checksum, edited.upgrade.checksum);
        assert_ne!(base.downgrade.checksum, edited.downgrade.checksum);
        // Header edits do not touch section checksums.
        let retitled = check_ok(&FULL.replace("add orders table", "create orders"));
        assert_eq!(base.upgrade.checksum, retitled.upgrade.checksum);
    }

    #[test]
    fn backfill_markers_make_phases() {
        let script = parse(
            "-- revision: a\n-- flotilla:upgrade\nALTER TABLE t ADD c int;\n\n\
             -- flotilla:backfill table=t key=id batch_size=10\nUPDATE t SET c = 1 WHERE {{batch}};\n\
             ALTER TABLE t ALTER c SET NOT NULL;\n-- flotilla:downgrade\nALTER TABLE t DROP c;\n",
        )
        .expect("valid");
        let phases = &script.upgrade.phases;
        assert_eq!(phases.len(), 3);
        assert!(matches!(&phases[0], Phase::Sql(s) if s.len() == 1 && s[0].line == 3));
        match &phases[1] {
            Phase::Backfill(b) => {
                assert_eq!((b.marker_line, b.statement.line, b.spec.batch_size), (5, 6, 10));
                assert_eq!(b.statement.sql, "UPDATE t SET c = 1 WHERE {{batch}}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&phases[2], Phase::Sql(s) if s.len() == 1 && s[0].line == 7));
        assert_eq!(script.upgrade.statements.len(), 3);
        assert!(
            script.upgrade.text.contains("flotilla:backfill"),
            "the marker counts in the checksum"
        );
        assert!(!script.downgrade.has_backfill());
        assert!(!script.is_data_reversible());
        let plain = parse("-- revision: a\n-- flotilla:upgrade\nSELECT 1;\n").expect("valid");
        assert_eq!(plain.upgrade.phases.len(), 1);
        assert!(plain.is_data_reversible());
    }

    #[test]
    fn backfill_reverse_makes_data_reversible() {
        let none = parse(
            "-- revision: a\n-- flotilla:upgrade\n-- flotilla:backfill table=t key=id reverse=none\n\
             UPDATE t SET c = 1 WHERE {{batch}};\n",
        )
        .expect("valid");
        assert!(none.is_data_reversible());
        let reverse = parse(
            "-- revision: a\n-- flotilla:upgrade\n-- flotilla:backfill table=t key=id\n\
             UPDATE t SET c = 1 WHERE {{batch}};\n-- flotilla:downgrade\n-- flotilla:backfill table=t key=id\n\
             UPDATE t SET c = NULL WHERE {{batch}};\n",
        )
        .expect("valid");
        assert!(reverse.is_data_reversible());
        assert_eq!(reverse.downgrade.phases.len(), 3);
    }

    #[test]
    fn backfill_marker_problems() {
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\n-- flotilla:backfill orders\n",
            &[
                (3, "not `name=value`"),
                (3, "needs `table=...`"),
                (3, "needs `key=...`"),
                (3, "needs a statement"),
            ],
        );
        check_problems(
            "-- revision: a\n-- flotilla:backfill table=t key=id\n-- flotilla:upgrade\nSELECT 1;\n",
            &[(2, "outside the upgrade and downgrade sections")],
        );
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\n-- flotilla:backfill table=t key=id\nUPDATE t SET c = 1;\n",
            &[(4, "must contain `{{batch}}`")],
        );
        check_problems(
            "-- revision: a\n-- transaction: false\n-- flotilla:upgrade\n-- flotilla:backfill table=t key=id\n\
             UPDATE t SET c = 1 WHERE {{batch}};\n",
            &[(4, "cannot be part of a no-transaction revision")],
        );
        check_problems(
            "-- revision: a\n-- flotilla:upgrade\n  -- flotilla:backfill table=t key=id\nUPDATE t SET c = 1 WHERE {{batch}};\n",
            &[(3, "exactly `-- flotilla:backfill`")],
        );
    }
}
