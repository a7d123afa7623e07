//! TLS against a live server: a second throwaway cluster (`scripts/pg-cluster` with `FLOTILLA_PG_TLS_DIR`) whose
//! certificate is signed by a CA made for this run, which rejects TCP connections without TLS, and whose role
//! `flotilla_cert` logs in only with a client certificate. Every `sslmode` and client certificates are tried
//! through the real binary, single-database and fleet, and a revision records what `pg_stat_ssl` says about its
//! own connection.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::harness::{own_cluster_dir, pg_cluster, psql, start_own_cluster, Cmd, TempProject};
use crate::single_support::assert_contains;

const PROBE: &str = "-- revision: t1\n-- down_revision:\n\n-- flotilla:upgrade\n\
    CREATE TABLE tls_probe AS SELECT ssl, version, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid();\n\n\
    -- flotilla:downgrade\nDROP TABLE tls_probe;\n";

/// The TLS cluster, made afresh and destroyed when dropped (also when a check fails).
struct TlsServer {
    dir: PathBuf,
    port: u16,
    certs: PathBuf,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = own_cluster_dir("flotilla-tls-pg");
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        write_certificates(&certs);
        let url = start_own_cluster(&dir, &[("FLOTILLA_PG_TLS_DIR", certs.as_path())]);
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {url:?}"));
        TlsServer { dir, port, certs }
    }

    /// A url of database `db` on `host` with the query `params`.
    fn url(&self, host: &str, db: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/{db}{params}", self.port)
    }

    fn ca(&self, name: &str) -> String {
        self.certs.join(name).display().to_string()
    }

    /// psql over TLS (libpq's `require`), as the checks' own view of the server.
    fn psql(&self, db: &str, sql: &str) -> String {
        let mut cmd: Cmd = psql();
        cmd.args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.url("127.0.0.1", db, "?sslmode=require"));
        cmd.assert_success().stdout.trim().to_string()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        pg_cluster("destroy", &self.dir);
    }
}

/// `ca.pem` signs `server.crt` (valid for `localhost` only) and `client.crt` (for role `flotilla_cert`);
/// `other-ca.pem` is a CA that signed nothing here.
fn write_certificates(dir: &Path) {
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let issuer = ca("flotilla test CA");
    let other = ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let server = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), issuer.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "flotilla_cert");
    let client = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("client.crt"), client.pem()).unwrap();
    std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();
}

