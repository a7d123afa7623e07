//! ledger (placeholder).
