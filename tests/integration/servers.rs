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
}

struct Cleanup {
    pg_ctl: PathBuf,
    data: PathBuf,
    root: PathBuf,
    as_postgres: bool,
}

static PG: OnceLock<Postgres> = OnceLock::new();
static CLEANUP: OnceLock<Cleanup> = OnceLock::new();

extern "C" {
    fn geteuid() -> u32;
    fn atexit(f: extern "C" fn()) -> i32;
}

extern "C" fn stop_servers() {
    if let Some(c) = CLEANUP.get() {
        let _ = as_user(c.as_postgres, &c.pg_ctl)
            .args(["-D"])
            .arg(&c.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&c.root);
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

fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The shared PostgreSQL cluster.
pub fn postgres() -> &'static Postgres {
    PG.get_or_init(|| {
        start_postgres().unwrap_or_else(|e| {
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

fn start_postgres() -> Result<Postgres, String> {
    let bin = pg_bindir().ok_or("no /usr/lib/postgresql/*/bin/initdb")?;
    // SAFETY: geteuid has no preconditions.
    let as_postgres = unsafe { geteuid() } == 0;
    let root = std::env::temp_dir().join(format!("runbook-test-pg-{}", std::process::id()));
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
    let _ = CLEANUP.set(Cleanup { pg_ctl: bin.join("pg_ctl"), data: data.clone(), root: root.clone(), as_postgres });
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        atexit(stop_servers);
    }
    let mut initdb = as_user(as_postgres, &bin.join("initdb"));
    initdb.arg("-D").arg(&data).args(["-U", "runbook", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "-N"]);
    initdb.arg(format!("--pwfile={}", root.join("pw").display()));
    run(initdb, "initdb")?;
    let port = free_port();
    let mut start = as_user(as_postgres, &bin.join("pg_ctl"));
    start.arg("-D").arg(&data).arg("-l").arg(root.join("log")).args(["-w", "-o"]);
    start.arg(format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
        root.display()
    ));
    start.arg("start");
    run(start, "pg_ctl start")
        .map_err(|e| format!("{e}\nlog: {}", std::fs::read_to_string(root.join("log")).unwrap_or_default()))?;
    Ok(Postgres { url: format!("postgres://runbook:{password}@127.0.0.1:{port}/postgres"), port, password })
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
