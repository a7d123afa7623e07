//! fleet (placeholder).
