//! `http.load`: a load test as a step. Virtual users ramping through stages (each VU sends its
//! next request when the last one is answered, over reused connections), or a constant arrival
//! rate (requests started on a schedule, at most `max_vus` in flight; one that finds none free
//! is counted as dropped). Latencies go into an HDR histogram (microseconds, 3 significant
//! digits). Bounded by design: only the request the runbook names, and nothing after the last
//! stage (requests still in flight then get their timeout at most).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::{builder, client, header_map, transport_failure, HttpError, Request};

/// One stage of virtual users: from the previous stage's target (0 at first) to `target`,
/// linearly over `duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Virtual users through stages, each pausing `think` between its requests (k6's `sleep`).
    Users(Vec<Stage>, Duration),
    Rate {
        per_second: f64,
        duration: Duration,
        max_vus: u32,
    },
}

impl Shape {
    pub fn total(&self) -> Duration {
        match self {
            Shape::Users(stages, _) => stages.iter().map(|s| s.duration).sum(),
            Shape::Rate { duration, .. } => *duration,
        }
    }

    /// The virtual users wanted `at` into the test.
    fn users_at(stages: &[Stage], at: Duration) -> u32 {
        let mut from = 0f64;
        let mut start = Duration::ZERO;
        for s in stages {
            let end = start + s.duration;
            if at < end {
                let f = if s.duration.is_zero() { 1.0 } else { (at - start).as_secs_f64() / s.duration.as_secs_f64() };
                return (from + (f64::from(s.target) - from) * f).round() as u32;
            }
            from = f64::from(s.target);
            start = end;
        }
        0
    }
}

/// What the test measured.
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub dropped: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// The first few distinct causes of errors.
    pub causes: Vec<String>,
    pub elapsed: Duration,
    /// Latencies of answered requests, in microseconds.
    pub latency: Histogram<u64>,
    pub peak_users: u32,
}

impl Report {
    /// Failed requests, and requests a rate could not start (dropped), over all that were due.
    pub fn error_rate(&self) -> f64 {
        let due = self.requests + self.dropped;
        if due == 0 {
            0.0
        } else {
            (self.errors + self.dropped) as f64 / due as f64
        }
    }
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// A latency quantile in seconds.
    pub fn quantile(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e6
    }
}

/// A progress summary, every few seconds.
pub struct Progress {
    pub at: Duration,
    pub total: Duration,
    pub users: u32,
    pub per_second: f64,
    pub error_rate: f64,
    pub p95: f64,
}

struct Shared {
    requests: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    stats: Mutex<Stats>,
}

struct Stats {
    latency: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    causes: Vec<String>,
}

const MAX_CAUSES: usize = 5;

fn histogram() -> Result<Histogram<u64>, HttpError> {
    // 1 us to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| HttpError::Usage(format!("histogram: {e}")))
}

/// Each task keeps its own tally and adds it to the shared one every so many requests (and at
/// its end): one lock per request cost a fifth of the rate at 40,000 requests a second. The
/// tally is a few hundred bytes (latencies waiting, statuses seen), not a histogram of its own.
const FLUSH_EVERY: usize = 64;
/// And at least this often, so progress lines are current when users think between requests.
const FLUSH_AFTER: Duration = Duration::from_secs(1);

struct Local {
    latencies: Vec<u64>,
    statuses: Vec<(u16, u64)>,
    causes: Vec<String>,
    flushed: Instant,
}

impl Default for Local {
    fn default() -> Local {
        Local { latencies: Vec::new(), statuses: Vec::new(), causes: Vec::new(), flushed: Instant::now() }
    }
}

impl Stats {
    fn new() -> Result<Stats, HttpError> {
        Ok(Stats { latency: histogram()?, statuses: BTreeMap::new(), causes: vec![] })
    }

    fn cause(&mut self, cause: String) {
        if self.causes.len() < MAX_CAUSES && !self.causes.contains(&cause) {
            self.causes.push(cause);
        }
    }
}

