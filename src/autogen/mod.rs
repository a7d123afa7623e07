//! Autogenerate: build the schema the revisions produce and the desired schema in scratch databases, introspect
//! both from `pg_catalog`, diff them into operations, and render those as a revision's upgrade and downgrade SQL.
//! Also `check` (desired schema against head) and fleet drift (each tenant against its own revision).
//!
//! The pipeline is introspect → diff → ops → render. `model` and `diff` and `render` are pure (no IO);
//! `introspect`, `scratch` and `drift` touch databases. Writing revision files and parsing flags stay in `cli`.

mod diff;
mod drift;
mod error;
mod introspect;
mod model;
mod ops;
mod rename;
mod render;
mod scratch;

pub use diff::{diff, diff_with};
pub use drift::{differences, drift, group_drift, DriftDifference, DriftGroup, DriftReport, DriftTarget};
pub use error::AutogenError;
pub use introspect::{introspect, Scope};
pub use model::{
    Catalog, Column, Composite, Constraint, DefaultGrant, DepKey, Domain, Enum, Extension, Function, Grant, Index,
    Policy, QName, Sequence, Table, Trigger, View,
};
pub use ops::{granted_roles, CommentTarget, Comparator, CustomOp, Op};
pub use rename::{quote_name, rename_suggestions, Rename};
pub use render::{
    concurrently, render, upgrade_text, DefaultRenderer, OnlineRenderer, Registry, RenderContext, RenderOptions,
    RenderedRevision, Renderer, Statement,
};
pub use scratch::{build_at, build_renamed, desired_files, load_desired, store_tables, DevServer, Scratch};
