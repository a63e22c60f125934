//! `ssh`: remote commands and SFTP transfers through libssh2 (the ssh2 crate). Every blocking
//! libssh2 call runs on tokio's blocking pool; a session serves one operation at a time.
//!
//! A remote command runs inside a small POSIX sh wrapper that reads the command, its working
//! directory and its environment from the channel's stdin (so env works against a stock sshd,
//! which accepts only LANG/LC_* through the protocol, and nothing of it shows in the remote
//! process list), starts it in its own session (`setsid`) and records its pid, so a timeout
//! can kill the whole remote process group from a second channel.
pub mod fanout;
pub mod inventory;
pub mod lua;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, HostKeyType, KnownHostFileKind};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to {target}: {cause}")]
    Connect { target: String, cause: String },
    #[error("{target}: host key verification failed: {cause}")]
    HostKey { target: String, cause: String },
    #[error("{target}: authentication failed for user '{user}' (tried: {tried})")]
    Auth { target: String, user: String, tried: String },
    #[error("{target}: {cause}")]
    Remote { target: String, cause: String },
    #[error("{target}: `{command}` still running after {after}; {fate}")]
    Timeout { target: String, command: String, after: String, fate: String },
    #[error("{target}: `{command}` exited with code {code}{}", stderr_suffix(.stderr))]
    Exit { target: String, command: String, code: i32, stderr: String },
    #[error("{target}: {what}: checksum mismatch (sent {local}, remote has {remote})")]
    Checksum { target: String, what: String, local: String, remote: String },
}

fn stderr_suffix(stderr: &str) -> String {
    let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    match last.len() {
        0 => String::new(),
        n => format!(": {}", last[n.saturating_sub(3)..].join(" | ")),
    }
}

/// What to do with a host key that known_hosts does not vouch for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Only keys recorded in known_hosts (OpenSSH's default for scripts).
    #[default]
    Strict,
    /// Trust on first use: an unknown host's key is recorded; a changed key is still refused.
    AcceptNew,
    /// No check at all (logged as a warning).
    Off,
}

/// A private key: a file, or the text of one (a secret).
#[derive(Clone)]
pub enum Key {
    File(PathBuf),
    Text(String),
}

/// Everything a connection needs, settled from the call, the inventory and the defaults.
#[derive(Clone)]
pub struct ConnectSpec {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub key: Option<Key>,
    pub passphrase: Option<String>,
    pub password: Option<String>,
    pub agent: bool,
    pub known_hosts: PathBuf,
    pub host_key: HostKeyPolicy,
    pub timeout: Duration,
}

impl ConnectSpec {
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            format!("{}@{}:{}", self.user, self.host, self.port)
        }
    }
    /// The name known_hosts files use for this host.
    fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// `host`, `host:port`, `user@host[:port]`, `[v6]:port` to (user, host, port).
pub fn parse_spec(spec: &str) -> Result<(Option<String>, String, Option<u16>), SshError> {
    let bad = || SshError::Usage(format!("invalid host '{spec}': expected host, host:port or user@host:port"));
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(bad()),
        None => (None, spec),
    };
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad()),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => (rest, None), // a bare IPv6 address
            None => (rest, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(bad());
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?),
        None => None,
    };
    Ok((user, host.to_string(), port))
}

/// An open, authenticated session.
pub struct Session {
    /// The marker of the last command run here: a new one in a rerun looks for orphans first.
    pub marker: std::sync::Mutex<String>,
    sess: ssh2::Session,
    /// The connection's socket, polled while libssh2 would block.
    fd: std::os::unix::io::RawFd,
    pub target: String,
    /// One operation at a time: libssh2's blocking mode is per session.
    busy: Arc<tokio::sync::Mutex<()>>,
}

/// OpenSSH's `SHA256:<base64, no padding>` fingerprint of a raw public key.
pub fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(key)))
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// What the host-key check decided, for the log.
pub enum HostKeyNote {
    Verified,
    Recorded { fingerprint: String, file: PathBuf },
    Unchecked { fingerprint: String },
}

impl Session {
    /// Connects, checks the host key, and authenticates.
    pub async fn connect(spec: ConnectSpec) -> Result<(Session, HostKeyNote), SshError> {
        tokio::task::spawn_blocking(move || Session::connect_blocking(&spec))
            .await
            .map_err(|e| SshError::Usage(format!("ssh connect: {e}")))?
    }