#[test]
fn every_sslmode_against_a_server_that_requires_tls() {
    let server = TlsServer::start();
    let project = TempProject::with_revisions("", &[("t1.sql", PROBE)]);
    let ca = server.ca("ca.pem");
    let other = server.ca("other-ca.pem");

    // (database, host, url parameters): each of these reaches the server over TLS.
    let good = [
        ("tls_require", "127.0.0.1", "?sslmode=require".to_string()),
        ("tls_prefer", "127.0.0.1", String::new()),
        (
            "tls_verify_ca",
            "127.0.0.1",
            format!("?sslmode=verify-ca&sslrootcert={ca}"),
        ),
        (
            "tls_verify_full",
            "localhost",
            format!("?sslmode=verify-full&sslrootcert={ca}"),
        ),
    ];
    for (db, host, params) in &good {
        server.psql("postgres", &format!("CREATE DATABASE {db}"));
        let url = server.url(host, db, params);
        let out = project.flotilla().args(["--url", &url, "upgrade", "head"]).output();
        assert_eq!(out.code(), Some(0), "{url}\n{}", out.report());
        assert_eq!(server.psql(db, "SELECT ssl FROM tls_probe"), "t", "{url}");
        assert!(server.psql(db, "SELECT version FROM tls_probe").starts_with("TLS"));
    }

    // Each of these must fail to connect, saying why, and change nothing.
    let bad = [
        ("127.0.0.1", "?sslmode=disable".to_string(), "no encryption"),
        (
            "127.0.0.1",
            format!("?sslmode=verify-full&sslrootcert={ca}"),
            "not valid for name",
        ),
        (
            "localhost",
            format!("?sslmode=verify-full&sslrootcert={other}"),
            "UnknownIssuer",
        ),
        ("localhost", "?sslmode=verify-full".to_string(), "UnknownIssuer"),
        // verify-ca ignores only the name, never the chain; require with a root certificate is verify-ca.
        (
            "127.0.0.1",
            format!("?sslmode=verify-ca&sslrootcert={other}"),
            "UnknownIssuer",
        ),
        (
            "127.0.0.1",
            format!("?sslmode=require&sslrootcert={other}"),
            "UnknownIssuer",
        ),
    ];
    server.psql("postgres", "CREATE DATABASE tls_refused");
    for (host, params, why) in &bad {
        let url = server.url(host, "tls_refused", params);
        let out = project.flotilla().args(["--url", &url, "upgrade", "head"]).output();
        assert_eq!(out.code(), Some(1), "{url}\n{}", out.report());
        assert_contains(&out.stderr, &["could not connect", why], &out.report());
    }
    assert_eq!(
        server.psql(
            "tls_refused",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );

    // Certificate authentication: the role's connections need the client certificate.
    server.psql("postgres", "CREATE ROLE flotilla_cert LOGIN");
    for db in ["tls_cert", "tls_fleet", "tls_fleet_db"] {
        server.psql("postgres", &format!("CREATE DATABASE {db} OWNER flotilla_cert"));
    }
    let (cert, key) = (server.ca("client.crt"), server.ca("client.key"));
    let url = |params: &str| {
        format!(
            "postgres://flotilla_cert@localhost:{}/tls_cert?sslmode=verify-full&sslrootcert={ca}{params}",
            server.port
        )
    };
    let out = project.flotilla().args(["--url", &url(""), "upgrade", "head"]).output();
    assert_eq!(out.code(), Some(1), "{}", out.report());
    assert_contains(&out.stderr, &["could not connect", "certificate"], &out.report());
    let with_cert = url(&format!("&sslcert={cert}&sslkey={key}"));
    project
        .flotilla()
        .args(["--url", &with_cert, "upgrade", "head"])
        .assert_success();
    assert_eq!(
        server.psql("tls_cert", "SELECT ssl::text || ' ' || client_dn FROM tls_probe"),
        "true /CN=flotilla_cert"
    );
    let out = project
        .flotilla()
        .args(["--url", &url(&format!("&sslcert={cert}")), "current"])
        .env("HOME", project.path())
        .output();
    assert_eq!(out.code(), Some(2), "{}", out.report());
    // As libpq, the certificate's key defaults to ~/.postgresql/postgresql.key, which is not there.
    assert_contains(
        &out.stderr,
        &["cannot read client key file", ".postgresql/postgresql.key"],
        &out.report(),
    );

    // A fleet over verified TLS with the client certificate from the tenants file: pooled connections for
    // schema tenants, direct ones for a database tenant.
    server.psql(
        "tls_fleet",
        "CREATE SCHEMA s1 AUTHORIZATION flotilla_cert; CREATE SCHEMA s2 AUTHORIZATION flotilla_cert",
    );
    let tenants = format!(
        "[[servers]]\nname = \"tls\"\nurl = \"postgres://flotilla_cert@localhost:{}/tls_fleet\"\n\
         sslmode = \"verify-full\"\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\n\
         [[tenants]]\nid = \"s1\"\nserver = \"tls\"\nschema = \"s1\"\n\n\
         [[tenants]]\nid = \"s2\"\nserver = \"tls\"\nschema = \"s2\"\n\n\
         [[tenants]]\nid = \"d1\"\nserver = \"tls\"\ndatabase = \"tls_fleet_db\"\n",
        server.port
    );
    let tenants_file = project.write("tenants.toml", &tenants);
    let out = project
        .flotilla()
        .args(["fleet", "upgrade", "head", "--progress", "none", "--tenants"])
        .arg(&tenants_file)
        .arg("--ledger")
        .arg(project.path().join("ledger.db"))
        .output();
    assert_eq!(out.code(), Some(0), "{}", out.report());
    for (db, table) in [
        ("tls_fleet", "s1.tls_probe"),
        ("tls_fleet", "s2.tls_probe"),
        ("tls_fleet_db", "tls_probe"),
    ] {
        let probe = format!("SELECT ssl::text || ' ' || client_dn FROM {table}");
        assert_eq!(server.psql(db, &probe), "true /CN=flotilla_cert", "{table}");
    }
}
