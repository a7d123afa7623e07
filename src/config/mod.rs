//! config (placeholder until the config work lands).

#[derive(Debug, thiserror::Error)]
#[error("config error")]
pub struct ConfigError;
