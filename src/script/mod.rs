//! Revision script files: header, upgrade/downgrade sections, the SQL statement splitter, checksums, and the
//! file template for new revisions. Pure: no database, no runtime.
//!
//! This module reads and writes single files and checks what one directory of files can tell (duplicate
//! ids). The revision graph (parents exist, no cycles, labels unique) belongs to `graph`; [`build_graph`]
//! builds it from loaded scripts and reports its problems at their header lines. Running statements belongs
//! to `executor`. The user-facing format is documented in `docs/revision-format.md`.

mod checksum;
mod file_name;
mod graph;
mod load;
mod parse;
mod phase;
mod problem;
mod render;
mod source;
mod split;

pub use checksum::{checksum, normalise, CHECKSUM_VERSION};
pub use file_name::{
    render_file_name, slugify, FileNameParts, FileTemplateError, DEFAULT_FILE_TEMPLATE, MINUTE_FILE_TEMPLATE,
    TRUNCATE_SLUG_LENGTH,
};
pub use graph::build_graph;
pub use load::{load_dir, load_locations};
pub use parse::{check_name, parse_script, HeaderLines, Script, Section};
pub use phase::{BackfillStep, Phase};
pub use problem::{NameError, NameKind, Problem, ProblemKind, ScriptError, HEADER_KEYS, MARKER_NAMES};
pub use render::{format_create_date, new_revision_id, render_script, NewScript};
pub use source::{Embedded, Locations, RevisionSource, SqlFiles};
pub use split::{split_statements, Construct, SplitError, Statement};
