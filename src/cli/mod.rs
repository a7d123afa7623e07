//! cli (placeholder).
