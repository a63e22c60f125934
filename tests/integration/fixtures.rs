//! HTTP and HTTPS fixtures the tests serve themselves on 127.0.0.1, one thread per connection,
//! and the certificates (rcgen) the HTTPS ones present.
//!
//! Routes: `/ok`, `/json`, `/echo` (the request as JSON), `/status/CODE`, `/slow/MS`,
//! `/health/KEY/N` (503 for the first N calls of KEY, then 200 `{"status":"healthy"}`),
//! `/flaky/KEY/N` (503 for the first N calls, then 200), `/redirect/N` (N hops, then /echo),
//! `/redirect-to/PORT/PATH` (to another origin), `/notjson`.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub struct HttpServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    pub tls: bool,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        serve(None)
    }

    pub fn start_tls(cert: &ServerCert) -> HttpServer {
        serve(Some(cert.config.clone()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", if self.tls { "https" } else { "http" }, self.addr)
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let counters = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
    let is_tls = tls.is_some();
    let recorded = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(tcp) = conn else { continue };
            let (tls, recorded, counters) = (tls.clone(), recorded.clone(), counters.clone());
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                match tls {
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else { return };
                        let mut stream = rustls::StreamOwned::new(conn, tcp);
                        handle(&mut stream, addr, &recorded, &counters);
                        stream.conn.send_close_notify();
                        let _ = stream.flush();
                    }
                    None => {
                        let mut tcp: TcpStream = tcp;
                        handle(&mut tcp, addr, &recorded, &counters);
                    }
                }
            });
        }
    });
    HttpServer { addr, requests, tls: is_tls }
}

fn handle<S: Read + Write>(
    stream: &mut S,
    addr: SocketAddr,
    recorded: &Mutex<Vec<Recorded>>,
    counters: &Mutex<HashMap<String, u32>>,
) {
    let mut reader = BufReader::new(&mut *stream);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = path.to_string();
    recorded.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        query: query.to_string(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let count = |key: &str| {
        let mut c = counters.lock().unwrap();
        let n = c.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    };
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut extra = Vec::<(String, String)>::new();
    let (status, ctype, content): (u16, &str, Vec<u8>) = match seg.as_slice() {
        ["ok"] => (200, "text/plain", b"ok".to_vec()),
        ["json"] => (
            200,
            "application/json",
            br#"{"status":"healthy","version":"1.2.3","checks":{"db":{"status":"up"}},"items":[{"state":"a"},{"state":"b"}],"none":null}"#.to_vec(),
        ),
        ["notjson"] => (200, "text/html", b"<html><body>not json</body></html>".to_vec()),
        // A service's Prometheus exposition: 5% errors, and a latency histogram whose p95 is 4/3 s.
        ["metrics"] => (
            200,
            "text/plain; version=0.0.4",
            b"# TYPE app_requests_total counter\napp_requests_total{status=\"200\"} 950\napp_requests_total{status=\"500\"} 50\n\
# TYPE app_latency_seconds histogram\napp_latency_seconds_bucket{le=\"0.5\"} 900\napp_latency_seconds_bucket{le=\"2\"} 990\n\
app_latency_seconds_bucket{le=\"+Inf\"} 1000\napp_latency_seconds_sum 300\napp_latency_seconds_count 1000\n"
                .to_vec(),
        ),
        ["echo"] => {
            let h: serde_json::Map<String, serde_json::Value> =
                headers.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            let v = serde_json::json!({"method": method, "path": path, "query": query, "headers": h,
                "body": String::from_utf8_lossy(&body)});
            (200, "application/json", v.to_string().into_bytes())
        }
        ["status", code] => {
            let code: u16 = code.parse().unwrap_or(500);
            let body = format!("failure body for {code}: {}", "x".repeat(1000));
            (code, "text/plain", body.into_bytes())
        }
        ["slow", ms] => {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(1000)));
            (200, "text/plain", b"slow".to_vec())
        }
        ["health", key, n] => {
            if count(&format!("health/{key}")) <= n.parse().unwrap_or(0) {
                (503, "application/json", br#"{"status":"starting"}"#.to_vec())
            } else {
                (200, "application/json", br#"{"status":"healthy","checks":{"db":"up"}}"#.to_vec())
            }
        }
        ["flaky", key, n] => {
            if count(&format!("flaky/{key}")) <= n.parse().unwrap_or(0) {
                (503, "text/plain", b"try later".to_vec())
            } else {
                (200, "text/plain", b"recovered".to_vec())
            }
        }
        ["redirect", n] => {
            let n: u32 = n.parse().unwrap_or(0);
            let to = if n == 0 { "/echo".to_string() } else { format!("/redirect/{}", n - 1) };
            extra.push(("Location".into(), to));
            (302, "text/plain", Vec::new())
        }
        ["redirect-to", port, rest @ ..] => {
            extra.push(("Location".into(), format!("http://{}:{port}/{}", addr.ip(), rest.join("/"))));
            (302, "text/plain", Vec::new())
        }
        ["redirect307-to", port, rest @ ..] => {
            extra.push(("Location".into(), format!("http://{}:{port}/{}", addr.ip(), rest.join("/"))));
            (307, "text/plain", Vec::new())
        }
        _ => (404, "text/plain", b"no such fixture".to_vec()),
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\nX-Fixture: a\r\nX-Fixture: b\r\n",
        reason(status),
        content.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = stream.write_all(&content);
    }
    let _ = stream.flush();
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The TLS configuration of an HTTPS fixture: its certificate (chain) and key.
pub struct ServerCert {
    pub config: Arc<rustls::ServerConfig>,
}

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "runbook test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf for localhost and 127.0.0.1, valid from `from_days` to `to_days` around now.
    pub fn leaf(&self, cn: &str, from_days: f64, to_days: f64, serial: u64) -> ServerCert {
        let (params, key) = leaf_params(cn, from_days, to_days, serial);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap();
        server_cert(vec![cert.der().clone(), ca_der], key)
    }
}

fn leaf_params(cn: &str, from_days: f64, to_days: f64, serial: u64) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.distinguished_name.push(DnType::OrganizationName, "Runbook Tests");
    let now = OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::seconds_f64(from_days * 86400.0);
    params.not_after = now + time::Duration::seconds_f64(to_days * 86400.0);
    params.serial_number = Some(serial.into());
    (params, key)
}

