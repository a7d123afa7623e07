//! A server's health thresholds (`health`, `pause_*` and `replica_urls` keys of a `[[servers]]` entry), read with
//! the tenants file. `fleet::health` samples the signals and decides.

use std::time::Duration;

use toml::de::DeTable;
use toml::Spanned;

use super::doc::{get, Doc};
use super::error::ProblemKind;
use super::url::DbUrl;

/// A replica whose replay lag a server's health watches (`replica_urls`). It holds no password (loading refuses
/// one) and no TLS settings of its own: it is reached with the server's user, password and TLS settings, which a
/// physical replica shares with its primary.
#[derive(Debug, Clone)]
pub struct Replica {
    pub url: DbUrl,
}

impl Replica {
    /// The url as messages show it (redacted, though it holds no password).
    pub fn shown(&self) -> &str {
        self.url.redacted()
    }

    /// The driver configuration of the replica: its url's hosts, ports, database and user (the server's user when
    /// the url names none), with the server's password and TLS negotiation (`server` is the server's configuration,
    /// password included), and a connect timeout of at most [`HealthLimits::REPLICA_TIMEOUT`].
    pub fn pg_config(&self, server: &tokio_postgres::Config) -> tokio_postgres::Config {
        let mut cfg = self.url.pg_config();
        if cfg.get_user().is_none() {
            if let Some(user) = server.get_user() {
                cfg.user(user);
            }
        }
        if let Some(password) = server.get_password() {
            cfg.password(password);
        }
        cfg.ssl_mode(server.get_ssl_mode());
        let timeout = cfg.get_connect_timeout().map_or(HealthLimits::REPLICA_TIMEOUT, |t| {
            (*t).min(HealthLimits::REPLICA_TIMEOUT)
        });
        cfg.connect_timeout(timeout);
        cfg
    }
}

impl PartialEq for Replica {
    fn eq(&self, other: &Replica) -> bool {
        self.url.redacted() == other.url.redacted()
    }
}

/// A server's thresholds (`pause_*` keys of its `[[servers]]` entry; `health = true` turns on the defaults).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthLimits {
    /// Pause while at least this many sessions wait for a lock (`pg_locks` not granted).
    pub lock_waiters: Option<u64>,
    /// Pause while the server has fewer free connection slots than this (`max_connections` less sessions).
    pub free_connections: Option<u64>,
    /// Pause while a replica replays more than this far behind: the largest `pg_stat_replication.replay_lag` on
    /// the server, and each of `replicas`' `now() - pg_last_xact_replay_timestamp()`.
    pub replay_lag: Option<Duration>,
    /// Replicas read on connections of their own (`replica_urls`); listing any turns `replay_lag` on.
    pub replicas: Vec<Replica>,
    /// Pause while this query's one number is above `query_above`.
    pub query: Option<String>,
    pub query_above: Option<f64>,
}

impl HealthLimits {
    pub const DEFAULT_LOCK_WAITERS: u64 = 10;
    pub const DEFAULT_FREE_CONNECTIONS: u64 = 5;
    pub const DEFAULT_REPLAY_LAG: Duration = Duration::from_secs(30);
    /// A paused server resumes when every signal is under this fraction of its threshold (free connections:
    /// over the threshold divided by it).
    pub const RESUME_FRACTION: f64 = 0.8;
    /// How long a replica may take to connect and answer before it counts as unreachable.
    pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(5);

    /// `health = true`: every built-in signal at its default threshold.
    pub fn defaults() -> HealthLimits {
        HealthLimits {
            lock_waiters: Some(Self::DEFAULT_LOCK_WAITERS),
            free_connections: Some(Self::DEFAULT_FREE_CONNECTIONS),
            replay_lag: Some(Self::DEFAULT_REPLAY_LAG),
            replicas: Vec::new(),
            query: None,
            query_above: None,
        }
    }

    pub fn is_off(&self) -> bool {
        self.lock_waiters.is_none()
            && self.free_connections.is_none()
            && self.replay_lag.is_none()
            && self.query.is_none()
    }
}