impl Local {
    fn status(&mut self, status: u16) {
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((status, 1)),
        }
    }

    fn cause(&mut self, cause: String) {
        if self.causes.len() < MAX_CAUSES && !self.causes.contains(&cause) {
            self.causes.push(cause);
        }
    }

    fn flush(&mut self, shared: &Shared) {
        let mut all = shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        for us in self.latencies.drain(..) {
            let _ = all.latency.record(us);
        }
        for (status, n) in self.statuses.drain(..) {
            *all.statuses.entry(status).or_insert(0) += n;
        }
        for c in self.causes.drain(..) {
            all.cause(c);
        }
        self.flushed = Instant::now();
    }
}

/// The test's request sent straight over hyper's HTTP/1 client, each virtual user on a connection
/// of its own: reqwest assembles the request once (so its headers, query and body are exactly
/// those of every other call), then each send clones the parts. Plain http:// only; https, and a
/// redirect to follow, go through reqwest. Half the time of a request through reqwest was its
/// builder, timer and pool checkout.
struct Direct {
    addr: String,
    method: reqwest::Method,
    uri: hyper::Uri,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
    follow_redirects: bool,
    /// The target answered with a redirect to follow: reqwest sends from then on.
    redirects: std::sync::atomic::AtomicBool,
}

type Connection = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Direct {
    fn new(http: &reqwest::Client, req: &Request, headers: &HeaderMap) -> Option<Direct> {
        if req.url.scheme() != "http" || !req.url.username().is_empty() || req.url.password().is_some() {
            return None;
        }
        // reqwest sends through a proxy named in the environment; so must the test.
        if ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()))
        {
            return None;
        }
        let built = builder(http, req, headers).build().ok()?;
        let url = built.url();
        // (an IPv6 host is written in brackets, as both a Host header and a socket address want it)
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let addr = format!("{host}:{}", url.port_or_known_default()?);
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut headers = built.headers().clone();
        headers.entry(reqwest::header::HOST).or_insert(authority.parse().ok()?);
        headers
            .entry(reqwest::header::USER_AGENT)
            .or_insert(reqwest::header::HeaderValue::from_static(concat!("runbook/", env!("CARGO_PKG_VERSION"))));
        let body = match built.body() {
            None => Bytes::new(),
            Some(b) => Bytes::copy_from_slice(b.as_bytes()?),
        };
        Some(Direct {
            addr,
            method: built.method().clone(),
            uri: path_and_query.parse().ok()?,
            headers,
            body,
            timeout: req.timeout,
            follow_redirects: req.client.follow_redirects,
            redirects: false.into(),
        })
    }

    fn request(&self) -> hyper::Request<Full<Bytes>> {
        let mut r = hyper::Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }

    async fn connect(&self) -> Result<Connection, String> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// One request on the user's connection (opened, or opened again, as needed). A kept-alive
    /// connection that turns out closed before the request was written gets one more try on a
    /// new connection, as hyper's pool does (nothing reached the server); any other failure
    /// counts. `None`: a redirect reqwest must follow.
    async fn send(&self, conn: &mut Option<Connection>) -> Result<Option<u16>, String> {
        let attempt = async {
            let mut reused = true;
            loop {
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    *conn = Some(self.connect().await?);
                    reused = false;
                }
                let Some(c) = conn.as_mut() else { unreachable!("a connection was just set") };
                if c.ready().await.is_err() {
                    // Closed while idle: nothing was sent on it.
                    *conn = None;
                    if reused {
                        reused = false;
                        continue;
                    }
                    return Err("the connection closed before the request was sent".to_string());
                }
                let resp = match c.send_request(self.request()).await {
                    Ok(resp) => resp,
                    Err(e) => {
                        *conn = None;
                        // Canceled: hyper did not write the request (the connection was closing).
                        if reused && e.is_canceled() {
                            reused = false;
                            continue;
                        }
                        return Err(e.to_string());
                    }
                };
                let status = resp.status().as_u16();
                if let Err(e) = resp.into_body().collect().await {
                    *conn = None;
                    return Err(format!("reading the body: {e}"));
                }
                if self.follow_redirects && matches!(status, 301 | 302 | 303 | 307 | 308) {
                    // This target redirects: from now on its requests go through reqwest, which
                    // follows (this one is sent again there, once per virtual user at most).
                    self.redirects.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
                return Ok(Some(status));
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => {
                *conn = None;
                Err(format!("no answer within {}", crate::duration::human(self.timeout)))
            }
        }
    }
}

