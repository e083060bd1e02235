//! TLS for PostgreSQL connections with libpq's `sslmode` semantics, on rustls.
//!
//! - `allow`, `prefer`, `require`: encrypted, certificate not checked (what
//!   libpq does; providers such as Railway serve self-signed certificates).
//!   `require` with an explicit `sslrootcert` checks the chain, as libpq does.
//! - `verify-ca`: the chain must lead to a trusted root; the host name is not
//!   compared.
//! - `verify-full`: chain and host name.
//!
//! Roots come from `sslrootcert=FILE`, `sslrootcert=system` (the operating
//! system's store) or, as libpq, `~/.postgresql/root.crt`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use shipsafe_config::{ConnInfo, RootCert, SslMode};

/// Builds the rustls client configuration a connection in `info`'s mode needs.
/// Errors are about the configuration (a missing or unreadable certificate).
pub fn client_config(info: &ConnInfo) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let check = match (info.sslmode, &info.sslrootcert) {
        (SslMode::VerifyFull, _) => Check::ChainAndName,
        (SslMode::VerifyCa, _) => Check::Chain,
        // libpq: require with a root certificate given behaves as verify-ca.
        (SslMode::Require, Some(_)) => Check::Chain,
        _ => Check::Nothing,
    };
    let inner = match check {
        Check::Nothing => None,
        Check::Chain | Check::ChainAndName => {
            let roots = root_store(info)?;
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("cannot use the root certificates: {e}"))?,
            )
        }
    };
    let verifier = Arc::new(Verifier {
        inner,
        check_name: check == Check::ChainAndName,
        provider: provider.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&info.sslcert, &info.sslkey) {
        (Some(cert), key) => {
            let key_path = key.clone().unwrap_or_else(|| {
                // libpq's default key beside its default certificate.
                default_pg_file("postgresql.key")
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            });
            let chain = read_certs(Path::new(cert), "sslcert")?;
            let key = PrivateKeyDer::from_pem_file(&key_path)
                .map_err(|e| format!("cannot read the client key sslkey={key_path}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not fit: {e}"))
        }
        (None, Some(_)) => Err("sslkey is set without sslcert".into()),
        (None, None) => Ok(builder.with_no_client_auth()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

fn default_pg_file(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql").join(name))
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {what}={}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what}={} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

fn root_store(info: &ConnInfo) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match &info.sslrootcert {
        Some(RootCert::File(f)) => {
            for c in read_certs(Path::new(f), "sslrootcert")? {
                roots
                    .add(c)
                    .map_err(|e| format!("sslrootcert={f}: unusable certificate: {e}"))?;
            }
        }
        Some(RootCert::System) => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "sslrootcert=system: the system trust store holds no certificate (Debian: apt-get install ca-certificates)".into(),
                );
            }
        }
        None => {
            let default = default_pg_file("root.crt").filter(|p| p.is_file()).ok_or_else(|| {
                format!(
                    "sslmode={} checks the server's certificate, but no root certificate is given: add sslrootcert=/path/to/ca.pem to the URL (or sslrootcert=system for a publicly trusted certificate)",
                    info.sslmode.as_str()
                )
            })?;
            for c in read_certs(&default, "sslrootcert")? {
                let _ = roots.add(c);
            }
        }
    }
    Ok(roots)
}

/// Checks the server certificate as much as the mode asks, and always checks
/// the handshake signatures (so the peer holds the certificate's key).
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the chain first: a name error means the chain held.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
