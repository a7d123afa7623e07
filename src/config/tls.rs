//! `sslmode` and the TLS connector it implies, built with rustls (ring provider, no process-wide default).
//!
//! Modes follow libpq: `disable` never uses TLS; `prefer` and `require` encrypt but do not authenticate the
//! server (any certificate is accepted, as libpq does without a root certificate); `verify-ca` checks the
//! certificate chain but not the host name; `verify-full` checks both. The roots are `ca_file`'s PEM
//! certificates if given, else the Mozilla roots from `webpki-roots` (libpq's `~/.postgresql/root.crt` is not
//! read). As in libpq, `require` with a `ca_file` behaves like `verify-ca`. A [`ClientCert`] (libpq's `sslcert` and
//! `sslkey`) is presented in every mode that uses TLS, for `cert` authentication; libpq's default
//! `~/.postgresql/postgresql.crt` is not read.

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::ProblemKind;

/// libpq's `sslmode`. The default is `prefer`, as in libpq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// The accepted spellings, for error messages.
pub(crate) const SSLMODE_CHOICES: &str = "disable, prefer, require, verify-ca, verify-full";

impl SslMode {
    /// Parses libpq's spelling (`verify-full`, ...). `allow` is not supported.
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres should negotiate; verification is the connector's job.
    pub fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The connector to pass to `tokio_postgres::Config::connect` (or a pool).
#[derive(Clone)]
pub enum TlsMode {
    NoTls,
    Rustls(MakeRustlsConnect),
}

impl fmt::Debug for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsMode::NoTls => f.write_str("NoTls"),
            TlsMode::Rustls(_) => f.write_str("Rustls"),
        }
    }
}

/// A client certificate (with its chain) and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ClientCert {
    /// Both files or neither; `names` are the two settings, for the error when only one is given.
    pub fn pair(
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        names: (&'static str, &'static str),
    ) -> Result<Option<ClientCert>, ProblemKind> {
        match (cert_file, key_file) {
            (None, None) => Ok(None),
            (Some(cert_file), Some(key_file)) => Ok(Some(ClientCert { cert_file, key_file })),
            _ => Err(ProblemKind::ClientCertPair {
                cert: names.0,
                key: names.1,
            }),
        }
    }
}

/// Builds the connector for `sslmode`, reading `ca_file` and the client certificate now.
///
/// Errors: a CA, certificate or key file is unreadable or holds nothing usable, or rustls rejects the
/// configuration (for example a key that does not match the certificate).
pub fn tls_mode(sslmode: SslMode, ca_file: Option<&Path>, client: Option<&ClientCert>) -> Result<TlsMode, ProblemKind> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let sslmode = match (sslmode, ca_file) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProblemKind::Tls { reason: e.to_string() })?;
    let builder = match sslmode {
        SslMode::Disable => return Ok(TlsMode::NoTls),
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { provider })),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(ca_file)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| ProblemKind::Tls { reason: e.to_string() })?;
            if sslmode == SslMode::VerifyFull {
                builder.with_webpki_verifier(webpki)
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(IgnoreHostname(webpki)))
            }
        }
    };
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let (chain, key) = read_client_cert(client)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ProblemKind::Tls { reason: e.to_string() })?
        }
    };
    Ok(TlsMode::Rustls(MakeRustlsConnect::new(config)))
}

fn open_client_file(what: &'static str, path: &Path) -> Result<BufReader<std::fs::File>, ProblemKind> {
    let file = std::fs::File::open(path).map_err(client_file_error(what, path))?;
    Ok(BufReader::new(file))
}

fn client_file_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ProblemKind + 'a {
    move |err| ProblemKind::ClientFile {
        what,
        path: path.to_path_buf(),
        err,
    }
}

fn read_client_cert(
    client: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ProblemKind> {
    let chain = rustls_pemfile::certs(&mut open_client_file("certificate", &client.cert_file)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(client_file_error("certificate", &client.cert_file))?;
    if chain.is_empty() {
        return Err(ProblemKind::ClientFileEmpty {
            what: "certificate",
            path: client.cert_file.clone(),
        });
    }
    let key = rustls_pemfile::private_key(&mut open_client_file("key", &client.key_file)?)
        .map_err(client_file_error("key", &client.key_file))?
        .ok_or_else(|| ProblemKind::ClientFileEmpty {
            what: "key",
            path: client.key_file.clone(),
        })?;
    Ok((chain, key))
}

fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, ProblemKind> {
    let Some(path) = ca_file else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let file = std::fs::File::open(path).map_err(|err| ProblemKind::CaFile {
        path: path.to_path_buf(),
        err,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let cert = cert.map_err(|err| ProblemKind::CaFile {
            path: path.to_path_buf(),
            err,
        })?;
        // A certificate webpki cannot parse is skipped; an empty store is reported below.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(ProblemKind::CaFileEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// `prefer`/`require`: encrypt without authenticating the server, but still check handshake signatures.
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full webpki check, except that a name mismatch is accepted. webpki verifies the chain before
/// the name, so a name error means the chain was already found valid.
#[derive(Debug)]
struct IgnoreHostname(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostname {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_every_mode() {
        assert!(matches!(tls_mode(SslMode::Disable, None, None), Ok(TlsMode::NoTls)));
        for mode in [
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert!(matches!(tls_mode(mode, None, None), Ok(TlsMode::Rustls(_))), "{mode}");
        }
    }

    #[test]
    fn ca_file_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = tls_mode(SslMode::VerifyFull, Some(&missing), None).unwrap_err();
        assert!(matches!(err, ProblemKind::CaFile { .. }), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = tls_mode(SslMode::Require, Some(&empty), None).unwrap_err();
        assert!(matches!(err, ProblemKind::CaFileEmpty { .. }), "{err}");
        assert!(matches!(
            tls_mode(SslMode::Disable, Some(&empty), None),
            Ok(TlsMode::NoTls)
        ));
    }

    #[test]
    fn client_cert_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let client = |cert: &Path, key: &Path| ClientCert {
            cert_file: cert.to_path_buf(),
            key_file: key.to_path_buf(),
        };
        let missing = dir.path().join("missing.pem");
        let err = tls_mode(SslMode::Require, None, Some(&client(&missing, &empty))).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read client certificate file `{}`: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let err = tls_mode(SslMode::Require, None, Some(&client(&empty, &empty))).unwrap_err();
        assert!(
            matches!(
                err,
                ProblemKind::ClientFileEmpty {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        let err = ClientCert::pair(Some(empty.clone()), None, ("sslcert", "sslkey")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a client certificate needs its key and a key its certificate: set both sslcert and sslkey"
        );
        // Without TLS there is nothing to present the certificate on, so nothing is read.
        assert!(matches!(
            tls_mode(SslMode::Disable, None, Some(&client(&missing, &missing))),
            Ok(TlsMode::NoTls)
        ));
    }

    #[test]
    fn sslmode_round_trips() {
        for s in SSLMODE_CHOICES.split(", ") {
            assert_eq!(SslMode::parse(s).map(SslMode::as_str), Some(s));
        }
        assert_eq!(SslMode::parse("allow"), None);
    }
}
