//! The one way the CLI opens a ledger: from where the flags and `flotilla.toml` say it is.

use super::error::LedgerError;
use super::postgres::PgLedger;
use super::sqlite::SqliteLedger;
use super::store::Ledger;
use crate::config::LedgerLocation;

/// Opens the ledger at `location`: the SQLite file (created with its directories when missing), or the
/// PostgreSQL control database (its schema created or upgraded). Either way the schema is migrated first.
///
/// Errors: whatever [`SqliteLedger::open`] or [`PgLedger::open`] return; every message names the location, a url
/// with its password masked.
pub fn open(location: &LedgerLocation) -> Result<Box<dyn Ledger>, LedgerError> {
    Ok(match location {
        LedgerLocation::File(path) => Box::new(SqliteLedger::open(path)?),
        LedgerLocation::Postgres(url) => Box::new(PgLedger::open(url)?),
    })
}