/// A virtual user's way to send: its own connection (the direct path), or reqwest's pool.
struct Sender {
    http: reqwest::Client,
    direct: Option<Arc<Direct>>,
    conn: Option<Connection>,
}

/// Sends one request of the test and records it in the task's own tally.
async fn one(sender: &mut Sender, req: &Request, headers: &HeaderMap, shared: &Shared, local: &mut Local) {
    let started = Instant::now();
    let direct = match &sender.direct {
        Some(d) if !d.redirects.load(Ordering::Relaxed) => d.send(&mut sender.conn).await,
        _ => Ok(None),
    };
    let outcome = match direct {
        Ok(Some(status)) => Ok(status),
        Err(cause) => Err(cause),
        Ok(None) => match builder(&sender.http, req, headers).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.bytes().await {
                    Ok(_) => Ok(status),
                    Err(e) => Err(format!("reading the body: {}", transport_failure(e, req.timeout).cause)),
                }
            }
            Err(e) => Err(transport_failure(e, req.timeout).cause),
        },
    };
    let micros = (started.elapsed().as_micros() as u64).max(1);
    shared.requests.fetch_add(1, Ordering::Relaxed);
    // Failed requests take their time too (a timeout is the slowest answer of all): leaving them
    // out would let a target that fails every request pass a latency threshold.
    local.latencies.push(micros);
    match outcome {
        Ok(status) => {
            local.status(status);
            if !req.expect.accepts(status) {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                local.cause(format!("status {}", super::status_line(status)));
            }
        }
        Err(cause) => {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            local.cause(cause);
        }
    }
    if local.latencies.len() >= FLUSH_EVERY || !local.causes.is_empty() || local.flushed.elapsed() >= FLUSH_AFTER {
        local.flush(shared);
    }
}

