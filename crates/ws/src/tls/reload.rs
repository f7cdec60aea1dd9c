//! A server certificate that is read from PEM files and can be replaced while the server
//! runs, for certificate renewal without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{provider, read_certs_pem, read_key_pem, sha256_fingerprint};
use crate::Error;

/// Certificate chain and private key of a TLS server, read from PEM files.
///
/// Build the rustls configuration with [`super::server_config_with_resolver`], then call
/// [`ReloadableCert::reload`] (for example on SIGHUP) after the files were replaced. New
/// TLS handshakes present the new certificate, and established connections keep running
/// on the session keys they already agreed.
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Reads the certificate chain and key from PEM files.
    ///
    /// # Errors
    ///
    /// [`Error::TlsConfig`] if a file cannot be read or parsed, or the key does not belong
    /// to the first certificate.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, Error> {
        let certified = load(cert_path, key_path)?;
        Ok(Arc::new(ReloadableCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(certified)),
        }))
    }

    /// Reads both files again and, if they are valid, presents the new certificate on
    /// every TLS handshake from now on.
    ///
    /// # Errors
    ///
    /// The errors of [`ReloadableCert::from_pem_files`]. The current certificate then stays
    /// in use, so a half-written file never takes the server down.
    pub fn reload(&self) -> Result<(), Error> {
        let certified = load(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        Ok(())
    }

    /// Returns the SHA-256 fingerprint of the end-entity certificate in use.
    pub fn fingerprint(&self) -> String {
        let current = self.current();
        match current.cert.first() {
            Some(cert) => sha256_fingerprint(cert),
            None => String::new(),
        }
    }

    /// Returns the path of the certificate chain file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, Error> {
    let certs = read_certs_pem(cert_path)?;
    let key = read_key_pem(key_path)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|err| {
        Error::TlsConfig(format!(
            "invalid certificate {} or key {} (check that the key belongs to the \
             certificate): {err}",
            cert_path.display(),
            key_path.display()
        ))
    })
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for ReloadableCert {
    // The key is left out so that it never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("sha256_fingerprint", &self.fingerprint())
            .finish()
    }
}
