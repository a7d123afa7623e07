//! observe (placeholder).
