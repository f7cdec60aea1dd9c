//! TLS settings for `wss://`: server certificates, client trust roots and self-signed
//! development certificates.
//!
//! TLS runs on rustls 0.23 with the ring crypto provider. ring builds with the `cc` crate
//! alone, while aws-lc-rs, the rustls default, may also need CMake, so ring keeps the
//! build requirements of the workspace as they are. Servers offer `h2` and `http/1.1` over
//! ALPN, and clients offer the one protocol that `ClientConfig::http_version` selects.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

pub use rustls;
pub use tokio_rustls::TlsAcceptor;

pub use self::reload::ReloadableCert;
use crate::Error;

mod reload;

/// ALPN protocol ID of HTTP/1.1.
pub(crate) const ALPN_HTTP1: &[u8] = b"http/1.1";

/// ALPN protocol ID of HTTP/2 over TLS.
pub(crate) const ALPN_HTTP2: &[u8] = b"h2";

/// Host names and addresses that [`self_signed_localhost`] puts in the certificate.
pub const LOCALHOST_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate from a PEM file, in file order.
///
/// # Errors
///
/// [`Error::TlsConfig`] if the file cannot be read, is not valid PEM, or contains no
/// certificate.
pub fn read_certs_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            Error::TlsConfig(format!(
                "failed to read certificates from {}: {err}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::TlsConfig(format!(
            "{} contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
///
/// # Errors
///
/// [`Error::TlsConfig`] if the file cannot be read or contains no private key.
pub fn read_key_pem(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_file(path).map_err(|err| {
        Error::TlsConfig(format!(
            "failed to read a private key from {}: {err}",
            path.display()
        ))
    })
}

/// Builds a rustls server configuration that presents `cert_chain` (leaf first) signed by
/// `key`, requests no client certificate and offers ALPN `h2` and `http/1.1`, in that order of
/// preference.
///
/// # Errors
///
/// [`Error::TlsConfig`] if the key does not match the certificate or has an unsupported
/// type.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::TlsConfig(err.to_string()))?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(|err| {
            Error::TlsConfig(format!(
                "invalid server certificate or key (check that the key belongs to the \
                 certificate): {err}"
            ))
        })?;
    config.alpn_protocols = vec![ALPN_HTTP2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Builds a rustls server configuration that gets the certificate of each handshake from
/// `resolver`, such as a [`ReloadableCert`], requests no client certificate and offers
/// ALPN `h2` and `http/1.1`, like [`server_config`].
///
/// # Errors
///
/// [`Error::TlsConfig`] if the crypto provider supports none of the default protocol
/// versions.
pub fn server_config_with_resolver(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::TlsConfig(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Builds a [`TlsAcceptor`] from a PEM certificate chain file and a PEM private key file.
///
/// # Errors
///
/// The errors of [`read_certs_pem`], [`read_key_pem`] and [`server_config`].
pub fn acceptor_from_pem_files(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, Error> {
    let certs = read_certs_pem(cert_path)?;
    let key = read_key_pem(key_path)?;
    Ok(TlsAcceptor::from(server_config(certs, key)?))
}

/// A self-signed certificate and its private key, for development.
pub struct SelfSigned {
    /// The certificate in PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8) in PEM.
    pub key_pem: String,
    /// The certificate in DER, for [`server_config`] or [`ClientTls::ca_certs`].
    pub cert_der: CertificateDer<'static>,
    /// The private key in DER.
    pub key_der: PrivateKeyDer<'static>,
}

impl SelfSigned {
    /// Returns the SHA-256 fingerprint of the DER certificate as colon-separated
    /// upper-case hex, the form that `openssl x509 -fingerprint -sha256` prints.
    pub fn sha256_fingerprint(&self) -> String {
        sha256_fingerprint(&self.cert_der)
    }

    /// Builds a [`TlsAcceptor`] that presents this certificate.
    ///
    /// # Errors
    ///
    /// The errors of [`server_config`].
    pub fn acceptor(&self) -> Result<TlsAcceptor, Error> {
        let config = server_config(vec![self.cert_der.clone()], self.key_der.clone_key())?;
        Ok(TlsAcceptor::from(config))
    }
}

impl std::fmt::Debug for SelfSigned {
    // The private key is left out so that it never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned")
            .field("sha256_fingerprint", &self.sha256_fingerprint())
            .finish_non_exhaustive()
    }
}

/// Generates a self-signed ECDSA P-256 certificate valid for `localhost`, `127.0.0.1` and
/// `::1`, with a new key pair on every call.
///
/// # Errors
///
/// [`Error::TlsConfig`] if key generation or signing fails.
pub fn self_signed_localhost() -> Result<SelfSigned, Error> {
    let names: Vec<String> = LOCALHOST_NAMES
        .iter()
        .map(|name| name.to_string())
        .collect();
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|err| Error::TlsConfig(format!("failed to generate a certificate: {err}")))?;
    let key_der = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|err| Error::TlsConfig(format!("generated key is invalid: {err}")))?;
    Ok(SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
        cert_der: certified.cert.der().clone(),
        key_der,
    })
}

