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
    let _ = CLEANUP.set(Cleanup { pg_ctl: bin.join("pg_ctl"), data, root: root.clone(), as_postgres });
    // SAFETY: registering a plain extern "C" function.
    unsafe {
        atexit(stop_servers);
    }
    run(start, "pg_ctl start")
        .map_err(|e| format!("{e}\nlog: {}", std::fs::read_to_string(root.join("log")).unwrap_or_default()))?;
    Ok(Postgres { url: format!("postgres://runbook:{password}@127.0.0.1:{port}/postgres"), port, password })
}
