//! HTTPS: the rustls configuration (HTTP/2 and HTTP/1.1 by ALPN) and the
//! certificate it serves, reloaded without a restart. A reload swaps the
//! certificate for new handshakes only; open connections keep theirs. It
//! happens on SIGHUP and when the certificate or key file changes (checked
//! every second); a pair that does not load or does not match keeps the old
//! one in service and is logged.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::ServerError;

/// How often the files are checked for a change.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where the certificate chain and key are, and the one in service.
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Certificates {
    /// Loads the pair; a start-up error names the file and the problem.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificates>, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(cert, key, &provider).map_err(ServerError::Startup)?;
        Ok(Arc::new(Certificates {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// The acceptor for HTTPS connections: TLS 1.2 and 1.3, `h2` preferred
    /// over `http/1.1`.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, ServerError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ServerError::Startup(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Loads the files again; on failure the certificate in service stays.
    pub fn reload(&self) -> Result<(), String> {
        let pair = read_pair(&self.cert, &self.key, &self.provider)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// Reloads on SIGHUP and whenever either file changes, until the
    /// process ends.
    pub async fn watch(self: Arc<Self>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; certificates reload on file changes only");
                None
            }
        };
        let mut seen = self.stamp();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
                _ = tick.tick() => {
                    let now = self.stamp();
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "a changed file"
                }
            };
            match self.reload() {
                Ok(()) => {
                    metrics::counter!("skewless_tls_reloads_total", "result" => "ok").increment(1);
                    tracing::info!(cert = %self.cert.display(), reason = why, "TLS certificate reloaded");
                }
                Err(e) => {
                    metrics::counter!("skewless_tls_reloads_total", "result" => "failed")
                        .increment(1);
                    tracing::error!(reason = why, error = %e, "TLS certificate not reloaded; the previous one stays in service");
                }
            }
        }
    }

    /// What identifies the files' current contents without reading them.
    fn stamp(&self) -> [Option<(SystemTime, u64, u64)>; 2] {
        use std::os::unix::fs::MetadataExt;
        [&self.cert, &self.key].map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len(), m.ino()))
        })
    }
}

/// Reads and checks a PEM certificate chain and its private key.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {} holds no PEM certificate",
            cert.display()
        ));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        format!(
            "TLS key {} does not fit certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn loads_a_pair_and_refuses_bad_ones_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let (_, other_key) = write_pair(dir.path(), "b");
        let certs = Certificates::load(&cert, &key).unwrap();
        let served = certs.current.load_full();

        let err = Certificates::load(&cert, &other_key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit certificate"), "{err}");
        let err = Certificates::load(&dir.path().join("nope.pem"), &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.pem"), "{err}");
        std::fs::write(dir.path().join("empty.pem"), "not pem").unwrap();
        let err = Certificates::load(&dir.path().join("empty.pem"), &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");

        // A failed reload keeps the certificate in service.
        std::fs::copy(&other_key, &key).unwrap();
        assert!(certs.reload().is_err());
        assert!(Arc::ptr_eq(&served, &certs.current.load_full()));
    }
}
