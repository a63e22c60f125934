//! The command line: definitions (clap) and dispatch. Each command's work is in `commands`.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::output::Format;

const EXIT_CODES: &str = "\
Exit codes:
  0    the run succeeded (or the command did what it was asked)
  1    the run failed, was rolled back, or was cancelled
  2    usage or bad input: command line, runbook, params, config
  3    the run stopped at an approval gate: `runbook approve RUN`, then `runbook resume RUN`
  4    the runbook's lock is held by another live run
  5    not allowed: an approval policy or a console role refused you
  130  interrupted by SIGINT/SIGTERM; resumable with `runbook resume`";

#[derive(Debug, Parser)]
#[command(
    name = "runbook",
    version,
    about = "Run operational procedures written in Lua, step by step, checkpointed in a journal",
    long_about = "Run operational procedures written in Lua, step by step. Every step is checkpointed in a \
journal (SQLite at .runbook/state.db by default), so a run that failed, crashed or waits for approval \
resumes where it stopped and never repeats a completed step.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The journal: a SQLite file path or sqlite://PATH [default: .runbook/state.db]
    #[arg(long, env = "RUNBOOK_STATE", global = true, value_name = "URL")]
    pub state: Option<String>,
    /// The project configuration (SSH inventory) [default: runbook.toml here or in a folder above]
    #[arg(long, env = "RUNBOOK_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// More diagnostics on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Format of the diagnostics on stderr
    #[arg(long, value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a runbook
    #[command(after_help = "Examples:
  runbook run examples/quickstart.lua
  runbook run deploy.lua -p version=1.4.2 -p hosts=web-1,web-2
  runbook run backup.lua --params-file prod.toml --yes
  runbook run maintenance.lua --dry-run
  runbook run deploy.lua --output json | jq .

Exit codes: 0 succeeded, 1 failed/rolled back/cancelled, 2 bad input, 3 waiting for approval,
4 lock held, 5 not allowed, 130 interrupted.")]
    Run(RunArgs),
    /// Resume a failed, interrupted or waiting run from where it stopped
    #[command(after_help = "Examples:
  runbook resume --last
  runbook resume 20261122-031502-7f3a
  runbook resume 20261122-0315 --allow-changed     # a unique prefix is enough
  DATABASE_URL=... runbook resume --last           # secrets are never stored: give them again

