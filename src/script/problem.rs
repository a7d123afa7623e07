//! Problems found in revision files, and the error that carries all of them at once.
//!
//! Parsing never stops at the first problem: every check runs and each finding becomes one [`Problem`].
//! Callers get them together in a [`ScriptError`] and refuse to run anything.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::graph::GraphError;
use crate::revision::{RevisionId, MAX_NAME_CHARS};

use super::split::Construct;

/// Every problem found in one or more files; nothing runs when this is returned.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ScriptError {
    /// In file order, then line order within a file; never empty.
    pub problems: Vec<Problem>,
}

/// One problem at one place: `path:line: message`.
///
/// `line` is the 1-based line in the file, or 0 when the problem concerns the whole file or directory; `path`
/// is empty for a problem of no file, which is shown as the message alone.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problem {
    pub path: PathBuf,
    pub line: usize,
    /// `kind` rendered for people; kept as a field so callers can print it without matching on `kind`.
    pub message: String,
    pub kind: ProblemKind,
}

impl Problem {
    /// The only constructor, so `message` always agrees with `kind`.
    pub fn new(path: &Path, line: usize, kind: ProblemKind) -> Self {
        Problem {
            path: path.to_path_buf(),
            line,
            message: kind.to_string(),
            kind,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.as_os_str().is_empty() {
            f.write_str(&self.message)
        } else if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

/// What is wrong, as facts; [`Problem`] adds where.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProblemKind {
    #[error("cannot read revision directory: {error}")]
    ReadDir { error: Arc<std::io::Error> },
    #[error("cannot read revision file: {error}")]
    ReadFile { error: Arc<std::io::Error> },
    #[error("revision file is not valid UTF-8")]
    NotUtf8,
    #[error("unknown header key `{key}` ({})", unknown_key_hint(*.close))]
    UnknownHeaderKey {
        key: String,
        /// The known key the writer most likely meant, if one is close.
        close: Option<&'static str>,
    },
    #[error("duplicate header key `{key}` (first given on line {first_line})")]
    DuplicateHeaderKey { key: String, first_line: usize },
    #[error("missing `-- revision: <id>` header")]
    MissingRevision,
    #[error("SQL before the `-- flotilla:upgrade` marker; the header holds only `-- key: value` comment lines")]
    SqlBeforeMarker,
    #[error("invalid {what} `{value}` in `{key}`: {reason}")]
    InvalidName {
        key: &'static str,
        what: NameKind,
        value: String,
        reason: NameError,
    },
    #[error("`{key}` lists `{value}` twice")]
    DuplicateListEntry { key: &'static str, value: String },
    #[error("revision `{id}` lists itself in `{key}`")]
    SelfReference { key: &'static str, id: RevisionId },
    #[error("`transaction` must be `true` or `false`, not `{value}`")]
    BadTransactionValue { value: String },
    #[error("unknown section marker `-- flotilla:{name}` (known markers: {})", MARKER_NAMES.join(", "))]
    UnknownMarker { name: String },
    #[error("section marker must be written exactly `-- flotilla:{name}` on a line of its own")]
    MalformedMarker { name: String },
    #[error("misspelled section marker `{written}` (did you mean `-- flotilla:{name}`?)")]
    MisspelledMarker {
        /// The line as written, without leading whitespace or what follows the marker.
        written: String,
        name: &'static str,
    },
    #[error("second `-- flotilla:{name}` section (the first starts on line {first_line})")]
    DuplicateSection { name: &'static str, first_line: usize },
    #[error("`-- flotilla:downgrade` section before the `-- flotilla:upgrade` section")]
    DowngradeBeforeUpgrade,
    #[error("missing `-- flotilla:upgrade` section marker")]
    MissingUpgrade,
    #[error("unterminated {construct} (it starts on this line)")]
    Unterminated { construct: Construct },
    #[error("transaction control (`{keyword}`) in a transactional revision; mark it `-- transaction: false`")]
    TransactionControl { keyword: String },
    #[error("`-- flotilla:backfill` outside the upgrade and downgrade sections")]
    BackfillOutsideSection,
    #[error("{error}")]
    BackfillSpec { error: crate::backfill::BackfillSpecError },
    #[error("a backfill needs a statement after its marker")]
    BackfillWithoutStatement,
    #[error("a backfill statement must contain `{{{{batch}}}}` where the batch's key predicate goes")]
    BackfillWithoutPlaceholder,
    #[error("a backfill commits once per batch, so it cannot be part of a no-transaction revision")]
    BackfillInNoTransaction,
    #[error("duplicate revision id `{id}`, also defined at {}:{other_line}", .other_path.display())]
    DuplicateRevision {
        id: RevisionId,
        other_path: PathBuf,
        other_line: usize,
    },
    /// A revision graph problem, reported at the header line that causes it.
    #[error("{error}")]
    Graph { error: GraphError },
}

fn unknown_key_hint(close: Option<&str>) -> String {
    match close {
        Some(key) => format!("did you mean `{key}`?"),
        None => format!(
            "known keys: {}; a comment in the header must not look like `-- word: ...`, write `-- word - ...`",
            HEADER_KEYS.join(", ")
        ),
    }
}

/// The known header key closest to `key`: the same letters in another case, a typo or two away, or a word
/// other tools use for it (Alembic's `Revises`, `depends`, `labels`).
pub(crate) fn close_header_key(key: &str) -> Option<&'static str> {
    let key = key.to_lowercase().replace([' ', '-'], "_");
    let alias = match key.as_str() {
        "revises" | "parent" | "parents" | "down_revisions" => Some("down_revision"),
        "id" => Some("revision"),
        "depends" | "dependencies" => Some("depends_on"),
        "branch_label" | "labels" | "branch" => Some("branch_labels"),
        _ => None,
    };
    alias.or_else(|| closest(&key, HEADER_KEYS).map(|i| HEADER_KEYS[i]))
}

/// The index of the entry of `known` nearest to `word` when it is at most two edits away (Damerau-Levenshtein:
/// an insertion, deletion, substitution or swap of neighbours is one edit); the first of equally near ones.
pub(crate) fn closest(word: &str, known: &[impl AsRef<str>]) -> Option<usize> {
    known
        .iter()
        .enumerate()
        .map(|(i, k)| (strsim::damerau_levenshtein(word, k.as_ref()), i))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, i)| i)
}

/// Header keys a revision file may use, in the order [`super::render_script`] writes them.
pub const HEADER_KEYS: &[&str] = &[
    "revision",
    "down_revision",
    "branch_labels",
    "depends_on",
    "message",
    "create_date",
    "transaction",
];

/// Section marker names, as in `-- flotilla:<name>`.
pub const MARKER_NAMES: &[&str] = &["upgrade", "downgrade", "backfill"];

/// Which kind of name a header value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    RevisionId,
    BranchLabel,
    /// A `depends_on` entry: a revision id, a unique id prefix, or a branch label.
    Reference,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::RevisionId => "revision id",
            NameKind::BranchLabel => "branch label",
            NameKind::Reference => "revision reference",
        })
    }
}

/// Why a revision id or branch label is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("it is empty")]
    Empty,
    #[error("it contains whitespace")]
    Whitespace,
    #[error("it contains a comma")]
    Comma,
    #[error("`{0}` is a reserved word in targets")]
    ReservedWord(String),
    #[error("`{0}` is reserved for target syntax such as `label@head`, `rev+1`, `-1`")]
    ReservedChar(char),
    #[error("it is {0} characters long, and the version table's `version_num` column holds at most {MAX_NAME_CHARS}")]
    TooLong(usize),
}