    fn connect_blocking(spec: &ConnectSpec) -> Result<(Session, HostKeyNote), SshError> {
        let target = spec.target();
        let conn_err = |cause: String| SshError::Connect { target: target.clone(), cause };
        let addrs: Vec<_> = (spec.host.as_str(), spec.port)
            .to_socket_addrs()
            .map_err(|e| conn_err(format!("cannot resolve {}: {e}", spec.host)))?
            .collect();
        let mut last = String::from("no address");
        let mut tcp = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, spec.timeout) {
                Ok(t) => {
                    tcp = Some(t);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let tcp = tcp.ok_or_else(|| conn_err(last))?;
        let _ = tcp.set_nodelay(true);
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&tcp);
        let mut sess = ssh2::Session::new().map_err(|e| conn_err(e.to_string()))?;
        sess.set_tcp_stream(tcp);
        sess.set_timeout(spec.timeout.as_millis().min(u32::MAX as u128) as u32);
        // Ask for a key of a type known_hosts holds for this host (as OpenSSH does): a server
        // with several host keys would otherwise offer one we cannot check.
        let known = recorded_key_types(&spec.known_hosts, &spec.known_hosts_name());
        if spec.host_key != HostKeyPolicy::Off && !known.is_empty() {
            let _ = sess.method_pref(ssh2::MethodType::HostKey, &known.join(","));
        }
        sess.handshake().map_err(|e| conn_err(format!("SSH handshake: {}", e.message())))?;
        let note = check_host_key(&sess, spec)?;
        authenticate(&sess, spec)?;
        sess.set_keepalive(true, 30);
        // Commands may run for hours: no libssh2 timeout once connected (ours are per call).
        sess.set_timeout(0);
        Ok((
            Session { marker: Default::default(), sess, fd, target, busy: Arc::new(tokio::sync::Mutex::new(())) },
            note,
        ))
    }
}

fn check_host_key(sess: &ssh2::Session, spec: &ConnectSpec) -> Result<HostKeyNote, SshError> {
    let target = spec.target();
    let fail = |cause: String| SshError::HostKey { target: target.clone(), cause };
    let (key, kind) = sess.host_key().ok_or_else(|| fail("the server sent no host key".into()))?;
    let fp = fingerprint(key);
    if spec.host_key == HostKeyPolicy::Off {
        return Ok(HostKeyNote::Unchecked { fingerprint: fp });
    }
    let mut kh = sess.known_hosts().map_err(|e| fail(e.to_string()))?;
    if spec.known_hosts.exists() {
        kh.read_file(&spec.known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(|e| fail(format!("reading {}: {}", spec.known_hosts.display(), e.message())))?;
    }
    let file = spec.known_hosts.display().to_string();
    match kh.check_port(&spec.host, spec.port, key) {
        CheckResult::Match => Ok(HostKeyNote::Verified),
        CheckResult::Mismatch => {
            let recorded = recorded_fingerprint(&kh, &spec.known_hosts_name())
                .map(|f| format!("known_hosts has {f}"))
                .unwrap_or_else(|| "known_hosts has another key".into());
            Err(fail(format!(
                "the host key CHANGED: the server presents {} {fp}, {recorded} ({file}). Someone may be \
                 intercepting the connection, or the host was rebuilt: check, then remove the old line \
                 (ssh-keygen -R '{}' -f {file})",
                key_type_name(kind),
                spec.known_hosts_name()
            )))
        }
        CheckResult::NotFound if spec.host_key == HostKeyPolicy::AcceptNew => {
            let line = format!(
                "{} {} {}\n",
                spec.known_hosts_name(),
                key_type_name(kind),
                base64::engine::general_purpose::STANDARD.encode(key)
            );
            append_known_host(&spec.known_hosts, &line)
                .map_err(|e| fail(format!("recording the key in {file}: {e}")))?;
            Ok(HostKeyNote::Recorded { fingerprint: fp, file: spec.known_hosts.clone() })
        }
        CheckResult::NotFound => Err(fail(format!(
            "unknown host: its {} key {fp} is not in {file} (host_key = \"strict\"). Verify the fingerprint \
             and add it (ssh-keyscan -p {} {} >> {file}), or use host_key = \"accept-new\"",
            key_type_name(kind),
            spec.port,
            spec.host
        ))),
        CheckResult::Failure => Err(fail(format!("could not check the key against {file}"))),
    }
}

/// The key types known_hosts records (in plain text) for a host name, in file order.
fn recorded_key_types(path: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut types = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(kind)) = (fields.next(), fields.next()) else { continue };
        if hosts.starts_with('#') || hosts.starts_with('@') {
            continue;
        }
        if hosts.split(',').any(|h| h == name) && !types.iter().any(|t| t == kind) {
            types.push(kind.to_string());
        }
    }
    types
}

