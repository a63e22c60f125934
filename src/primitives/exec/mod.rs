//! `exec`: local commands, argv form or an explicit shell, with timeout, env, cwd and stdin,
//! output streamed line by line as it comes. The child runs in its own process group, and the
//! whole group is killed on timeout or when the step is abandoned.
pub mod fake;
pub mod lua;
pub mod orphans;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("`{command}` timed out after {after}; its process group was killed")]
    Timeout { command: String, after: String },
    #[error("`{command}` exited with code {code}{stderr}")]
    Failed { command: String, code: i32, stderr: String },
    #[error("`{command}`: {source}")]
    Io { command: String, source: std::io::Error },
    #[error("`{command}` wrote more than {limit} of output, the run's memory limit (--max-memory); its process group was killed. Send large output to a file (`> out.txt`) and read what you need")]
    TooMuchOutput { command: String, limit: String },
}

#[derive(Debug, Clone)]
pub enum Program {
    Argv(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub program: Program,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub stdin: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    pub check: bool,
    /// The most output (stdout and stderr together) held in memory; past it the command is
    /// killed (the run's `--max-memory`).
    pub max_output: Option<usize>,
    /// The attempt the command belongs to (`runbook/<run>/<step>#<attempt>`), passed down in
    /// [`orphans::LABEL_VAR`] so that what it leaves running can be found later.
    pub label: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub ms: u64,
}

impl ExecSpec {
    /// The command as shown in messages (secrets never reach argv, see the Lua binding).
    pub fn display(&self) -> String {
        match &self.program {
            Program::Argv(a) => a.join(" "),
            Program::Shell(s) => format!("sh -c {s:?}"),
        }
    }
}

/// Kills the child's whole process group unless the child was reaped.
struct GroupGuard {
    /// The group to kill when the command's future is dropped (None once it exited).
    pgid: Option<i32>,
    /// The group as registered in [`RUNNING`].
    registered: Option<i32>,
}

/// The process groups of the commands running now, with the command as shown: Ctrl-C in the
/// REPL signals them and waits to see them exit.
static RUNNING: std::sync::Mutex<Vec<(i32, String)>> = std::sync::Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<(i32, String)>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends SIGTERM to every command running now; returns (pgid, command) of those signalled.
pub fn terminate_running() -> Vec<(i32, String)> {
    let all = running().clone();
    for (pgid, _) in &all {
        // SAFETY: killpg on a group this process created.
        unsafe {
            libc::killpg(*pgid, libc::SIGTERM);
        }
    }
    all
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.registered {
            running().retain(|(p, _)| *p != group);
        }
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg on a group we created; failure (already gone) is harmless.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Runs the command; `on_line` sees every output line as it arrives.
pub async fn run(spec: &ExecSpec, mut on_line: impl FnMut(Stream, &str)) -> Result<ExecOutput, ExecError> {
    let command = spec.display();
    let mut cmd = match &spec.program {
        Program::Argv(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        Program::Shell(script) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
    };
    // The journal's URL (with its password) is the runner's, not the command's.
    cmd.env_remove("RUNBOOK_STATE");
    match &spec.label {
        Some(label) => cmd.env(orphans::LABEL_VAR, label),
        None => cmd.env_remove(orphans::LABEL_VAR),
    };
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    // A runner killed outright (SIGKILL, OOM) takes its command along: the resumed step runs it
    // again, and two copies must not run side by side.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let program = match &spec.program {
        Program::Argv(a) => a[0].clone(),
        Program::Shell(_) => "/bin/sh".into(),
    };
    let mut child = cmd.spawn().map_err(|source| ExecError::Spawn { program, source })?;
    let pgid = child.id().map(|p| p as i32);
    if let Some(p) = pgid {
        running().push((p, command.clone()));
    }
    let mut guard = GroupGuard { pgid, registered: pgid };
    let io_err = |source| ExecError::Io { command: command.clone(), source };

    if let (Some(data), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    let stdout = child.stdout.take().ok_or_else(|| io_err(std::io::Error::other("no stdout")))?;
    let stderr = child.stderr.take().ok_or_else(|| io_err(std::io::Error::other("no stderr")))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Stream, Vec<u8>)>(256);
    let pump = |stream: Stream, reader: Box<dyn AsyncRead + Unpin + Send>| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send((stream, line)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    pump(Stream::Stdout, Box::new(stdout));
    pump(Stream::Stderr, Box::new(stderr));
    drop(tx);

    let cap = spec.max_output.unwrap_or(usize::MAX);
    let collect = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        while let Some((stream, line)) = rx.recv().await {
            let text = String::from_utf8_lossy(&line);
            on_line(stream, text.trim_end_matches(['\n', '\r']));
            if out.len() + err.len() + line.len() > cap {
                return None;
            }
            match stream {
                Stream::Stdout => out.extend_from_slice(&line),
                Stream::Stderr => err.extend_from_slice(&line),
            }
        }
        let status = child.wait().await;
        Some((out, err, status))
    };
    let collected = match spec.timeout {
        Some(limit) => match tokio::time::timeout(limit, collect).await {
            Ok(r) => r,
            Err(_) => {
                drop(guard);
                return Err(ExecError::Timeout { command, after: crate::duration::human(limit) });
            }
        },
        None => collect.await,
    };
    let Some((stdout, stderr, status)) = collected else {
        drop(guard);
        return Err(ExecError::TooMuchOutput { command, limit: format!("{} MiB", cap.div_ceil(1 << 20)) });
    };
    let status = status.map_err(io_err)?;
    guard.pgid = None;
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    if spec.check && code != 0 {
        // Redacted before it is cut, so that no end of a secret survives the cut.
        let tail = crate::secret::redact(&String::from_utf8_lossy(&stderr)).into_owned();
        let tail = tail.trim();
        let tail: String = if tail.len() > 500 {
            format!("…{}", &tail[tail.floor_char_boundary(tail.len() - 500)..])
        } else {
            tail.to_string()
        };
        return Err(ExecError::Failed {
            command,
            code,
            stderr: if tail.is_empty() { String::new() } else { format!(": {tail}") },
        });
    }
    Ok(ExecOutput { code, stdout, stderr, ms: started.elapsed().as_millis() as u64 })
}
