//! `tls`: a server's certificate (names, validity, serial, chain) read without requiring it to
//! validate, so an expired or self-signed certificate can still be inspected; and the one rustls
//! client configuration every TLS connection of the program uses (`http` included): the
//! system's trusted roots plus a private CA file when given, or, only when asked, none.
pub mod lua;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("ca '{path}': {cause}")]
    Ca { path: String, cause: String },
    #[error("invalid target '{0}': expected host:port, host (port 443) or https://host[:port]")]
    Target(String),
    #[error("cannot connect to {target}: {cause}")]
    Connect { target: String, cause: String },
    #[error("TLS handshake with {target} failed: {cause}")]
    Handshake { target: String, cause: String },
    #[error("{target}: no answer within {after}")]
    Timeout { target: String, after: String },
    #[error("{target}: {cause}")]
    Certificate { target: String, cause: String },
    #[error("{0}")]
    Config(String),
    #[error("{} of {total} hosts could not be checked: {}", .failures.len(), .failures.join("; "))]
    Unchecked { total: usize, failures: Vec<String> },
}

/// The crypto provider of every TLS connection (ring: no C toolchain beyond cc needed).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// The system's trusted roots (Debian's ca-certificates; `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured),
/// loaded once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("loading system CA certificates: {e}");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!("{added} system CA certificates loaded ({ignored} unparsable ignored)");
            Arc::new(store)
        })
        .clone()
}

/// The system roots, plus the certificates of a PEM file for a private CA.
pub fn roots(ca: Option<&Path>) -> Result<Arc<RootCertStore>, TlsError> {
    let base = system_roots();
    let Some(path) = ca else { return Ok(base) };
    let shown = path.display().to_string();
    let bad = |cause: String| TlsError::Ca { path: shown.clone(), cause };
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut store = (*base).clone();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
        store.add(cert).map_err(|e| bad(format!("unusable certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("no certificate in the file (expected PEM: -----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(Arc::new(store))
}

/// The client configuration of a connection: verified against [`roots`], or not verified at
/// all when `insecure` (handshake signatures are still checked).
pub fn client_config(insecure: bool, ca: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(Recorder::new(None)))
    } else {
        builder.with_root_certificates(roots(ca)?)
    };
    Ok(builder.with_no_client_auth())
}

/// A verifier that lets every handshake through but records the chain the server sent and
/// what the real verification (when there is one) said about it.
#[derive(Debug)]
struct Recorder {
    inner: Option<Arc<WebPkiServerVerifier>>,
    seen: Mutex<Option<Seen>>,
}

#[derive(Debug, Clone)]
struct Seen {
    chain: Vec<CertificateDer<'static>>,
    verdict: Result<(), rustls::Error>,
}

impl Recorder {
    fn new(inner: Option<Arc<WebPkiServerVerifier>>) -> Recorder {
        Recorder { inner, seen: Mutex::new(None) }
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = match &self.inner {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map(|_| ()),
            None => Err(rustls::Error::General("not verified".into())),
        };
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen { chain, verdict });
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Options of `tls.certificate` and `tls.check_expiry`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertOptions {
    /// Connect and handshake within this long (default 10s).
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    pub timeout: Option<Duration>,
    /// The name to ask for (SNI) and to verify, when it differs from the host connected to.
    pub server_name: Option<String>,
    /// A PEM file of a private CA to trust besides the system's roots.
    pub ca: Option<PathBuf>,
    /// `check_expiry` only: report certificates that expire within this many days (default 30).
    pub warn_days: Option<i64>,
}

/// What `tls.certificate` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    pub host: String,
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// Whole days until `not_after`, negative once expired.
    pub days_left: i64,
    /// Lowercase hex, no separators.
    pub serial: String,
    pub chain_length: usize,
    pub valid: bool,
    /// Why the certificate does not validate; absent (nil in Lua) when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `host:port`, `host` (port 443), `[v6]:port` or `https://host[:port]/...` to host and port.
pub fn parse_target(target: &str) -> Result<(String, u16), TlsError> {
    let bad = || TlsError::Target(target.to_string());
    let t = target.trim();
    let t = t.strip_prefix("https://").unwrap_or(t);
    let t = t.split(['/', '?', '#']).next().unwrap_or("");
    let t = t.rsplit_once('@').map(|(_, h)| h).unwrap_or(t);
    if t.is_empty() || t.contains("://") {
        return Err(bad());
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(bad()),
        }
    } else {
        match t.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return Err(bad()),
            None => (t, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => 443,
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Connects to `target`, completes a handshake whatever the certificate, and describes the
/// certificate the server presented.
pub async fn certificate(target: &str, opts: &CertOptions) -> Result<CertInfo, TlsError> {
    let (host, port) = parse_target(target)?;
    let shown = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let name = opts.server_name.clone().unwrap_or_else(|| host.clone());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| TlsError::Certificate { target: shown.clone(), cause: format!("invalid server name '{name}'") })?;
    let ca = opts.ca.clone();
    let roots = tokio::task::spawn_blocking(move || roots(ca.as_deref()))
        .await
        .map_err(|e| TlsError::Config(e.to_string()))??;
    let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider()).build().ok();
    let recorder = Arc::new(Recorder::new(inner));
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let timeout = opts.timeout.unwrap_or(Duration::from_secs(10));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| TlsError::Connect { target: shown.clone(), cause: e.to_string() })?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| TlsError::Handshake { target: shown.clone(), cause: e.to_string() })
    };
    let mut stream = tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| TlsError::Timeout { target: shown.clone(), after: crate::duration::human(timeout) })??;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    let seen = recorder.seen.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or_else(|| {
        TlsError::Certificate { target: shown.clone(), cause: "the server presented no certificate".into() }
    })?;
    describe(&shown, &name, &seen, roots.is_empty())
}

