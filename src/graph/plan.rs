//! Plans and steps, and their JSON shape for `flotilla plan --format json`.

use serde::ser::{SerializeSeq, SerializeStruct};

use crate::revision::RevisionId;

/// Which way a plan or step moves through the graph. Serialises as `"up"` / `"down"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
}

/// One step of a plan: apply (`Up`) or revert (`Down`) one revision, and what that does to the version table.
///
/// Invariant: against the rows left by the previous steps, every `delete_rows` entry is present and no
/// `insert_rows` entry is. An Alembic `UPDATE` of a row shows up as one delete plus one insert. Both lists are
/// in input order of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub revision: RevisionId,
    pub direction: Direction,
    /// Version-table rows this step removes and inserts (Alembic's head bookkeeping).
    pub delete_rows: Vec<RevisionId>,
    pub insert_rows: Vec<RevisionId>,
}

/// An ordered list of steps, all in one direction. Empty when the database is already at the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub direction: Direction,
    pub steps: Vec<Step>,
}

impl Plan {
    /// The version rows after applying every step to `rows`, in the order rows were kept or inserted.
    pub fn apply_rows(&self, rows: &[RevisionId]) -> Vec<RevisionId> {
        let mut out = rows.to_vec();
        for s in &self.steps {
            out.retain(|r| !s.delete_rows.contains(r));
            out.extend(s.insert_rows.iter().cloned());
        }
        out
    }

    /// The plan as `{"direction":"upgrade","steps":[{"revision":"<id>","direction":"up"}]}`.
    ///
    /// This shape is versioned output of `flotilla plan --format json`: change it only together with the CLI docs.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and enums cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

struct StepsJson<'a>(&'a [Step]);

impl serde::Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Step", 2)?;
        st.serialize_field("revision", &self.revision)?;
        st.serialize_field("direction", &self.direction)?;
        st.end()
    }
}

impl serde::Serialize for StepsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for step in self.0 {
            seq.serialize_element(step)?;
        }
        seq.end()
    }
}

impl serde::Serialize for Plan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Plan", 2)?;
        let direction = match self.direction {
            Direction::Up => "upgrade",
            Direction::Down => "downgrade",
        };
        st.serialize_field("direction", direction)?;
        st.serialize_field("steps", &StepsJson(&self.steps))?;
        st.end()
    }
}