/// A self-signed certificate for localhost and 127.0.0.1; `ca` marks it CA:TRUE, as
/// `openssl req -x509` does.
pub fn self_signed(cn: &str, serial: u64) -> ServerCert {
    self_signed_as(cn, serial, false).0
}

/// A self-signed CA:TRUE certificate, and its PEM.
pub fn self_signed_ca(cn: &str, serial: u64) -> (ServerCert, String) {
    self_signed_as(cn, serial, true)
}

fn self_signed_as(cn: &str, serial: u64, ca: bool) -> (ServerCert, String) {
    let (mut params, key) = leaf_params(cn, -1.0, 90.0, serial);
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    let cert = params.self_signed(&key).unwrap();
    let pem = cert.pem();
    (server_cert(vec![cert.der().clone()], key), pem)
}

fn server_cert(chain: Vec<rustls::pki_types::CertificateDer<'static>>, key: KeyPair) -> ServerCert {
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .unwrap();
    ServerCert { config: Arc::new(config) }
}

use rustls::pki_types::pem::PemObject;

/// Steady traffic from the test: `per_second` GETs of `path` through `base` (an http://host:port
/// address), one connection each, until stopped; every answer's status is kept (0: no answer).
pub struct SteadyLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SteadyLoad {
    pub fn start(base: &str, path: &str, per_second: u32) -> SteadyLoad {
        let addr = base.trim_start_matches("http://").trim_end_matches('/').to_string();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let (s, st) = (stop.clone(), statuses.clone());
        let gap = Duration::from_secs_f64(1.0 / f64::from(per_second));
        let thread = std::thread::spawn(move || {
            let mut next = std::time::Instant::now();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                let status = (|| -> Option<u16> {
                    let mut c = TcpStream::connect(&addr).ok()?;
                    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                    c.write_all(request.as_bytes()).ok()?;
                    let mut answer = String::new();
                    c.read_to_string(&mut answer).ok()?;
                    answer.split(' ').nth(1)?.parse().ok()
                })()
                .unwrap_or(0);
                st.lock().unwrap().push(status);
                next += gap;
                if let Some(wait) = next.checked_duration_since(std::time::Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        SteadyLoad { stop, statuses, thread: Some(thread) }
    }

    /// Statuses so far.
    pub fn statuses(&self) -> Vec<u16> {
        self.statuses.lock().unwrap().clone()
    }

    /// Stops and returns every status.
    pub fn stop(mut self) -> Vec<u16> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.statuses()
    }
}

impl Drop for SteadyLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