/// The certificates of `hosts` (checked 16 at a time) that expire within `warn_days` (expired
/// ones included), soonest first. A host that cannot be checked is an error: a check that could
/// not look must not pass.
pub async fn check_expiry(hosts: &[String], opts: &CertOptions) -> Result<Vec<CertInfo>, TlsError> {
    use futures_util::StreamExt;
    let warn_days = opts.warn_days.unwrap_or(30);
    let results: Vec<_> = futures_util::stream::iter(hosts).map(|h| certificate(h, opts)).buffered(16).collect().await;
    let mut expiring = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(info) if info.days_left < warn_days => expiring.push(info),
            Ok(_) => {}
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        return Err(TlsError::Unchecked { total: hosts.len(), failures });
    }
    expiring.sort_by_key(|i| i.days_left);
    Ok(expiring)
}

fn describe(target: &str, name: &str, seen: &Seen, no_roots: bool) -> Result<CertInfo, TlsError> {
    use x509_parser::prelude::*;
    let bad = |cause: String| TlsError::Certificate { target: target.to_string(), cause };
    let (_, cert) =
        X509Certificate::from_der(&seen.chain[0]).map_err(|e| bad(format!("unreadable certificate: {e}")))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(d.to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => sans.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()).to_string()),
                    16 => sans.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()).to_string()),
                    _ => {}
                },
                GeneralName::RFC822Name(m) => sans.push(format!("email:{m}")),
                GeneralName::URI(u) => sans.push(format!("uri:{u}")),
                _ => {}
            }
        }
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let now = chrono::Utc::now().timestamp();
    let rfc3339 = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| t.to_string())
    };
    let self_signed = cert.subject() == cert.issuer();
    let error = match &seen.verdict {
        Ok(()) => None,
        Err(e) => Some(explain(e, name, &sans, &rfc3339(not_after), self_signed, no_roots)),
    };
    Ok(CertInfo {
        host: target.to_string(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans,
        not_before: rfc3339(not_before),
        not_after: rfc3339(not_after),
        days_left: (not_after - now).div_euclid(86400),
        serial: serial_hex(cert.raw_serial()),
        chain_length: seen.chain.len(),
        valid: error.is_none(),
        error,
    })
}

/// The serial as `openssl x509 -serial` shows it (whole bytes, leading zeros kept), lowercase,
/// without DER's sign byte.
fn serial_hex(raw: &[u8]) -> String {
    let bytes = match raw {
        [0, next, ..] if next & 0x80 != 0 => &raw[1..],
        _ => raw,
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A CA certificate presented as a server's own (what `openssl req -x509` makes by default).
fn ca_as_end_entity(c: &CertificateError) -> bool {
    matches!(c, CertificateError::Other(o) if format!("{o:?}").contains("CaUsedAsEndEntity"))
}

/// What is wrong with a certificate, in general terms.
pub fn problem(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => "issuer not trusted (self-signed or a private CA: pass ca = \"path/to/ca.pem\")".into(),
        C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "certificate not valid for this host name".into(),
        C::Revoked => "certificate revoked".into(),
        C::BadSignature => "bad certificate signature".into(),
        c if ca_as_end_entity(c) => "the server presents a CA certificate as its own (as `openssl req -x509` makes by \
             default): trusting it with `ca` does not work; issue a server certificate from a CA, or use insecure = true"
            .into(),
        other => format!("invalid certificate: {other:?}"),
    }
}

/// Why the certificate `tls.certificate` read does not validate, with its particulars.
fn explain(
    e: &rustls::Error,
    name: &str,
    sans: &[String],
    not_after: &str,
    self_signed: bool,
    no_roots: bool,
) -> String {
    use CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => format!("certificate expired (not after {not_after})"),
            C::UnknownIssuer if self_signed => "self-signed certificate (not trusted)".into(),
            c if self_signed && ca_as_end_entity(c) => {
                "self-signed CA certificate used as the server's own (not trusted; `ca` cannot make it valid)".into()
            }
            C::UnknownIssuer if no_roots => {
                "issuer not trusted: no CA certificates on this system (install ca-certificates, or pass ca = path)"
                    .into()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("certificate not valid for '{name}' (it names: {})", sans.join(", "))
            }
            other => problem(other),
        },
        other => other.to_string(),
    }
}
