//! Real servers the tests talk to: started once per test binary in a temporary directory, on a
//! free loopback port, and stopped (and removed) when the binary exits. A missing server is a
//! loud failure that says how to install it, never a silent skip.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Postgres {
    /// A superuser URL, password included (a test password).
    pub url: String,
    pub port: u16,
    pub password: &'static str,
    /// The server's log (every statement is logged: `log_statement = all`).
    pub log: PathBuf,
}

struct Cleanup {
    pg_ctl: PathBuf,
    data: PathBuf,
    root: PathBuf,
    as_postgres: bool,
}

static PG: OnceLock<Postgres> = OnceLock::new();
static PG2: OnceLock<Postgres> = OnceLock::new();
/// Every cluster started, stopped at exit.
static CLEANUP: std::sync::Mutex<Vec<Cleanup>> = std::sync::Mutex::new(Vec::new());

extern "C" {
    fn geteuid() -> u32;
    fn atexit(f: extern "C" fn()) -> i32;
}

extern "C" fn stop_servers() {
    let all = CLEANUP.lock().map(|c| {
        c.iter().map(|c| (c.pg_ctl.clone(), c.data.clone(), c.root.clone(), c.as_postgres)).collect::<Vec<_>>()
    });
    for (pg_ctl, data, root, as_postgres) in all.unwrap_or_default() {
        let _ = as_user(as_postgres, &pg_ctl).args(["-D"]).arg(&data).args(["-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// A command run as the `postgres` user when the tests run as root (PostgreSQL refuses root).
fn as_user(as_postgres: bool, program: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

impl Postgres {
    /// A new, empty database on this cluster (one per test that needs its own journal); the
    /// URL has the test password.
    pub fn fresh_database(&self, prefix: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!("{prefix}_{}_{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        let psql = pg_bindir().expect("PostgreSQL binaries").join("psql");
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "runbook",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .env("PGPASSWORD", self.password)
            .output()
            .expect("psql");
        assert!(out.status.success(), "CREATE DATABASE {name}: {}", String::from_utf8_lossy(&out.stderr));
        format!("postgres://runbook:{}@127.0.0.1:{}/{name}", self.password, self.port)
    }

    /// Runs SQL in a database (by URL) with psql and returns its unaligned output.
    pub fn query(&self, url: &str, sql: &str) -> String {
        let psql = pg_bindir().expect("PostgreSQL binaries").join("psql");
        let out = Command::new(psql)
            .args([url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The shared PostgreSQL cluster.
pub fn postgres() -> &'static Postgres {
    PG.get_or_init(|| {
        start_postgres("pg").unwrap_or_else(|e| {
            panic!("cannot start PostgreSQL for the tests: {e}\ninstall it with: apt-get install postgresql (scripts/test does this)")
        })
    })
}

/// A second, separate cluster (another server, for restores across servers).
pub fn postgres2() -> &'static Postgres {
    PG2.get_or_init(|| {
        start_postgres("pg2").unwrap_or_else(|e| {
            panic!("cannot start PostgreSQL for the tests: {e}\ninstall it with: apt-get install postgresql (scripts/test does this)")
        })
    })
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn start_postgres(name: &str) -> Result<Postgres, String> {
    let bin = pg_bindir().ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
    // SAFETY: geteuid has no preconditions.
    let as_postgres = unsafe { geteuid() } == 0;
    let root = std::env::temp_dir().join(format!("runbook-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let password = "runbook-test-pw";
    std::fs::write(root.join("pw"), password).map_err(|e| e.to_string())?;
    if as_postgres {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&root);
                c
            },
            "chown",
        )?;
    }
    let data = root.join("data");
    // Registered before anything is created, so a failure midway still cleans up.
    let first = {
        let mut all = CLEANUP.lock().map_err(|e| e.to_string())?;
        all.push(Cleanup { pg_ctl: bin.join("pg_ctl"), data: data.clone(), root: root.clone(), as_postgres });
        all.len() == 1
    };
    if first {
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            atexit(stop_servers);
        }
    }
    let mut initdb = as_user(as_postgres, &bin.join("initdb"));
    initdb.arg("-D").arg(&data).args(["-U", "runbook", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "-N"]);
    initdb.arg(format!("--pwfile={}", root.join("pw").display()));
    run(initdb, "initdb")?;
    let port = free_port();
    let mut start = as_user(as_postgres, &bin.join("pg_ctl"));
    start.arg("-D").arg(&data).arg("-l").arg(root.join("log")).args(["-w", "-o"]);
    start.arg(format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off \
         -c shared_preload_libraries=pg_stat_statements -c log_statement=all",
        root.display()
    ));
    start.arg("start");
    run(start, "pg_ctl start")
        .map_err(|e| format!("{e}\nlog: {}", std::fs::read_to_string(root.join("log")).unwrap_or_default()))?;
    Ok(Postgres {
        url: format!("postgres://runbook:{password}@127.0.0.1:{port}/postgres"),
        port,
        password,
        log: root.join("log"),
    })
}

pub struct MariaDb {
    /// `mysql://runbook:PASSWORD@127.0.0.1:PORT/app`
    pub url: String,
    pub port: u16,
    pub password: &'static str,
}

struct MariaCleanup {
    pid: std::sync::atomic::AtomicU32,
    root: PathBuf,
}

static MARIA: OnceLock<MariaDb> = OnceLock::new();
static MARIA_CLEANUP: OnceLock<MariaCleanup> = OnceLock::new();

extern "C" fn stop_mariadb() {
    if let Some(c) = MARIA_CLEANUP.get() {
        let pid = c.pid.load(std::sync::atomic::Ordering::SeqCst);
        if pid != 0 {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).output();
        }
        let _ = std::fs::remove_dir_all(&c.root);
    }
}

/// The shared MariaDB server (for mysql:// URLs).
pub fn mariadb() -> &'static MariaDb {
    MARIA.get_or_init(|| {
        start_mariadb().unwrap_or_else(|e| {
            panic!("cannot start MariaDB for the tests: {e}\ninstall it with: apt-get install mariadb-server (scripts/test does this)")
        })
    })
}

fn start_mariadb() -> Result<MariaDb, String> {
    let mariadbd = ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no mariadbd")?;
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { geteuid() } == 0;
    let root = std::env::temp_dir().join(format!("runbook-test-maria-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // Registered before anything is created, so a failure midway still cleans up.
    let _ = MARIA_CLEANUP.set(MariaCleanup { pid: std::sync::atomic::AtomicU32::new(0), root: root.clone() });
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        atexit(stop_mariadb);
    }
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    if as_root {
        let mut c = Command::new("chown");
        c.args(["-R", "mysql:mysql"]).arg(&root);
        run(c, "chown")?;
    }
    let data = root.join("data");
    let user: &[&str] = if as_root { &["--user=mysql"] } else { &[] };
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(user);
    run(install, "mariadb-install-db")?;
    let port = free_port();
    let socket = root.join("sock");
    let pid_file = root.join("pid");

    let log = std::fs::File::create(root.join("log")).map_err(|e| e.to_string())?;
    let server = Command::new(&mariadbd)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", pid_file.display()))
        .args(["--skip-log-bin", "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--skip-name-resolve"])
        .args(user)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("mariadbd: {e}"))?;
    if let Some(c) = MARIA_CLEANUP.get() {
        c.pid.store(server.id(), std::sync::atomic::Ordering::SeqCst);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "mariadbd did not listen on {port}: {}",
                std::fs::read_to_string(root.join("log")).unwrap_or_default()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let password = "runbook-maria-pw";
    let mut setup = Command::new("mariadb");
    setup.arg("--no-defaults").arg(format!("--socket={}", socket.display())).args(["-u", "root", "-e"]);
    setup.arg(format!(
        "create user 'runbook'@'%' identified by '{password}'; grant all on *.* to 'runbook'@'%'; create database app;"
    ));
    run(setup, "create the test user")?;
    Ok(MariaDb { url: format!("mysql://runbook:{password}@127.0.0.1:{port}/app"), port, password })
}

/// OpenSSH servers, one per loopback address (127.0.0.2, 127.0.0.3, ...), each with its own
/// host key: as many hosts. They share a port, the client keys and an authorized_keys file.
pub struct Sshd {
    pub port: u16,
    /// "127.0.0.N:PORT", one per server.
    pub hosts: Vec<String>,
    /// A host spec where nothing listens (a host that is down).
    pub down: String,
    pub user: String,
    /// Client key without a passphrase, in authorized_keys.
    pub key: PathBuf,
    /// Client key with the passphrase below, in authorized_keys.
    pub key_pass: PathBuf,
    pub passphrase: &'static str,
    /// A key that is not authorized.
    pub stranger_key: PathBuf,
    /// known_hosts with every server's key.
    pub known_hosts: PathBuf,
    /// The public host key line (type and base64) of each server.
    pub host_keys: Vec<String>,
    /// The last server also has an ECDSA host key: its line.
    pub ecdsa_host_key: String,
}

pub const SSH_HOSTS: usize = 4;

struct SshCleanup {
    pids: std::sync::Mutex<Vec<u32>>,
    root: PathBuf,
}

static SSHD: OnceLock<Sshd> = OnceLock::new();
static SSHD_CLEANUP: OnceLock<SshCleanup> = OnceLock::new();

extern "C" fn stop_sshd() {
    if let Some(c) = SSHD_CLEANUP.get() {
        for pid in c.pids.lock().map(|p| p.clone()).unwrap_or_default() {
            let _ = Command::new("kill").arg(pid.to_string()).output();
        }
        let _ = std::fs::remove_dir_all(&c.root);
    }
}

/// The shared SSH servers.
pub fn sshd() -> &'static Sshd {
    SSHD.get_or_init(|| {
        start_sshd().unwrap_or_else(|e| {
            panic!("cannot start sshd for the tests: {e}\ninstall it with: apt-get install openssh-server (scripts/test does this)")
        })
    })
}

fn keygen(path: &Path, passphrase: &str, comment: &str) -> Result<(), String> {
    keygen_type(path, "ed25519", passphrase, comment)
}

fn keygen_type(path: &Path, kind: &str, passphrase: &str, comment: &str) -> Result<(), String> {
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-t", kind, "-N", passphrase, "-C", comment, "-f"]).arg(path);
    run(c, "ssh-keygen")
}

fn start_sshd() -> Result<Sshd, String> {
    let sshd = PathBuf::from("/usr/sbin/sshd");
    if !sshd.exists() {
        return Err("no /usr/sbin/sshd".into());
    }
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { geteuid() } == 0;
    let root = std::env::temp_dir().join(format!("runbook-test-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let _ = SSHD_CLEANUP.set(SshCleanup { pids: Default::default(), root: root.clone() });
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        atexit(stop_sshd);
    }
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    if root_user {
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
    }
    let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output().map_err(|e| e.to_string())?.stdout)
        .trim()
        .to_string();
    let passphrase = "runbook-key-pass";
    keygen(&root.join("client"), "", "runbook-test")?;
    keygen(&root.join("client_pass"), passphrase, "runbook-test-pass")?;
    keygen(&root.join("stranger"), "", "stranger")?;
    let authorized = format!(
        "{}{}",
        std::fs::read_to_string(root.join("client.pub")).map_err(|e| e.to_string())?,
        std::fs::read_to_string(root.join("client_pass.pub")).map_err(|e| e.to_string())?
    );
    std::fs::write(root.join("authorized_keys"), authorized).map_err(|e| e.to_string())?;
    let addr = |i: usize| format!("127.0.0.{}", i + 2);
    // One port free on every address (and on the one left down).
    let port = (0..50)
        .map(|_| free_port())
        .find(|p| (0..=SSH_HOSTS).all(|i| std::net::TcpListener::bind((addr(i).as_str(), *p)).is_ok()))
        .ok_or("no port free on every loopback address")?;
    let mut hosts = Vec::new();
    let mut host_keys = Vec::new();
    let ecdsa = root.join("host_ecdsa");
    keygen_type(&ecdsa, "ecdsa", "", "host-ecdsa")?;
    let ecdsa_host_key = std::fs::read_to_string(ecdsa.with_extension("pub"))
        .map_err(|e| e.to_string())?
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let mut known = String::new();
    for i in 0..SSH_HOSTS {
        let key = root.join(format!("host{i}"));
        keygen(&key, "", &format!("host{i}"))?;
        let public = std::fs::read_to_string(key.with_extension("pub")).map_err(|e| e.to_string())?;
        let line: Vec<&str> = public.split_whitespace().take(2).collect();
        let line = line.join(" ");
        known.push_str(&format!("[{}]:{port} {line}\n", addr(i)));
        host_keys.push(line);
        let config = root.join(format!("sshd{i}.conf"));
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress {}\nHostKey {}\n{}PidFile {}\nAuthorizedKeysFile {}\nStrictModes no\n\
                 UsePAM no\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nPermitRootLogin yes\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 500\nMaxSessions 100\n",
                addr(i),
                key.display(),
                if i == SSH_HOSTS - 1 { format!("HostKey {}\n", ecdsa.display()) } else { String::new() },
                root.join(format!("sshd{i}.pid")).display(),
                root.join("authorized_keys").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = std::fs::File::create(root.join(format!("sshd{i}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("sshd: {e}"))?;
        if let Some(c) = SSHD_CLEANUP.get() {
            c.pids.lock().map_err(|e| e.to_string())?.push(child.id());
        }
        hosts.push(format!("{}:{port}", addr(i)));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for (i, h) in hosts.iter().enumerate() {
        while std::net::TcpStream::connect(h.as_str()).is_err() {
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(root.join(format!("sshd{i}.log"))).unwrap_or_default();
                return Err(format!("sshd on {h} did not listen: {log}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let known_hosts = root.join("known_hosts");
    std::fs::write(&known_hosts, known).map_err(|e| e.to_string())?;
    Ok(Sshd {
        port,
        down: format!("{}:{port}", addr(SSH_HOSTS)),
        hosts,
        user,
        key: root.join("client"),
        key_pass: root.join("client_pass"),
        passphrase,
        stranger_key: root.join("stranger"),
        known_hosts,
        host_keys,
        ecdsa_host_key,
    })
}

/// An S3-compatible server (s3s-fs, a real S3 protocol server on files; scripts/test installs
/// it with cargo into /var/tmp/runbook-tools) with one bucket, `runbook-test`.
pub struct S3 {
    pub endpoint: String,
    pub bucket: &'static str,
    pub access_key: &'static str,
    pub secret_key: &'static str,
    /// Where the server keeps the bucket's objects, as files.
    pub root: PathBuf,
}

struct S3Cleanup {
    pid: std::sync::atomic::AtomicU32,
    root: PathBuf,
}

static S3_SERVER: OnceLock<S3> = OnceLock::new();
static S3_CLEANUP: OnceLock<S3Cleanup> = OnceLock::new();

extern "C" fn stop_s3() {
    if let Some(c) = S3_CLEANUP.get() {
        let pid = c.pid.load(std::sync::atomic::Ordering::SeqCst);
        if pid != 0 {
            let _ = Command::new("kill").arg(pid.to_string()).output();
        }
        let _ = std::fs::remove_dir_all(&c.root);
    }
}

pub fn s3() -> &'static S3 {
    S3_SERVER.get_or_init(|| {
        start_s3().unwrap_or_else(|e| {
            panic!("cannot start the S3 server for the tests: {e}\ninstall it with: cargo install s3s-fs@0.14.1 --features binary --root /var/tmp/runbook-tools (scripts/test does this)")
        })
    })
}

fn s3s_fs() -> Option<PathBuf> {
    let tools = std::env::var_os("RUNBOOK_TOOLS").map(PathBuf::from).unwrap_or_else(|| "/var/tmp/runbook-tools".into());
    let candidates = [tools.join("bin/s3s-fs")];
    candidates.into_iter().find(|p| p.exists()).or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("s3s-fs")).find(|p| p.exists()))
    })
}

fn start_s3() -> Result<S3, String> {
    let bin = s3s_fs().ok_or("no s3s-fs binary")?;
    let root = std::env::temp_dir().join(format!("runbook-test-s3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let _ = S3_CLEANUP.set(S3Cleanup { pid: std::sync::atomic::AtomicU32::new(0), root: root.clone() });
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        atexit(stop_s3);
    }
    let bucket = "runbook-test";
    std::fs::create_dir_all(root.join(bucket)).map_err(|e| e.to_string())?;
    let (access_key, secret_key) = ("RUNBOOKTESTKEY", "runbook-test-s3-secret-5d1e");
    let port = free_port();
    let log = std::fs::File::create(root.join("s3.log")).map_err(|e| e.to_string())?;
    let child = Command::new(&bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            access_key,
            "--secret-key",
            secret_key,
        ])
        .arg(&root)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if let Some(c) = S3_CLEANUP.get() {
        c.pid.store(child.id(), std::sync::atomic::Ordering::SeqCst);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "s3s-fs did not listen: {}",
                std::fs::read_to_string(root.join("s3.log")).unwrap_or_default()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(S3 { endpoint: format!("http://127.0.0.1:{port}"), bucket, access_key, secret_key, root })
}

/// A server process of one test, in a directory of its own: killed and the directory removed
/// when dropped.
pub struct Daemon {
    child: std::process::Child,
    pub root: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A fresh directory for one test's `kind` of server.
fn daemon_root(kind: &str) -> Result<PathBuf, String> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let root = std::env::temp_dir().join(format!("runbook-test-{kind}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("tmp")).map_err(|e| e.to_string())?;
    Ok(root)
}

/// Starts `cmd` (its output to `root/<kind>.log`) and waits until `port` accepts and `ready`
/// holds, at most 30 s.
fn daemon(kind: &str, root: PathBuf, mut cmd: Command, port: u16, ready: impl Fn() -> bool) -> Result<Daemon, String> {
    let log_path = root.join(format!("{kind}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let child = cmd
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{kind}: {e}"))?;
    let d = Daemon { child, root };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !ready() {
        if std::time::Instant::now() > deadline {
            let error_log = std::fs::read_to_string(d.root.join("error.log")).unwrap_or_default();
            return Err(format!(
                "{kind} did not listen: {}{error_log}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(d)
}

/// Debian's Prometheus server, one per test that asks, scraping `targets` every second.
pub struct Prometheus {
    pub url: String,
    _daemon: Daemon,
}

pub fn prometheus(targets: &[String]) -> Prometheus {
    start_prometheus(targets).unwrap_or_else(|e| {
        panic!("cannot start Prometheus for the tests: {e}\ninstall it with: apt-get install --no-install-recommends prometheus (scripts/test does this)")
    })
}

fn start_prometheus(targets: &[String]) -> Result<Prometheus, String> {
    let bin = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no prometheus binary")?;
    let root = daemon_root("prometheus")?;
    let list = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [{list}]\n"
    );
    std::fs::write(root.join("prometheus.yml"), config).map_err(|e| e.to_string())?;
    let port = free_port();
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("--config.file={}", root.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", root.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    Ok(Prometheus { url: format!("http://127.0.0.1:{port}"), _daemon: daemon("prometheus", root, cmd, port, || true)? })
}

/// Debian's HAProxy, one per test that asks: a frontend on a free loopback port balancing
/// backend `app` (round robin) between its servers, its runtime API on a unix socket (level
/// admin).
pub struct Haproxy {
    pub frontend: String,
    pub socket: PathBuf,
    _daemon: Daemon,
}

/// HAProxy with servers `stable` (weight 100) and `canary` (weight 0).
pub fn haproxy(stable: &str, canary: &str) -> Haproxy {
    haproxy_pool(&[("stable", stable, 100), ("canary", canary, 0)])
}

/// HAProxy with `servers`: (name, address, weight).
pub fn haproxy_pool(servers: &[(&str, &str, u32)]) -> Haproxy {
    start_haproxy(servers).unwrap_or_else(|e| {
        panic!("cannot start HAProxy for the tests: {e}\ninstall it with: apt-get install --no-install-recommends haproxy socat (scripts/test does this)")
    })
}

fn start_haproxy(servers: &[(&str, &str, u32)]) -> Result<Haproxy, String> {
    let bin = PathBuf::from("/usr/sbin/haproxy");
    if !bin.exists() {
        return Err("no haproxy binary".into());
    }
    let root = daemon_root("haproxy")?;
    let port = free_port();
    let socket = root.join("admin.sock");
    let lines: String =
        servers.iter().map(|(name, addr, weight)| format!("  server {name} {addr} weight {weight}\n")).collect();
    let config = format!(
        "global\n  stats socket {} mode 600 level admin\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend app\n\
         backend app\n  balance roundrobin\n{lines}",
        socket.display()
    );
    std::fs::write(root.join("haproxy.cfg"), config).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&bin);
    cmd.arg("-db").arg("-f").arg(root.join("haproxy.cfg"));
    let sock = socket.clone();
    let d = daemon("haproxy", root, cmd, port, move || sock.exists())?;
    Ok(Haproxy { frontend: format!("http://127.0.0.1:{port}"), socket, _daemon: d })
}

/// Debian's nginx, one per test that asks: a frontend on a free loopback port proxying to
/// upstream `app`, whose block lives in its own file (`upstream`) for a runbook to rewrite;
/// `test` and `reload` are the commands for this instance.
pub struct Nginx {
    pub frontend: String,
    pub upstream: PathBuf,
    pub test: String,
    pub reload: String,
    _daemon: Daemon,
}

pub fn nginx(stable: &str, canary: &str) -> Nginx {
    start_nginx(stable, canary).unwrap_or_else(|e| {
        panic!("cannot start nginx for the tests: {e}\ninstall it with: apt-get install --no-install-recommends nginx (scripts/test does this)")
    })
}

fn start_nginx(stable: &str, canary: &str) -> Result<Nginx, String> {
    let bin = PathBuf::from("/usr/sbin/nginx");
    if !bin.exists() {
        return Err("no nginx binary".into());
    }
    let root = daemon_root("nginx")?;
    let port = free_port();
    let upstream = root.join("upstream.conf");
    std::fs::write(&upstream, format!("upstream app {{\n  server {stable} weight=100;\n  server {canary} down;\n}}\n"))
        .map_err(|e| e.to_string())?;
    let r = root.display();
    let config = format!(
        "daemon off;\nworker_processes 1;\npid {r}/nginx.pid;\nerror_log {r}/error.log;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {r}/tmp; proxy_temp_path {r}/tmp; fastcgi_temp_path {r}/tmp;\n  \
         uwsgi_temp_path {r}/tmp; scgi_temp_path {r}/tmp;\n  include {};\n  \
         server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; }} }}\n}}\n",
        upstream.display()
    );
    let conf = root.join("nginx.conf");
    std::fs::write(&conf, config).map_err(|e| e.to_string())?;
    let flags = format!("-c {} -p {}", conf.display(), root.display());
    let mut cmd = Command::new(&bin);
    cmd.arg("-c").arg(&conf).arg("-p").arg(&root);
    Ok(Nginx {
        frontend: format!("http://127.0.0.1:{port}"),
        upstream,
        test: format!("{} -t {flags}", bin.display()),
        reload: format!("{} -s reload {flags}", bin.display()),
        _daemon: daemon("nginx", root, cmd, port, || true)?,
    })
}