/// Runs the load test; `progress` is called every `every`.
pub async fn run(
    req: &Request,
    shape: &Shape,
    every: Duration,
    mut progress: impl FnMut(Progress),
) -> Result<Report, HttpError> {
    let http = client(&req.client).await?;
    let headers = header_map(&req.headers)?;
    let direct = Direct::new(&http, req, &headers).map(Arc::new);
    let shared = Arc::new(Shared {
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        stats: Mutex::new(Stats::new()?),
    });
    let req = Arc::new(req.clone());
    let headers = Arc::new(headers);
    let total = shape.total();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // Virtual users: the number wanted now; user i runs while i < wanted.
    let wanted = Arc::new(AtomicUsize::new(0));
    let mut vus: Vec<tokio::task::AbortHandle> = Vec::new();
    let mut peak = 0u32;
    let mut next_report = every;
    let mut last = (Duration::ZERO, 0u64);
    let tick = Duration::from_millis(50);
    let mut sent = 0u64;
    loop {
        let at = start.elapsed();
        if at >= total {
            break;
        }
        match shape {
            Shape::Users(stages, think) => {
                let think = *think;
                let want = Shape::users_at(stages, at);
                wanted.store(want as usize, Ordering::SeqCst);
                // User i runs while i < wanted; one past the target stops after its request in
                // hand, and its slot is started again when the target comes back up.
                for me in 0..want as usize {
                    if vus.get(me).is_some_and(|h: &tokio::task::AbortHandle| !h.is_finished()) {
                        continue;
                    }
                    let (req, headers, shared, wanted) = (req.clone(), headers.clone(), shared.clone(), wanted.clone());
                    let mut sender = Sender { http: http.clone(), direct: direct.clone(), conn: None };
                    let mut local = Local::default();
                    let handle = tasks.spawn(async move {
                        while me < wanted.load(Ordering::Relaxed) {
                            one(&mut sender, &req, &headers, &shared, &mut local).await;
                            if !think.is_zero() {
                                // Nothing waits in the tally while the user thinks (or is
                                // stopped at the end meanwhile).
                                local.flush(&shared);
                                tokio::time::sleep(think).await;
                            }
                        }
                        local.flush(&shared);
                    });
                    match vus.get_mut(me) {
                        Some(slot) => *slot = handle,
                        None => vus.push(handle),
                    }
                }
                peak = peak.max(want);
                while tasks.try_join_next().is_some() {}
                tokio::time::sleep(tick).await;
            }
            Shape::Rate { per_second, max_vus, .. } => {
                // Start every request due by now, then sleep until the next one is.
                let due = (at.as_secs_f64() * per_second).floor() as u64 + 1;
                while sent < due {
                    sent += 1;
                    while tasks.try_join_next().is_some() {}
                    if tasks.len() >= *max_vus as usize {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let (req, headers, shared) = (req.clone(), headers.clone(), shared.clone());
                    // One request per task: reqwest's pool keeps the connections between them.
                    let mut sender = Sender { http: http.clone(), direct: None, conn: None };
                    let mut local = Local::default();
                    tasks.spawn(async move {
                        one(&mut sender, &req, &headers, &shared, &mut local).await;
                        local.flush(&shared);
                    });
                }
                peak = peak.max(tasks.len() as u32);
                let next = Duration::try_from_secs_f64(sent as f64 / per_second).unwrap_or(total);
                tokio::time::sleep_until(start + next.min(total)).await;
            }
        }
        let at = start.elapsed();
        if at >= next_report && at < total {
            let requests = shared.requests.load(Ordering::Relaxed);
            let errors = shared.errors.load(Ordering::Relaxed);
            let window = (at - last.0).as_secs_f64().max(1e-9);
            let p95 = shared.stats.lock().map(|s| s.latency.value_at_quantile(0.95) as f64 / 1e6).unwrap_or(0.0);
            progress(Progress {
                at,
                total,
                users: match shape {
                    Shape::Users(..) => wanted.load(Ordering::SeqCst) as u32,
                    Shape::Rate { .. } => tasks.len() as u32,
                },
                per_second: (requests - last.1) as f64 / window,
                error_rate: if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
                p95,
            });
            last = (at, requests);
            next_report += every;
        }
    }
    // The end: no new request; those in flight get their timeout at most.
    wanted.store(0, Ordering::SeqCst);
    let elapsed = start.elapsed();
    let think = match shape {
        Shape::Users(_, think) => *think,
        Shape::Rate { .. } => Duration::ZERO,
    };
    let grace = tokio::time::sleep(req.timeout + think);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            done = tasks.join_next() => if done.is_none() { break },
            _ = &mut grace => { tasks.abort_all(); break }
        }
    }
    let stats = std::mem::replace(&mut *shared.stats.lock().unwrap_or_else(|p| p.into_inner()), Stats::new()?);
    Ok(Report {
        requests: shared.requests.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        dropped: shared.dropped.load(Ordering::Relaxed),
        statuses: stats.statuses,
        causes: stats.causes,
        elapsed,
        latency: stats.latency,
        peak_users: peak,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_ramp_linearly_from_one_stage_to_the_next() {
        let s = |secs, target| Stage { duration: Duration::from_secs(secs), target };
        let stages = [s(10, 100), s(10, 100), s(10, 0)];
        let at = |secs: f64| Shape::users_at(&stages, Duration::from_secs_f64(secs));
        assert_eq!((at(0.0), at(5.0), at(10.0), at(15.0), at(25.0), at(30.0)), (0, 50, 100, 100, 50, 0));
        assert_eq!(Shape::Users(stages.to_vec(), Duration::ZERO).total(), Duration::from_secs(30));
    }
}