/// The thresholds of one `[[servers]]` entry: `health = true` turns on the built-in signals at their defaults,
/// each `pause_*` key turns one on (or sets its threshold); none: off.
pub(crate) fn read(doc: &mut Doc<'_>, table: &DeTable<'_>, server: &str) -> HealthLimits {
    let is_on = get(table, "health")
        .and_then(|v| doc.boolean("health", v))
        .unwrap_or(false);
    let mut limits = if is_on {
        HealthLimits::defaults()
    } else {
        HealthLimits::default()
    };
    let count = |doc: &mut Doc<'_>, key: &'static str| -> Option<u64> {
        let v = get(table, key)?;
        let n = doc.integer(key, v)?;
        match u64::try_from(*n.get_ref()) {
            Ok(n) => Some(n),
            Err(_) => {
                doc.report(
                    v.span(),
                    ProblemKind::Negative {
                        key,
                        value: *n.get_ref() as f64,
                    },
                );
                None
            }
        }
    };
    if let Some(n) = count(doc, "pause_lock_waiters") {
        limits.lock_waiters = Some(n);
    }
    if let Some(n) = count(doc, "pause_free_connections") {
        limits.free_connections = Some(n);
    }
    if let Some(lag) = get(table, "pause_replay_lag").and_then(|v| doc.duration("pause_replay_lag", v)) {
        limits.replay_lag = Some(lag);
    }
    limits.replicas = replicas(doc, table, server);
    if !limits.replicas.is_empty() && limits.replay_lag.is_none() {
        limits.replay_lag = Some(HealthLimits::DEFAULT_REPLAY_LAG);
    }
    let query: Option<Spanned<String>> = get(table, "pause_query").and_then(|v| doc.string("pause_query", v));
    let above = get(table, "pause_query_above").and_then(|v| doc.number("pause_query_above", v));
    match (query, above) {
        (Some(query), Some(above)) => {
            limits.query = Some(query.into_inner());
            limits.query_above = Some(*above.get_ref());
        }
        (Some(query), None) => doc.report(
            query.span(),
            ProblemKind::MissingKey {
                key: "pause_query_above",
                section: format!("server `{server}` (`pause_query` pauses when its number is above it)"),
            },
        ),
        (None, Some(above)) => doc.report(
            above.span(),
            ProblemKind::MissingKey {
                key: "pause_query",
                section: format!("server `{server}` (`pause_query_above` is the threshold of its number)"),
            },
        ),
        (None, None) => {}
    }
    // The signals' connection counts in `max_connections` (fleet/server.rs), so one connection would leave none
    // for the tenants. A bad value is reported where `max_connections` is read.
    if !limits.is_off() {
        if let Some(v) = get(table, "max_connections") {
            if let toml::de::DeValue::Integer(n) = v.get_ref() {
                if i64::from_str_radix(n.as_str(), n.radix()) == Ok(1) {
                    doc.report(
                        v.span(),
                        ProblemKind::HealthNeedsTwoConnections {
                            server: server.to_string(),
                        },
                    );
                }
            }
        }
    }
    limits
}