/// Returns the SHA-256 fingerprint of a DER certificate as colon-separated upper-case hex.
pub fn sha256_fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = String::with_capacity(digest.as_ref().len() * 3);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

/// TLS settings of a client, used for `wss://` URLs.
///
/// By default the server certificate is verified against the Mozilla root certificates
/// bundled by the `webpki-roots` crate, and the host name of the URL must match it.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// Extra trusted root certificates, for servers with a private CA or a self-signed
    /// certificate. Empty by default. Add a PEM file with [`ClientTls::add_ca_pem_file`].
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// Whether to trust the bundled Mozilla roots from `webpki-roots`. Default: `true`.
    pub webpki_roots: bool,
    /// Accept any server certificate, without checking its issuer, validity period or host
    /// name. The handshake signature is still checked, but anyone on the network path can
    /// impersonate the server, so use this only against a development server. Default:
    /// `false`.
    pub dangerous_accept_any_certificate: bool,
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls {
            ca_certs: Vec::new(),
            webpki_roots: true,
            dangerous_accept_any_certificate: false,
        }
    }
}

impl ClientTls {
    /// Adds every certificate in a PEM file to [`ClientTls::ca_certs`].
    ///
    /// # Errors
    ///
    /// The errors of [`read_certs_pem`].
    pub fn add_ca_pem_file(&mut self, path: &Path) -> Result<(), Error> {
        self.ca_certs.extend(read_certs_pem(path)?);
        Ok(())
    }

    /// Builds the rustls client configuration, offering the ALPN protocol ID `alpn`.
    ///
    /// NOTE: this builds the root store on every call, so each `wss://` connect pays for
    /// it. The cost has not been measured.
    pub(crate) fn rustls_config(&self, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, Error> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| Error::TlsConfig(err.to_string()))?;
        let mut config = if self.dangerous_accept_any_certificate {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            if self.webpki_roots {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            for cert in &self.ca_certs {
                roots.add(cert.clone()).map_err(|err| {
                    Error::TlsConfig(format!(
                        "invalid CA certificate in ClientTls::ca_certs: {err}"
                    ))
                })?;
            }
            if roots.is_empty() {
                return Err(Error::TlsConfig(
                    "no trusted root certificates: set ClientTls::webpki_roots or add \
                     ClientTls::ca_certs"
                        .to_owned(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Parses the host of a URL as a TLS server name: a DNS name or an IP address.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned()).map_err(|err| {
        Error::Url(format!(
            "host {host:?} is not a valid TLS server name: {err}"
        ))
    })
}

/// Certificate verifier of [`ClientTls::dangerous_accept_any_certificate`]: accepts every
/// certificate but still checks the handshake signatures against it.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