Completed steps are not run again: they return their recorded results. A step that was running
when the run stopped runs again (at-least-once).")]
    Resume(ResumeArgs),
    /// List the steps a runbook will meet, without running anything
    #[command(after_help = "Examples:
  runbook plan examples/quickstart.lua
  runbook plan deploy.lua -p version=1.4.2 --output json")]
    Plan(PlanArgs),
    /// Check a runbook's syntax, declaration and step definitions, without running anything
    #[command(after_help = "Examples:
  runbook check examples/quickstart.lua
  for f in examples/*.lua; do runbook check \"$f\" || exit 1; done

Only the steps the evaluation reaches are checked: code that needs a step's real result stops
it, and a note says where.")]
    Check {
        /// The runbook file
        file: PathBuf,
    },
    /// Render a runbook as a Markdown guide: parameters, steps, gates, undo, what happens on failure
    #[command(after_help = "Examples:
  runbook doc runbooks/db_backup.lua
  runbook doc runbooks/deploy.lua --output docs/runbooks/deploy.md

Computed from the runbook in plan mode: no primitive runs. Steps after code that needs a step's
real result are not listed; a note says where.")]
    Doc {
        /// The runbook file
        file: PathBuf,
        /// A param value for the evaluation, key=value (repeatable)
        #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        /// Write the guide to this file instead of stdout
        #[arg(long, value_name = "FILE.md")]
        output: Option<PathBuf>,
    },
    /// Run the tests of runbooks (*_test.lua): each runs runbooks through the real engine with fakes
    #[command(after_help = "Examples:
  runbook test                       # every *_test.lua under this folder
  runbook test runbooks/ -k canary   # the tests whose name contains \"canary\"
  runbook test deploy_test.lua --output json
  runbook test --junit report.xml    # and the report as JUnit XML for CI
  runbook test --crash               # and every run() crashed at each journal write, resumed
  runbook test --coverage            # and the steps, undos, gates, branches no test reached
  runbook test --from-run last > deploy_incident_test.lua   # a test from a journaled run

A test file has test(name, fn), describe, expect(x).to_be/.to_equal/.to_match/.to_contain/
.to_fail_with, expect_calls(r, \"exec\", {...}), and run(\"deploy.lua\", { params, fakes, approve }).
A primitive call no fake answers fails the test. Exit codes: 0 all passed, 1 a test failed,
2 a test file could not be loaded.")]
    Test {
        /// Test files, or folders searched for *_test.lua (default: this folder)
        paths: Vec<PathBuf>,
        /// Only the tests whose name contains this text
        #[arg(short = 'k', value_name = "TEXT")]
        filter: Option<String>,
        /// text or json
        #[arg(long, default_value = "text")]
        output: Format,
        /// Also prove every run of the tests safe to resume after a crash at any point
        /// (crash_everywhere for each run()): slower, by the number of journal writes
        #[arg(long)]
        crash: bool,
        /// Also write the report as JUnit XML to this file (for CI)
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Also list, per runbook, the steps, undos, gates and `when` branches no test reached
        #[arg(long)]
        coverage: bool,
        /// Write a test skeleton from a journaled run (its params, its steps' results as fakes,
        /// its outcome) to stdout, instead of running tests
        #[arg(long, value_name = "RUN", conflicts_with_all = ["paths", "filter", "crash", "junit", "coverage"])]
        from_run: Option<String>,
    },
    /// Create a runbook project: runbook.toml, a runbook and its tests, editor stubs, a README
    #[command(after_help = "Examples:
  runbook init ops        # then: cd ops && runbook test && runbook run hello.lua

Nothing is written over: a file that exists already stops it (exit 2).")]
    Init {
        /// The project's folder (made when missing)
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Write the LuaLS stubs of every runbook global and stdlib module into a folder
    #[command(after_help = "Examples:
  runbook stubs types     # point .luarc.json's workspace.library at it")]
    Stubs {
        /// Where to write them
        dir: PathBuf,
    },
    /// List recent runs, newest first
    #[command(after_help = "Examples:
  runbook history
  runbook history --runbook postgres-backup --limit 50
  runbook history --output json")]
    History {
        /// Only runs of this runbook (its declared name)
        #[arg(long)]
        runbook: Option<String>,
        /// How many runs
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
    /// Show a run: its steps, statuses, attempts, durations, results and errors
    #[command(after_help = "Examples:
  runbook show last
  runbook show 20261122-031502-7f3a --output json
  runbook show last --events         # with every log line and output line")]
    Show {
        /// Run id, unique prefix, or `last`
        run: String,
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
        /// Also print the run's events (log lines, command output, approvals)
        #[arg(long)]
        events: bool,
    },
    /// Approve (or reject) the approval gate a run is waiting at, under the gate's policy
    #[command(after_help = "Examples:
  runbook approve last
  runbook approve 20261122-031502-7f3a --comment \"checked the plan\"
  runbook approve last --reject --comment \"not during the sale\"

You decide as your OS user, taken as the console user of the same name in runbook.toml's
[serve.users] (for its groups). A gate declared with a policy (approve(msg, { approvers, quorum,
self_approval, timeout })) refuses the person who started the run unless self_approval = true,
and waits for `quorum` distinct approvals. Once approved, a worker (`runbook worker`, or
`runbook serve --workers N`) resumes the run by itself; without one, `runbook resume RUN`.
A rejection cancels the run (rolled back with rollback = \"auto\").")]
    Approve {
        /// Run id, unique prefix, or `last`
        run: String,
        /// Reject instead: the run is cancelled (a gate with a policy needs --comment)
        #[arg(long)]
        reject: bool,
        /// Why, journaled with the decision
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
    },
    /// Cancel a run: a live one stops within one heartbeat (10 s by default; its running step is abandoned), a stopped one is closed; with rollback = "auto", the undos of its completed steps run
    #[command(after_help = "Examples:
  runbook cancel 20261122-031502-7f3a
  runbook cancel last --no-rollback      # close it without running the undos

A runbook declared with rollback = \"auto\" is rolled back when cancelled (the undos of its
completed steps run, newest first, each journaled), unless --no-rollback. The run's lock is
released when the run ends.")]
    Cancel {
        /// Run id, unique prefix, or `last`
        run: String,
        /// Do not run the undos, even for a runbook with rollback = "auto"
        #[arg(long)]
        no_rollback: bool,
    },
    /// Roll back a failed, cancelled or waiting run on demand: the undos of its completed steps, newest first
    #[command(after_help = "Examples:
  runbook rollback last
  runbook rollback 20261122-031502-7f3a

Each undo is journaled; an undo already done is not run again, so an interrupted rollback is
continued by running the command again (or `runbook resume`).")]
    Rollback {
        /// Run id, unique prefix, or `last`
        run: String,
        /// Roll back even though the runbook file changed since the run started
        #[arg(long)]
        allow_changed: bool,
        #[command(flatten)]
        params: ParamArgs,
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Release a runbook's lock by hand (journaled on the run that held it)
    #[command(after_help = "Examples:
  runbook unlock credential-rotation

A run keeps its lock until it ends (succeeded, cancelled or rolled back), also while it waits
for approval or sits failed and resumable. Unlock when you decided that run will not continue;
resuming it later needs the lock again.")]
    Unlock {
        /// The lock's name (the runbook's `lock = ...`)
        name: String,
    },
    /// Queue a run for the workers (`runbook worker`, `runbook schedule`) to take
    #[command(after_help = "Examples:
  runbook enqueue runbooks/db_backup.lua -p database=app
  RUNBOOK_STATE=postgres://runbook@db/runbook runbook enqueue vacuum.lua

The runbook is checked now (syntax, declaration, params); a worker runs the text queued here.
Secrets are not queued: workers read them from their own environment.")]
    Enqueue {
        /// The runbook file
        file: PathBuf,
        #[command(flatten)]
        params: ParamArgs,
    },
    /// Run queued runs, and resume runs whose worker died, until SIGTERM
    #[command(after_help = "Examples:
  RUNBOOK_STATE=postgres://runbook@db/runbook runbook worker --concurrency 4
  runbook worker --until-empty                    # drain the queue, then exit

SIGTERM (or Ctrl-C) lets each running step finish, checkpoints, and exits; a second one stops
at once. Runs a worker held when it died are resumed by another worker after their lease
(RUNBOOK_LEASE_SECS, 30 s), at once on the same host.")]
    Worker(WorkerArgs),
    /// The web console and HTTP API: runs live, approvals by the right people, the catalogue, the audit log
    #[command(after_help = "Examples:
  runbook serve                                   # http://127.0.0.1:8080, users from runbook.toml [serve]
  runbook serve --workers 2                       # and run the queued runs in this process
  runbook serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem
  runbook serve --hash-password                   # a password hash for [serve.users.NAME]
  runbook serve --new-token                       # an API token, and its hash for runbook.toml

Everything needs a login (or an API token: Authorization: Bearer ...), unless [serve] says
auth = \"none\" on a loopback address. A non-loopback address needs TLS (or allow_plain_http
behind a TLS proxy). The JSON API is under /api/v1; see the README.")]
    Serve(ServeArgs),
    /// The built-in scheduler: fires the [[schedule]] entries of runbook.toml and runs them
    #[command(after_help = "Examples:
  runbook schedule                       # in the foreground (systemd, a container)
  runbook schedule --list                # each entry, its next fire times and last outcome
  runbook schedule --once                # fire what is due, run it, exit
  runbook schedule --unpause nightly-backup

Any number of schedulers may share a PostgreSQL journal: each fire time runs exactly once.")]
    Schedule(ScheduleArgs),
    /// The incident REPL: every primitive live, attached to a run to inspect, retry, skip and resume
    #[command(after_help = "Examples:
  runbook repl
  runbook repl --last                  # attached to the newest run: run.steps, :retry, :resume
  runbook repl --run 20261122-031502-7f3a

Inside: an expression prints its value, `local x = ...` keeps x, Tab completes, Ctrl-R searches
history, Ctrl-C cancels a running call, :help lists the commands, Ctrl-D leaves. Every chunk is
recorded in the session (`runbook sessions`); history is in $XDG_STATE_HOME/runbook/history,
secrets redacted (RUNBOOK_HISTORY=off or =PATH).")]
    Repl {
        /// Attach to this run (id, unique prefix, or `last`)
        #[arg(long, value_name = "RUN", conflicts_with = "last")]
        run: Option<String>,
        /// Attach to the newest run
        #[arg(long)]
        last: bool,
    },
    /// List REPL sessions, or print one as a Markdown timeline for the postmortem
    #[command(after_help = "Examples:
  runbook sessions
  runbook sessions show last > incident-timeline.md
  runbook sessions show 20261122-0315 --output json")]
    Sessions {
        #[command(subcommand)]
        show: Option<SessionsCommand>,
        /// How many sessions
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
    /// Print shell completions
    #[command(after_help = "Examples:
  runbook completions bash > /etc/bash_completion.d/runbook
  runbook completions zsh > \"${fpath[1]}/_runbook\"")]
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Print a session: Markdown (time, who, what, outcome), or JSON
    Show {
        /// Session id, unique prefix, or `last`
        session: String,
        #[arg(long, value_enum, default_value = "text")]
        output: Format,
    },
}

#[derive(Debug, Default, Args)]
pub struct ParamArgs {
    /// A param value, key=value (repeatable)
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// Param values from a TOML file (key = value)
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,
}

#[derive(Debug, Default, Args)]
pub struct ExecArgs {
    /// Pass every approval gate
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Live progress and plain lines (text), or one JSON object per event (json)
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
    /// Memory limit for the Lua VM, e.g. 64MB
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<usize>,
    /// After the run, write node_exporter textfile metrics of the runbook to this file
    /// (atomically; one file per runbook)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// When another run holds the runbook's lock, wait up to this long for it (e.g. 10m)
    /// instead of exiting 4 at once
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_wait: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook file
    pub file: PathBuf,
    #[command(flatten)]
    pub params: ParamArgs,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Evaluate the runbook and its steps, but let no primitive change anything: each reports
    /// what it would do. The run is journaled as a dry run.
    #[arg(long)]
    pub dry_run: bool,
    /// For system cron: never prompt (a gate stops the run, exit 3), events and logs as JSON
    /// lines on stderr, nothing on stdout
    #[arg(long)]
    pub cron: bool,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Run id, unique prefix, or `last`
    #[arg(required_unless_present = "last", conflicts_with = "last")]
    pub run: Option<String>,
    /// Resume the newest run
    #[arg(long)]
    pub last: bool,
    /// Resume even though the runbook file changed since the run started
    #[arg(long)]
    pub allow_changed: bool,
    #[command(flatten)]
    pub params: ParamArgs,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default: [serve] listen, else 127.0.0.1:8080)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key the console serves HTTPS
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also run queued and approved runs in this process, like `runbook worker --concurrency N`
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=256))]
    pub workers: u16,
    /// Serve plain HTTP on a non-loopback address (behind a proxy that terminates TLS)
    #[arg(long)]
    pub allow_plain_http: bool,
    /// Print an argon2id hash of a password read from the terminal, for [serve.users.NAME], and exit
    #[arg(long, conflicts_with = "new_token")]
    pub hash_password: bool,
    /// Print a new API token and the hash to put in runbook.toml, and exit
    #[arg(long)]
    pub new_token: bool,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Runs at once in this process
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// How often an idle worker looks for queued runs
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub poll: std::time::Duration,
    /// Exit when the queue is empty and nothing runs (prints a JSON summary on stdout)
    #[arg(long)]
    pub until_empty: bool,
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// List the schedules, their next fire times and last outcomes, and exit
    #[arg(long, conflicts_with_all = ["once", "unpause"])]
    pub list: bool,
    /// Fire whatever is due (catch-up included), run it, and exit
    #[arg(long, conflicts_with = "unpause")]
    pub once: bool,
    /// Let a schedule paused by `pause_after_failures` fire again, and exit
    #[arg(long, value_name = "NAME")]
    pub unpause: Option<String>,
    /// Runs at once in this scheduler
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The runbook file
    pub file: PathBuf,
    #[command(flatten)]
    pub params: ParamArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got '{s}'")),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mult) = if let Some(n) = t.strip_suffix("GB").or_else(|| t.strip_suffix('G')) {
        (n, 1usize << 30)
    } else if let Some(n) = t.strip_suffix("MB").or_else(|| t.strip_suffix('M')) {
        (n, 1 << 20)
    } else if let Some(n) = t.strip_suffix("KB").or_else(|| t.strip_suffix('K')) {
        (n, 1 << 10)
    } else {
        (t.strip_suffix('B').unwrap_or(&t), 1)
    };
    let n: usize = num.trim().parse().map_err(|_| format!("expected a size such as 64MB, got '{s}'"))?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    if bytes < (1 << 20) {
        return Err("the memory limit must be at least 1MB".into());
    }
    Ok(bytes)
}

fn init_tracing(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::new(f),
        _ => EnvFilter::new(match verbose {
            0 => "warn,runbook::lua=off,sqlx=off",
            1 => "info,sqlx=warn",
            2 => "debug,sqlx=info",
            _ => "trace",
        }),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { crate::error::exit::USAGE } else { 0 });
        }
    };
    // Unattended: `run --cron`, and the scheduler and workers (which also log JSON lines).
    let cron = matches!(&cli.command, Command::Run(r) if r.cron)
        || matches!(&cli.command, Command::Worker(_))
        || matches!(&cli.command, Command::Serve(a) if !a.hash_password && !a.new_token)
        || matches!(&cli.command, Command::Schedule(a) if !a.list && a.unpause.is_none());
    if cron {
        // Set before any thread starts: gates never ask under --cron.
        std::env::set_var("RUNBOOK_NONINTERACTIVE", "1");
    }
    init_tracing(cli.verbose, if cron { LogFormat::Json } else { cli.log_format });
    // Every TLS client of the process (reqwest inside object_store included) uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "runbook", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(crate::error::exit::FAILED);
        }
    };
    let code = runtime.block_on(crate::commands::dispatch(cli));
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Some(kib) = crate::process::peak_rss_kib() {
        tracing::debug!("peak RSS {kib} KiB");
    }
    match code {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e, cron);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints an error to stderr: runbook errors as `FILE:LINE: ...`, others as `error: ...`.
fn report(e: &Error, json: bool) {
    let text = crate::secret::redact(&e.to_string()).into_owned();
    match e {
        // Under --cron stderr carries JSON lines only.
        _ if json => eprintln!("{}", serde_json::json!({"event": "error", "message": text, "exit": e.exit_code()})),
        Error::Runbook(_) => eprintln!("{text}"),
        _ => eprintln!("error: {text}"),
    }
}
