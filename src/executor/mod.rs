//! executor (placeholder).