fn recorded_fingerprint(kh: &ssh2::KnownHosts, name: &str) -> Option<String> {
    let hosts = kh.hosts().ok()?;
    let entry = hosts.iter().find(|h| h.name().is_some_and(|n| n.split(',').any(|n| n == name)))?;
    let raw = base64::engine::general_purpose::STANDARD.decode(entry.key().trim()).ok()?;
    Some(fingerprint(&raw))
}

/// Appends one line (one write, O_APPEND: concurrent fan-outs do not interleave), creating the
/// file (0600) and its folder (0700) when missing.
fn append_known_host(path: &Path, line: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    f.write_all(line.as_bytes())
}

fn authenticate(sess: &ssh2::Session, spec: &ConnectSpec) -> Result<(), SshError> {
    let mut tried = Vec::new();
    let user = spec.user.as_str();
    let explicit = spec.key.is_some() || spec.password.is_some();
    if let Some(key) = &spec.key {
        let r = match key {
            Key::File(p) => {
                tried.push(format!("key {}", p.display()));
                if !p.exists() {
                    return Err(SshError::Usage(format!("key file {} does not exist", p.display())));
                }
                sess.userauth_pubkey_file(user, None, p, spec.passphrase.as_deref())
            }
            Key::Text(text) => {
                tried.push("key (secret)".into());
                sess.userauth_pubkey_memory(user, None, text, spec.passphrase.as_deref())
            }
        };
        if r.is_ok() && sess.authenticated() {
            return Ok(());
        }
    }
    if let Some(pw) = &spec.password {
        tried.push("password".into());
        if sess.userauth_password(user, pw).is_ok() && sess.authenticated() {
            return Ok(());
        }
    }
    if spec.agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        tried.push("agent".into());
        if sess.userauth_agent(user).is_ok() && sess.authenticated() {
            return Ok(());
        }
    }
    if !explicit {
        if let Some(home) = std::env::var_os("HOME") {
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let p = Path::new(&home).join(".ssh").join(name);
                if p.exists() {
                    tried.push(format!("key ~/.ssh/{name}"));
                    if sess.userauth_pubkey_file(user, None, &p, None).is_ok() && sess.authenticated() {
                        return Ok(());
                    }
                }
            }
        }
    }
    if tried.is_empty() {
        tried.push("nothing: give key, password or agent = true".into());
    }
    Err(SshError::Auth { target: spec.target(), user: user.to_string(), tried: tried.join(", ") })
}

/// Single-quotes a string for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A remote command.
#[derive(Clone, Default)]
pub struct ExecSpec {
    /// Names the command's pid file after the run, step and attempt it works for
    /// ([`marker`]), so a later attempt finds what an abandoned one left running.
    pub marker: Option<String>,
    pub command: String,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub stdin: Vec<u8>,
    pub sudo: bool,
    pub timeout: Option<Duration>,
}

pub struct ExecResult {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The wrapper: reads `n` (a line), then `n` bytes of shell assignments, evaluates them, and
/// runs `$__RB_CMD` in a new session with the rest of stdin, recording its pid in
/// `$__RB_PIDFILE`. Its own names start with `__rb`/`__RB`, which `env` may not use.
const WRAPPER: &str = r#"exec 3<&0; IFS= read -r __rb_n || exit 125; __rb_e=$(dd bs=1 count="$__rb_n" 2>/dev/null); eval "$__rb_e" || exit 125; unset __rb_e __rb_n; if command -v setsid >/dev/null 2>&1; then setsid sh -c "$__RB_CMD" <&3 3<&- & else sh -c "$__RB_CMD" <&3 3<&- & fi; __rb_p=$!; echo "$__rb_p" > "$__RB_PIDFILE"; wait "$__rb_p"; __rb_s=$?; rm -f "$__RB_PIDFILE"; exit "$__rb_s""#;

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.to_ascii_lowercase().starts_with("__rb")
}

/// Sets its flag when dropped: an exec future dropped midway (a step timeout, an interrupt)
/// tells the blocking loop to kill the remote command and let go of the session.
/// What stopping a remote command's process group took.
enum Killed {
    ByTerm,
    ByKill,
    No,
}

/// Stops the remote command when its future is dropped, and keeps it listed in [`RUNNING`]
/// while it runs.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        running().retain(|(flag, _)| !Arc::ptr_eq(flag, &self.0));
    }
}

