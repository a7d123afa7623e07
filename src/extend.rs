//! The one registry of Flotilla's extension points, by name: revision sources, version stores and offline
//! renderers. `flotilla.toml` picks one of each (`revision_source`, `version_store`, `offline_renderer`);
//! [`Registry::standard`] holds the built-in ones, and a program embedding Flotilla adds its own before
//! handing the registry to [`crate::cli::run_with`]. How to add one: ARCHITECTURE.md, "Adding things".

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::executor::{OfflineRenderer, PsqlRenderer, StoreSettings, TableStore, VersionStore};
use crate::script::{RevisionSource, SqlFiles};

/// Builds a version store from the `version_table`, `version_table_schema` and `history_table` settings.
pub type StoreFactory = Arc<dyn Fn(&StoreSettings) -> Arc<dyn VersionStore> + Send + Sync>;

/// The kinds of extension point, as the config keys that choose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RevisionSource,
    VersionStore,
    OfflineRenderer,
}

impl Kind {
    /// The `flotilla.toml` key choosing this kind.
    pub fn key(self) -> &'static str {
        match self {
            Kind::RevisionSource => "revision_source",
            Kind::VersionStore => "version_store",
            Kind::OfflineRenderer => "offline_renderer",
        }
    }
}

/// A name the registry does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {} {name:?} (registered: {})", kind.key(), known.join(", "))]
pub struct UnknownName {
    pub kind: Kind,
    pub name: String,
    pub known: Vec<String>,
}

/// Named implementations of each extension point. Registering a name again replaces the earlier entry, so a
/// program may also swap out a built-in.
#[derive(Clone)]
pub struct Registry {
    sources: BTreeMap<String, Arc<dyn RevisionSource>>,
    stores: BTreeMap<String, StoreFactory>,
    renderers: BTreeMap<String, Arc<dyn OfflineRenderer>>,
}

/// The names chosen when `flotilla.toml` says nothing.
pub const DEFAULT_SOURCE: &str = "sql";
pub const DEFAULT_STORE: &str = "table";
pub const DEFAULT_RENDERER: &str = "psql";

impl Registry {
    /// An empty registry.
    pub fn empty() -> Registry {
        Registry {
            sources: BTreeMap::new(),
            stores: BTreeMap::new(),
            renderers: BTreeMap::new(),
        }
    }

    /// The built-in implementations: source `sql` ([`SqlFiles`]), store `table` ([`TableStore`]) and renderer
    /// `psql` ([`PsqlRenderer`]).
    pub fn standard() -> Registry {
        let mut registry = Registry::empty();
        registry.add_source(DEFAULT_SOURCE, SqlFiles);
        registry.add_store(DEFAULT_STORE, |settings: &StoreSettings| {
            Arc::new(TableStore::new(settings.clone())) as Arc<dyn VersionStore>
        });
        registry.add_renderer(DEFAULT_RENDERER, PsqlRenderer);
        registry
    }

    pub fn add_source(&mut self, name: &str, source: impl RevisionSource + 'static) -> &mut Self {
        self.sources.insert(name.to_string(), Arc::new(source));
        self
    }

    pub fn add_store(
        &mut self,
        name: &str,
        factory: impl Fn(&StoreSettings) -> Arc<dyn VersionStore> + Send + Sync + 'static,
    ) -> &mut Self {
        self.stores.insert(name.to_string(), Arc::new(factory));
        self
    }

    pub fn add_renderer(&mut self, name: &str, renderer: impl OfflineRenderer + 'static) -> &mut Self {
        self.renderers.insert(name.to_string(), Arc::new(renderer));
        self
    }

    pub fn source(&self, name: &str) -> Result<Arc<dyn RevisionSource>, UnknownName> {
        lookup(&self.sources, Kind::RevisionSource, name).cloned()
    }

    /// The store `name`, built from `settings`.
    pub fn store(&self, name: &str, settings: &StoreSettings) -> Result<Arc<dyn VersionStore>, UnknownName> {
        lookup(&self.stores, Kind::VersionStore, name).map(|factory| factory(settings))
    }

    pub fn renderer(&self, name: &str) -> Result<Arc<dyn OfflineRenderer>, UnknownName> {
        lookup(&self.renderers, Kind::OfflineRenderer, name).cloned()
    }

    /// The registered names of `kind`, sorted.
    pub fn names(&self, kind: Kind) -> Vec<String> {
        match kind {
            Kind::RevisionSource => self.sources.keys().cloned().collect(),
            Kind::VersionStore => self.stores.keys().cloned().collect(),
            Kind::OfflineRenderer => self.renderers.keys().cloned().collect(),
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::standard()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.names(Kind::RevisionSource))
            .field("stores", &self.names(Kind::VersionStore))
            .field("renderers", &self.names(Kind::OfflineRenderer))
            .finish()
    }
}

fn lookup<'a, T>(map: &'a BTreeMap<String, T>, kind: Kind, name: &str) -> Result<&'a T, UnknownName> {
    map.get(name).ok_or_else(|| UnknownName {
        kind,
        name: name.to_string(),
        known: map.keys().cloned().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{Embedded, Locations, Script, ScriptError};

    #[test]
    fn standard_names() {
        let registry = Registry::standard();
        assert_eq!(registry.names(Kind::RevisionSource), ["sql"]);
        assert_eq!(registry.names(Kind::VersionStore), ["table"]);
        assert_eq!(registry.names(Kind::OfflineRenderer), ["psql"]);
        let settings = StoreSettings {
            table: "alembic_version".into(),
            ..StoreSettings::default()
        };
        let store = registry.store("table", &settings).unwrap();
        assert_eq!(store.owned_tables(), ["alembic_version", "flotilla_history"]);
    }

    #[test]
    fn unknown_names_list_the_registered_ones() {
        let error = Registry::standard().renderer("liquibase").err().unwrap();
        assert_eq!(
            error.to_string(),
            "unknown offline_renderer \"liquibase\" (registered: psql)"
        );
    }

    #[test]
    fn added_entries_are_found_and_replace_by_name() {
        struct Nothing;
        impl RevisionSource for Nothing {
            fn load(&self, _: &Locations) -> Result<Vec<Script>, ScriptError> {
                Ok(Vec::new())
            }
        }
        let mut registry = Registry::standard();
        registry
            .add_source(
                "embedded",
                Embedded::new([(
                    "a.sql",
                    "-- revision: a\n-- down_revision:\n\n-- flotilla:upgrade\nSELECT 1;\n",
                )]),
            )
            .add_source("sql", Nothing);
        assert_eq!(registry.names(Kind::RevisionSource), ["embedded", "sql"]);
        let loaded = registry.source("embedded").unwrap().load(&Locations::one(".")).unwrap();
        assert_eq!(loaded[0].meta.id.as_str(), "a");
        assert!(registry
            .source("sql")
            .unwrap()
            .load(&Locations::one("/nonexistent"))
            .unwrap()
            .is_empty());
    }
}
