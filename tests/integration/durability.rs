//! The journal keeps every commit whoever else opens it, and `runbook` changes nothing on disk
//! that is not its own.
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use crate::harness::{signal, Env};
use crate::run::wait_for;

/// An outside SQLite client (python3's sqlite3 module, as an SRE or a monitoring probe would use)
/// reading the journal: once, or in a loop until killed.
pub fn outside_reader(db: &std::path::Path, looping: bool) -> Child {
    let script = format!(
        "import sqlite3, time, sys\n\
         while True:\n\
         \x20   try:\n\
         \x20       c = sqlite3.connect({db:?}, timeout=5)\n\
         \x20       c.execute('select count(*) from runs').fetchall()\n\
         \x20       c.execute('select count(*) from steps').fetchall()\n\
         \x20       c.close()\n\
         \x20   except sqlite3.OperationalError:\n\
         \x20       pass\n\
         \x20   if not {looping}: sys.exit(0)\n\
         \x20   time.sleep(0.005)\n",
        db = db.display().to_string(),
        looping = if looping { "True" } else { "False" },
    );
    Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 reads the journal in the durability tests: apt-get install python3")
}

#[test]
fn an_outside_reader_during_a_run_makes_no_completed_step_run_again() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "two" }
step("one", function() exec{shell = "echo one >> ledger"}; sleep("1s") end)
step("two", function() exec{shell = "touch in-two; sleep 30"} end)
"#,
    );
    let runner = env.spawn(&["run", "rb.lua"]);
    wait_for(|| env.read("ledger").contains("one"));
    // Read once while step one runs, the way it was found.
    let mut reader = outside_reader(&env.journal_path(), false);
    assert!(reader.wait().unwrap().success());
    wait_for(|| env.path("in-two").exists());
    signal(runner.id(), 9);
    let _ = crate::harness::finish(runner, 30);
    let show = env.show("last");
    assert_eq!(Env::step(&show, "one")["status"], "succeeded", "{show}");
    env.write("rb.lua", &env.read("rb.lua").replace("sleep 30", "true"));
    env.run(&["resume", "last", "--allow-changed"]).assert_code(0);
    assert_eq!(env.read("ledger"), "one\n", "step one ran once");
}

/// A private character device like /dev/null (as root, the way the suite runs in CI), else a
/// named pipe: never the machine's own /dev/null, which a regression would break for everyone.
fn device(env: &Env, name: &str) -> std::path::PathBuf {
    let path = env.path(name);
    let made = Command::new("mknod").args(["-m", "666"]).arg(&path).args(["c", "1", "3"]).status();
    if !made.is_ok_and(|s| s.success()) {
        assert!(Command::new("mkfifo").arg(&path).status().unwrap().success(), "mkfifo {}", path.display());
    }
    path
}

fn is_special(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::symlink_metadata(path).unwrap().file_type();
    t.is_char_device() || t.is_fifo()
}

#[test]
fn a_state_path_that_is_not_a_journal_is_refused_and_left_exactly_as_it_was() {
    let env = Env::new();
    let null = device(&env, "null");
    let mode = std::fs::metadata(&null).unwrap().permissions().mode();
    let r = env.run(&["--state", null.to_str().unwrap(), "history"]);
    r.assert_code(2);
    assert!(
        r.stderr.contains("null: it is a device, not a journal") || r.stderr.contains("null: it is a named pipe"),
        "{}",
        r.stderr
    );
    assert!(is_special(&null));
    assert_eq!(std::fs::metadata(&null).unwrap().permissions().mode(), mode);

    let notes = env.write("notes.txt", "my notes\n");
    std::fs::set_permissions(&notes, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = env.run(&["--state", "notes.txt", "history"]);
    r.assert_code(2);
    assert!(r.stderr.contains("not a SQLite database"), "{}", r.stderr);
    assert_eq!(env.read("notes.txt"), "my notes\n");
    assert_eq!(std::fs::metadata(&notes).unwrap().permissions().mode() & 0o777, 0o644);

    std::fs::create_dir(env.path("folder")).unwrap();
    env.run(&["--state", "folder", "history"]).assert_code(2);
    std::os::unix::fs::symlink(&null, env.path("link.db")).unwrap();
    env.run(&["--state", "link.db", "history"]).assert_code(2);
    assert!(is_special(&null));
    assert_eq!(std::fs::metadata(&null).unwrap().permissions().mode(), mode);

    // A journal of our own that others could read is restricted to its owner.
    env.run(&["--state", "own.db", "history"]).assert_code(0);
    std::fs::set_permissions(env.path("own.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    env.run(&["--state", "own.db", "history"]).assert_code(0);
    assert_eq!(std::fs::metadata(env.path("own.db")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_metrics_file_or_history_pointed_at_a_device_leaves_the_device_alone() {
    let env = Env::new();
    env.write("rb.lua", "runbook { name = \"m\" }\nstep(\"s\", function() end)\n");
    let null = device(&env, "null");
    let mode = std::fs::metadata(&null).unwrap().permissions().mode();
    let r = env.run(&["run", "rb.lua", "--metrics-file", null.to_str().unwrap()]);
    r.assert_code(0);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert!(is_special(&null), "still a device");
    assert_eq!(std::fs::metadata(&null).unwrap().permissions().mode(), mode);
    let r = env.cmd(&["repl"]).env("RUNBOOK_HISTORY", &null).output().unwrap();
    assert_eq!(r.status.code(), Some(0), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(is_special(&null));
    assert_eq!(std::fs::metadata(&null).unwrap().permissions().mode(), mode);
}

#[test]
fn a_journal_with_a_corrupt_schema_is_an_unusable_state_exit_2() {
    let env = Env::new();
    env.run(&["--state", "j.db", "history"]).assert_code(0);
    // Keep the SQLite header and catalogue, smash the page of the migrations table (page 2).
    let path = env.path("j.db");
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().skip(4096).take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let r = env.run(&["--state", "j.db", "history"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("cannot open the journal at j.db"), "{}", r.stderr);
}

#[test]
fn a_journal_that_cannot_record_stops_the_run_instead_of_claiming_success() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "chatty" }
step("chatter", function() exec{"seq", "1", "40000"} end)
step("after", function() exec{shell = "echo after >> ledger"} end)
"#,
    );
    env.run(&["history"]).assert_code(0);
    let size: u64 = ["", "-wal", "-shm"]
        .iter()
        .map(|s| std::fs::metadata(format!("{}{s}", env.journal_path().display())).map(|m| m.len()).unwrap_or(0))
        .max()
        .unwrap();
    // A full disk, as the runner sees it: no file may grow past a few KiB more than now.
    let limit_kib = size / 1024 + 64;
    // `ulimit -f` counts 512-byte blocks in dash and 1 KiB blocks in bash: twice the KiB is
    // at least the KiB.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("trap '' XFSZ; ulimit -f {}; exec \"$0\" run rb.lua", limit_kib * 2),
            crate::harness::BIN,
        ])
        .current_dir(env.dir.path())
        .env("RUNBOOK_NO_PROGRESS", "1")
        .env_remove("RUNBOOK_STATE")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("journal"), "says why: {stderr}");
    assert_eq!(env.read("ledger"), "", "no step ran after the journal stopped recording");
    let status = env.status("last");
    assert_ne!(status, "succeeded");
    // Once there is room, the run resumes to its end.
    env.run(&["resume", "last"]).assert_code(0);
    assert_eq!(env.read("ledger"), "after\n");
}