/// The remote commands running now (their stop flag, and the command as shown with its
/// host): Ctrl-C in the REPL stops them and waits to see them exit.
type Running = Vec<(Arc<AtomicBool>, String)>;
static RUNNING: std::sync::Mutex<Running> = std::sync::Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Running> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks every remote command running now to stop (SIGTERM to its process group on the host,
/// SIGKILL 2 s later if it is still there); returns the commands asked.
pub fn interrupt_running() -> Vec<String> {
    running()
        .iter()
        .map(|(flag, what)| {
            flag.store(true, Ordering::SeqCst);
            what.clone()
        })
        .collect()
}

/// The exit status a signal stands for (128 + its number), as a shell reports it.
fn signal_code(name: &str) -> i32 {
    let n = match name.trim_start_matches("SIG") {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "SEGV" => 11,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    };
    128 + n
}

/// A remote command's marker: `<run id>.<step, as a file name>-<hash of the step>.<attempt>`.
/// Its pid file is `/tmp/.runbook-<marker>.<nonce>.pid` while it runs (the wrapper removes it
/// when the command ends; a runner killed meanwhile leaves it behind).
pub fn marker(label: &crate::engine::WorkLabel, run_id: &str, step: &str) -> Option<String> {
    label.run_prefix.as_ref()?;
    let slug: String = step
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(40)
        .collect();
    let hash: String = Sha256::digest(step.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect();
    Some(format!("{run_id}.{slug}-{hash}.{}", label.attempt))
}

impl Session {
    fn pidfile(nonce: &str) -> String {
        format!("/tmp/.runbook-{nonce}.pid")
    }

    /// Kills the process groups that earlier attempts of run `run_id` left running on this host
    /// (their pid files remain), except the current attempt's. Returns what was killed.
    pub async fn stop_earlier(
        self: &Arc<Self>,
        run_id: &str,
        current: &str,
        sudo: bool,
    ) -> Result<Vec<String>, SshError> {
        let safe = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !safe(run_id) || !safe(current) {
            return Ok(Vec::new());
        }
        let script = format!(
            "for f in /tmp/.runbook-{run_id}.*.pid; do [ -e \"$f\" ] || continue; \
             case \"$f\" in /tmp/.runbook-{current}.*) continue;; esac; \
             [ -O \"$f\" ] || continue; \
             p=$(cat \"$f\" 2>/dev/null); \
             case \"$p\" in ''|*[!0-9]*|0|1) rm -f \"$f\"; continue;; esac; \
             if kill -0 -\"$p\" 2>/dev/null; then \
               c=$(ps -o args= -p \"$p\" 2>/dev/null | cut -c1-100); \
               kill -TERM -\"$p\" 2>/dev/null; i=0; \
               while kill -0 -\"$p\" 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; \
               kill -KILL -\"$p\" 2>/dev/null; \
               m=${{f#/tmp/.runbook-}}; echo \"killed $p ${{m%.*.pid}} $c\"; \
             fi; rm -f \"$f\"; done; true"
        );
        let command = if sudo { format!("sudo -n -- sh -c {}", sh_quote(&script)) } else { script };
        let out = self.run_quiet(command).await?;
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix("killed "))
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                let (pid, marker, cmd) =
                    (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                format!(
                    "stopped work left running by an earlier attempt on {}: killed process group {pid} ({marker}) `{}`",
                    self.target,
                    cmd.trim()
                )
            })
            .collect())
    }

    /// Runs a command; complete output lines go to `lines` as they arrive.
    pub async fn exec(
        self: &Arc<Self>,
        spec: ExecSpec,
        lines: tokio::sync::mpsc::UnboundedSender<(Stream, String)>,
    ) -> Result<ExecResult, SshError> {
        for (name, value) in &spec.env {
            if !valid_env_name(name) {
                return Err(SshError::Usage(format!(
                    "env: invalid variable name '{name}' (letters, digits and _, not starting with a digit or __rb)"
                )));
            }
            if value.contains('\0') {
                return Err(SshError::Usage(format!("env.{name}: a value cannot hold a NUL byte")));
            }
        }
        if spec.command.contains('\0') || spec.cwd.as_deref().is_some_and(|c| c.contains('\0')) {
            return Err(SshError::Usage("a command or cwd cannot hold a NUL byte".into()));
        }
        // The lock travels into the blocking task: dropping this future does not free the
        // session while the task still uses it.
        let busy = Arc::clone(&self.busy).lock_owned().await;
        let cancel = Arc::new(AtomicBool::new(false));
        running().push((Arc::clone(&cancel), format!("`{}` on {}", spec.command, self.target)));
        let _on_drop = CancelOnDrop(Arc::clone(&cancel));
        let this = Arc::clone(self);
        let nonce = format!("{:016x}", rand::random::<u64>());
        tokio::task::spawn_blocking(move || {
            let _busy = busy;
            this.exec_blocking(&spec, &nonce, lines, &cancel)
        })
        .await
        .map_err(|e| SshError::Usage(format!("ssh exec: {e}")))?
    }

    fn exec_blocking(
        &self,
        spec: &ExecSpec,
        nonce: &str,
        lines: tokio::sync::mpsc::UnboundedSender<(Stream, String)>,
        cancel: &AtomicBool,
    ) -> Result<ExecResult, SshError> {
        let remote = |e: ssh2::Error| SshError::Remote { target: self.target.clone(), cause: e.message().to_string() };
        let mut block = String::new();
        for (k, v) in &spec.env {
            block.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        if let Some(dir) = &spec.cwd {
            block.push_str(&format!("cd {} || exit 125\n", sh_quote(dir)));
        }
        let pidfile = match &spec.marker {
            Some(m) => Self::pidfile(&format!("{m}.{nonce}")),
            None => Self::pidfile(nonce),
        };
        block.push_str(&format!("__RB_CMD={}\n__RB_PIDFILE={}\n", sh_quote(&spec.command), sh_quote(&pidfile)));
        let mut input = format!("{}\n", block.len()).into_bytes();
        input.extend_from_slice(block.as_bytes());
        input.extend_from_slice(&spec.stdin);
        let wrapper = if spec.sudo {
            format!("sudo -n -- sh -c {}", sh_quote(WRAPPER))
        } else {
            format!("sh -c {}", sh_quote(WRAPPER))
        };

        self.sess.set_blocking(true);
        let mut ch = self.sess.channel_session().map_err(remote)?;
        ch.exec(&wrapper).map_err(remote)?;
        self.sess.set_blocking(false);
        let started = Instant::now();
        let deadline = spec.timeout.map(|t| started + t);
        let mut io = ChannelIo::default();
        let mut sent = 0usize;
        let mut eof_sent = false;
        let stop = loop {
            let mut progress = false;
            if sent < input.len() {
                match ch.write(&input[sent..]) {
                    Ok(n) => {
                        sent += n;
                        progress |= n > 0;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => sent = input.len(), // the command closed its stdin
                }
            } else if !eof_sent {
                match ch.send_eof() {
                    Ok(()) => eof_sent = true,
                    Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {}
                    Err(_) => eof_sent = true,
                }
            }
            match io.pump(&mut ch, &lines) {
                Ok(p) => progress |= p,
                Err(e) => {
                    self.sess.set_blocking(true);
                    return Err(SshError::Remote { target: self.target.clone(), cause: e.to_string() });
                }
            }
            if ch.eof() && !progress {
                break None;
            }
            if cancel.load(Ordering::SeqCst) {
                break Some(None);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Some(spec.timeout);
            }
            if !progress {
                self.wait_socket(Duration::from_millis(50));
            }
        };
        if let Some(timeout) = stop {
            // Kill first (from a second channel), then let the channel go: closing it first
            // would wait for the command to end on its own.
            self.sess.set_blocking(true);
            let killed = self.kill_blocking(&pidfile, spec.sudo);
            self.sess.set_blocking(false);
            let grace = Instant::now() + Duration::from_secs(5);
            while !ch.eof() && Instant::now() < grace {
                if !io.pump(&mut ch, &lines).unwrap_or(false) {
                    self.wait_socket(Duration::from_millis(50));
                }
            }
            let mut exit = None;
            if ch.eof() {
                self.sess.set_blocking(true);
                let _ = ch.wait_close();
                exit = match (ch.exit_signal(), ch.exit_status()) {
                    (Ok(sig), _) if sig.exit_signal.is_some() => {
                        Some(format!("signal {}", sig.exit_signal.as_deref().unwrap_or_default()))
                    }
                    (_, Ok(code)) => Some(format!("exit code {code}")),
                    _ => None,
                };
            }
            drop(ch);
            self.sess.set_blocking(true);
            io.flush(&lines);
            let seen = match &exit {
                Some(e) => format!("; its exit was seen ({e})"),
                None => String::new(),
            };
            let fate = match killed {
                Killed::ByTerm => format!("SIGTERM sent to its process group, which ended{seen}"),
                Killed::ByKill => format!("its process group ignored SIGTERM for 2 s and was killed (SIGKILL){seen}"),
                Killed::No => "it could not be killed (no pid recorded): it may still be running".to_string(),
            };
            return Err(match timeout {
                Some(t) => SshError::Timeout {
                    target: self.target.clone(),
                    command: spec.command.clone(),
                    after: crate::duration::human(t),
                    fate,
                },
                None => SshError::Remote {
                    target: self.target.clone(),
                    cause: format!("`{}` was interrupted; {fate}", spec.command),
                },
            });
        }
        io.flush(&lines);
        self.sess.set_blocking(true);
        let _ = ch.wait_close();
        let code = ch.exit_status().map_err(remote)?;
        let code = match ch.exit_signal() {
            Ok(sig) if code == 0 => sig.exit_signal.as_deref().map(signal_code).unwrap_or(0),
            _ => code,
        };
        let ms = started.elapsed().as_millis() as u64;
        Ok(ExecResult { code, stdout: io.out, stderr: io.err, ms })
    }

    /// Waits until the socket is ready in the direction libssh2 is blocked on.
    fn wait_socket(&self, max: Duration) {
        let events = match self.sess.block_directions() {
            ssh2::BlockDirections::Inbound => libc::POLLIN,
            ssh2::BlockDirections::Outbound => libc::POLLOUT,
            ssh2::BlockDirections::Both => libc::POLLIN | libc::POLLOUT,
            ssh2::BlockDirections::None => libc::POLLIN,
        };
        let mut pfd = libc::pollfd { fd: self.fd, events, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe {
            libc::poll(&mut pfd, 1, max.as_millis() as i32);
        }
    }

    /// Kills the process group of a command, from a second channel: waits briefly for its pid
    /// (a command stopped right after it started), TERM, then KILL after two seconds. Works
    /// with dash (`kill -SIG -PGID`, no `--`). True when a pid was found.
    fn kill_blocking(&self, pidfile: &str, sudo: bool) -> Killed {
        let f = sh_quote(pidfile);
        let script = format!(
            "i=0; while [ ! -s {f} ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done; \
             p=$(cat {f} 2>/dev/null) || {{ echo nopid; exit 0; }}; \
             kill -TERM -\"$p\" 2>/dev/null || kill -TERM \"$p\" 2>/dev/null; \
             i=0; while kill -0 -\"$p\" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done; \
             if kill -0 -\"$p\" 2>/dev/null; then kill -KILL -\"$p\" 2>/dev/null || kill -KILL \"$p\" 2>/dev/null; \
             echo killed-KILL; else echo killed-TERM; fi; rm -f {f}"
        );
        let cmd = if sudo {
            format!("sudo -n -- sh -c {}", sh_quote(&script))
        } else {
            format!("sh -c {}", sh_quote(&script))
        };
        self.sess.set_timeout(15_000);
        let mut said = String::new();
        if let Ok(mut ch) = self.sess.channel_session() {
            if ch.exec(&cmd).is_ok() {
                let _ = ch.read_to_string(&mut said);
                let _ = ch.wait_close();
            }
        }
        self.sess.set_timeout(0);
        if said.contains("killed-TERM") {
            Killed::ByTerm
        } else if said.contains("killed-KILL") {
            Killed::ByKill
        } else {
            Killed::No
        }
    }

    /// A command whose output is wanted whole (checksums, mv): runs and returns stdout.
    async fn run_quiet(self: &Arc<Self>, command: String) -> Result<String, SshError> {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let r = self
            .exec(
                ExecSpec { command: command.clone(), timeout: Some(Duration::from_secs(600)), ..Default::default() },
                tx,
            )
            .await?;
        if r.code != 0 {
            return Err(SshError::Exit {
                target: self.target.clone(),
                command,
                code: r.code,
                stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&r.stdout).into_owned())
    }

    async fn remote_sha256(self: &Arc<Self>, path: &str) -> Result<String, SshError> {
        let out = self.run_quiet(format!("sha256sum -- {}", sh_quote(path))).await?;
        Ok(out.split_whitespace().next().unwrap_or_default().to_string())
    }
}

/// Output of a running command: whole streams, and the partial line of each.
#[derive(Default)]
struct ChannelIo {
    out: Vec<u8>,
    err: Vec<u8>,
    out_line: Vec<u8>,
    err_line: Vec<u8>,
}

impl ChannelIo {
    /// Reads what is there on stdout and stderr (non-blocking); sends complete lines. True when
    /// something arrived.
    fn pump(
        &mut self,
        ch: &mut ssh2::Channel,
        lines: &tokio::sync::mpsc::UnboundedSender<(Stream, String)>,
    ) -> std::io::Result<bool> {
        let mut buf = [0u8; 32 * 1024];
        let mut progress = false;
        for stream in [Stream::Stdout, Stream::Stderr] {
            let r = match stream {
                Stream::Stdout => ch.read(&mut buf),
                Stream::Stderr => ch.stderr().read(&mut buf),
            };
            let (acc, line) = match stream {
                Stream::Stdout => (&mut self.out, &mut self.out_line),
                Stream::Stderr => (&mut self.err, &mut self.err_line),
            };
            match r {
                Ok(0) => {}
                Ok(n) => {
                    progress = true;
                    acc.extend_from_slice(&buf[..n]);
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            let _ = lines.send((stream, String::from_utf8_lossy(line).into_owned()));
                            line.clear();
                        } else if line.len() < 16 * 1024 {
                            line.push(b);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(progress)
    }

    /// Sends the last lines that had no newline.
    fn flush(&mut self, lines: &tokio::sync::mpsc::UnboundedSender<(Stream, String)>) {
        for (stream, line) in [(Stream::Stdout, &mut self.out_line), (Stream::Stderr, &mut self.err_line)] {
            if !line.is_empty() {
                let _ = lines.send((stream, String::from_utf8_lossy(line).into_owned()));
                line.clear();
            }
        }
    }
}

/// What a transfer moved.
pub struct Transfer {
    pub bytes: u64,
    pub sha256: String,
    pub ms: u64,
}

impl Session {
    /// Uploads a local file over SFTP in chunks, to a temporary name then moved into place; with
    /// `verify`, the remote file's SHA-256 must match what was sent before it is moved.
    pub async fn upload(
        self: &Arc<Self>,
        local: &Path,
        remote: &str,
        mode: Option<i32>,
        verify: bool,
    ) -> Result<Transfer, SshError> {
        let tmp = format!("{remote}.runbook-{:08x}", rand::random::<u32>());
        let started = Instant::now();
        let sent = {
            let busy = Arc::clone(&self.busy).lock_owned().await;
            let this = Arc::clone(self);
            let (local, tmp2, final_path) = (local.to_path_buf(), tmp.clone(), remote.to_string());
            tokio::task::spawn_blocking(move || {
                let _busy = busy;
                this.upload_blocking(&local, &tmp2, &final_path, mode)
            })
            .await
            .map_err(|e| SshError::Usage(format!("ssh upload: {e}")))??
        };
        let (bytes, sha256) = sent;
        if verify {
            let remote_sum = self.remote_sha256(&tmp).await?;
            if remote_sum != sha256 {
                let _ = self.run_quiet(format!("rm -f -- {}", sh_quote(&tmp))).await;
                return Err(SshError::Checksum {
                    target: self.target.clone(),
                    what: format!("upload to {remote}"),
                    local: sha256,
                    remote: remote_sum,
                });
            }
        }
        self.run_quiet(format!("mv -f -- {} {}", sh_quote(&tmp), sh_quote(remote))).await?;
        Ok(Transfer { bytes, sha256, ms: started.elapsed().as_millis() as u64 })
    }

    /// Writes `local` to `remote` (a temporary name); the mode is the one asked for, else the
    /// mode of the file it will replace, else 0644.
    fn upload_blocking(
        &self,
        local: &Path,
        remote: &str,
        replaces: &str,
        mode: Option<i32>,
    ) -> Result<(u64, String), SshError> {
        let rerr = |what: &str, e: ssh2::Error| SshError::Remote {
            target: self.target.clone(),
            cause: format!("{what}: {}", e.message()),
        };
        let mut src = std::fs::File::open(local)
            .map_err(|e| SshError::Usage(format!("upload: cannot read {}: {e}", local.display())))?;
        self.sess.set_blocking(true);
        let sftp = self.sess.sftp().map_err(|e| rerr("starting SFTP", e))?;
        let mode = mode.unwrap_or_else(|| {
            sftp.stat(Path::new(replaces)).ok().and_then(|st| st.perm).map_or(0o644, |p| (p & 0o7777) as i32)
        });
        let mut dst = sftp
            .open_mode(
                Path::new(remote),
                ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                mode,
                ssh2::OpenType::File,
            )
            .map_err(|e| rerr(&format!("cannot create {remote}"), e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n =
                src.read(&mut buf).map_err(|e| SshError::Usage(format!("upload: reading {}: {e}", local.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            dst.write_all(&buf[..n]).map_err(|e| SshError::Remote {
                target: self.target.clone(),
                cause: format!("writing {remote}: {e}"),
            })?;
            total += n as u64;
        }
        dst.flush().ok();
        drop(dst);
        // The umask of the server applies at creation: set the mode asked for.
        let _ = sftp.setstat(
            Path::new(remote),
            ssh2::FileStat { size: None, uid: None, gid: None, perm: Some(mode as u32), atime: None, mtime: None },
        );
        Ok((total, hex(&hasher.finalize())))
    }

    /// Downloads a remote file over SFTP in chunks, to a temporary local name then renamed; with
    /// `verify`, what arrived must match the remote file's SHA-256.
    pub async fn download(self: &Arc<Self>, remote: &str, local: &Path, verify: bool) -> Result<Transfer, SshError> {
        let started = Instant::now();
        let tmp = local.with_file_name(format!(
            ".{}.runbook-{:08x}",
            local.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            rand::random::<u32>()
        ));
        if local.is_dir() || local.as_os_str().to_string_lossy().ends_with('/') {
            return Err(SshError::Usage(format!("download: {} is a folder; give the file's path", local.display())));
        }
        let (bytes, sha256) = {
            let busy = Arc::clone(&self.busy).lock_owned().await;
            let this = Arc::clone(self);
            let (remote2, tmp2) = (remote.to_string(), tmp.clone());
            tokio::task::spawn_blocking(move || {
                let _busy = busy;
                this.download_blocking(&remote2, &tmp2)
            })
            .await
            .map_err(|e| SshError::Usage(format!("ssh download: {e}")))??
        };
        if verify {
            let remote_sum = match self.remote_sha256(remote).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            if remote_sum != sha256 {
                let _ = std::fs::remove_file(&tmp);
                return Err(SshError::Checksum {
                    target: self.target.clone(),
                    what: format!("download of {remote}"),
                    local: sha256,
                    remote: remote_sum,
                });
            }
        }
        if let Err(e) = crate::files::check_replaceable(local) {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(SshError::Usage(format!("download: {e}")));
        }
        if let Err(e) = tokio::fs::rename(&tmp, local).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(SshError::Usage(format!("download: cannot write {}: {e}", local.display())));
        }
        Ok(Transfer { bytes, sha256, ms: started.elapsed().as_millis() as u64 })
    }

    fn download_blocking(&self, remote: &str, tmp: &Path) -> Result<(u64, String), SshError> {
        let rerr = |what: &str, e: ssh2::Error| SshError::Remote {
            target: self.target.clone(),
            cause: format!("{what}: {}", e.message()),
        };
        self.sess.set_blocking(true);
        let sftp = self.sess.sftp().map_err(|e| rerr("starting SFTP", e))?;
        let mut src = sftp.open(Path::new(remote)).map_err(|e| rerr(&format!("cannot open {remote}"), e))?;
        let mut dst = std::fs::File::create(tmp)
            .map_err(|e| SshError::Usage(format!("download: cannot create {}: {e}", tmp.display())))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let result = loop {
            match src.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    if let Err(e) = dst.write_all(&buf[..n]) {
                        break Err(SshError::Usage(format!("download: writing {}: {e}", tmp.display())));
                    }
                    total += n as u64;
                }
                Err(e) => {
                    break Err(SshError::Remote {
                        target: self.target.clone(),
                        cause: format!("reading {remote}: {e}"),
                    })
                }
            }
        };
        if let Err(e) = result.and_then(|_| dst.sync_all().map_err(|e| SshError::Usage(e.to_string()))) {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
        Ok((total, hex(&hasher.finalize())))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_specs() {
        assert_eq!(parse_spec("web-2:2222").unwrap(), (None, "web-2".into(), Some(2222)));
        assert_eq!(parse_spec("deploy@10.0.0.5").unwrap(), (Some("deploy".into()), "10.0.0.5".into(), None));
        assert_eq!(parse_spec("[::1]:22").unwrap(), (None, "::1".into(), Some(22)));
        assert!(parse_spec("web:0").is_err());
        assert!(parse_spec("@web").is_err());
        assert!(parse_spec("").is_err());
    }

    #[test]
    fn fingerprints_are_openssh_style() {
        // sha256("") in base64 without padding.
        assert_eq!(fingerprint(b""), "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
    }
}