/// `replica_urls`: a url or an array of them, each a `postgres://` url without a password or TLS settings.
fn replicas(doc: &mut Doc<'_>, table: &DeTable<'_>, server: &str) -> Vec<Replica> {
    let Some(value) = get(table, "replica_urls") else {
        return Vec::new();
    };
    let Some(urls) = doc.strings("replica_urls", value) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for url in urls {
        match DbUrl::parse(url.get_ref()) {
            Ok(parsed) if !parsed.is_url() => {
                let kind = ProblemKind::UrlScheme {
                    url: parsed.redacted().to_string(),
                };
                doc.report(url.span(), kind);
            }
            Ok(parsed) if parsed.has_password() => doc.report(
                url.span(),
                ProblemKind::ReplicaPasswordInUrl {
                    server: server.to_string(),
                },
            ),
            Ok(parsed)
                if parsed.sslmode().is_some()
                    || parsed.ca_file().is_some()
                    || parsed.client_files() != (None, None) =>
            {
                doc.report(
                    url.span(),
                    ProblemKind::ReplicaTls {
                        server: server.to_string(),
                        url: parsed.redacted().to_string(),
                    },
                )
            }
            Ok(parsed) => out.push(Replica { url: parsed }),
            Err(kind) => doc.report(url.span(), kind),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::HealthLimits;
    use crate::config::TenantsFile;

    fn health_of(server_keys: &str) -> Result<HealthLimits, String> {
        let text = format!("[[servers]]\nname = \"a\"\nurl = \"postgres://m@h/app\"\n{server_keys}");
        TenantsFile::parse(Path::new("/fleet/tenants.toml"), &text, &|_| None)
            .map(|f| f.servers[0].health.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn replica_urls_take_a_url_or_a_list_and_turn_the_replay_lag_on() {
        let one = health_of("replica_urls = \"postgres://r1:5433/app\"\n").unwrap();
        assert_eq!(one.replay_lag, Some(HealthLimits::DEFAULT_REPLAY_LAG));
        assert_eq!(one.lock_waiters, None);
        let shown: Vec<&str> = one.replicas.iter().map(|r| r.shown()).collect();
        assert_eq!(shown, ["postgres://r1:5433/app"]);
        let two =
            health_of("pause_replay_lag = \"5s\"\nreplica_urls = [\"postgres://r1/app\", \"postgres://r2/app\"]\n")
                .unwrap();
        assert_eq!(two.replay_lag, Some(Duration::from_secs(5)));
        assert_eq!(two.replicas.len(), 2);
        assert!(!two.is_off());
    }

    #[test]
    fn a_replica_takes_the_servers_user_password_and_tls_and_its_own_place() {
        let limits =
            health_of("replica_urls = [\"postgres://r1:5433/other\", \"postgres://reader@r2/app\"]\n").unwrap();
        let mut server: tokio_postgres::Config = "postgres://m@h:5432/app".parse().unwrap();
        server
            .password("s3cret")
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let first = limits.replicas[0].pg_config(&server);
        assert_eq!(first.get_user(), Some("m"));
        assert_eq!(first.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(first.get_ports(), [5433]);
        assert_eq!(first.get_dbname(), Some("other"));
        assert_eq!(first.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(first.get_connect_timeout(), Some(&HealthLimits::REPLICA_TIMEOUT));
        assert_eq!(limits.replicas[1].pg_config(&server).get_user(), Some("reader"));
    }

    #[test]
    fn bad_replica_urls_name_their_line_and_never_show_a_password() {
        for (keys, says) in [
            (
                "replica_urls = \"postgres://m:hunter2@r1/app\"\n",
                "contains a password",
            ),
            (
                "replica_urls = [\"postgres://r1/app?password=hunter2\"]\n",
                "contains a password",
            ),
            ("replica_urls = \"mysql://r1/app\"\n", "must start with postgres://"),
            (
                "replica_urls = \"postgres://r1/app?sslmode=require\"\n",
                "sets TLS parameters",
            ),
            ("replica_urls = 5\n", "replica_urls"),
            ("replica_urls = [\"postgres://r1/app\", 5]\n", "replica_urls"),
        ] {
            let err = health_of(keys).unwrap_err();
            assert!(err.contains("tenants.toml:4:"), "{keys}: {err}");
            assert!(err.contains(says), "{keys}: {err}");
            assert!(!err.contains("hunter2"), "{keys}: {err}");
        }
    }

    #[test]
    fn the_examples_commented_health_keys_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tenants.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let keys = ["health", "pause_", "replica_urls"];
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.starts_with(k)) && rest.contains(" = ") => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let file = TenantsFile::parse(&path, &uncommented, &|_| None).expect("the example with its health keys");
        let health = &file.servers[0].health;
        assert_eq!(health.replicas.len(), 1);
        assert_eq!(health.replay_lag, Some(Duration::from_secs(60)));
        assert!(health.query.is_some());
    }

    #[test]
    fn health_is_off_unless_configured_and_true_takes_the_defaults() {
        assert!(health_of("").unwrap().is_off());
        assert_eq!(health_of("health = true\n").unwrap(), HealthLimits::defaults());
        let limits = health_of("health = true\npause_lock_waiters = 3\npause_replay_lag = \"5s\"\n").unwrap();
        assert_eq!(limits.lock_waiters, Some(3));
        assert_eq!(limits.replay_lag, Some(Duration::from_secs(5)));
        assert_eq!(limits.free_connections, Some(HealthLimits::DEFAULT_FREE_CONNECTIONS));
        let query = health_of("pause_query = \"SELECT 1\"\npause_query_above = 2.5\n").unwrap();
        assert_eq!(
            (query.query.as_deref(), query.query_above),
            (Some("SELECT 1"), Some(2.5))
        );
        assert_eq!(query.lock_waiters, None);
    }

    #[test]
    fn bad_health_keys_name_their_line() {
        let err = health_of("pause_query_above = 3\n").unwrap_err();
        assert!(err.contains("4:") && err.contains("`pause_query`"), "{err}");
        let err = health_of("pause_lock_waiters = -1\n").unwrap_err();
        assert!(err.contains("4:") && err.contains("pause_lock_waiters"), "{err}");
    }

    #[test]
    fn health_with_a_single_connection_is_refused_at_its_max_connections_line() {
        let err = health_of("max_connections = 1\nhealth = true\n").unwrap_err();
        assert!(err.contains("tenants.toml:4:") && err.contains("at least 2"), "{err}");
        let err = health_of("pause_query = \"SELECT 1\"\npause_query_above = 2\nmax_connections = 1\n").unwrap_err();
        assert!(
            err.contains("tenants.toml:6:") && err.contains("max_connections"),
            "{err}"
        );
        // Without health, one connection is fine; with two, health is.
        assert!(health_of("max_connections = 1\n").unwrap().is_off());
        assert!(!health_of("max_connections = 2\nhealth = true\n").unwrap().is_off());
    }
}
