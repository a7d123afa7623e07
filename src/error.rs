//! Exit codes (placeholder).
