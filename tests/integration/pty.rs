//! A pseudo-terminal driver for the REPL tests: the real binary on the slave side of a pty (its
//! own session, the pty its controlling terminal, so Ctrl-C is a real SIGINT), keys written to
//! the master, and output read back with ANSI escapes removed.
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pty {
    master: std::fs::File,
    pub child: Child,
    /// Everything read so far, escapes removed.
    pub seen: String,
    /// Where the next `expect` starts looking.
    cursor: usize,
    /// Bytes read that do not yet form a whole UTF-8 character.
    pending: Vec<u8>,
    /// Length of `seen` when the last line was entered: the next line waits for a prompt after it.
    entered_at: usize,
}

pub const CTRL_C: &str = "\x03";
pub const CTRL_D: &str = "\x04";
pub const CTRL_U: &str = "\x15";
pub const TAB: &str = "\t";
pub const UP: &str = "\x1b[A";

impl Pty {
    pub fn spawn(mut cmd: Command) -> Pty {
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let size = libc::winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty fills two descriptors we then own.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptors from openpty, owned here.
        let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup pty"));
        cmd.stdin(io(&slave))
            .stdout(io(&slave))
            .stderr(io(&slave))
            .env("TERM", "xterm")
            .env_remove("RUNBOOK_NO_PROGRESS");
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn runbook on a pty");
        drop(slave);
        // SAFETY: setting O_NONBLOCK on our own descriptor.
        unsafe {
            let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Pty {
            master: std::fs::File::from(master),
            child,
            seen: String::new(),
            cursor: 0,
            pending: Vec::new(),
            entered_at: 0,
        }
    }

    pub fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("write to pty");
        self.master.flush().ok();
    }

    /// Waits until the REPL sits at a prompt (its output ends with one): keys typed while a
    /// call runs would reach the terminal in cooked mode, not the line editor.
    pub fn wait_prompt(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let at_prompt = |s: &str| ["runbook> ", "]> ", "...> "].iter().any(|p| s.ends_with(p));
        while !(at_prompt(&self.seen) && self.seen[self.entered_at..].contains('\n')) {
            let tail: String = self.seen.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
            assert!(Instant::now() < deadline, "no prompt; the output ends with {tail:?}");
            self.read_some(Duration::from_millis(20));
        }
    }

    /// At the prompt, types a line and presses Enter.
    pub fn line(&mut self, text: &str) {
        self.wait_prompt();
        self.enter(text);
    }

    /// Types a line and presses Enter, without waiting (the editor is known to be reading).
    pub fn enter(&mut self, text: &str) {
        self.send(text);
        // Let the editor take the keys before Enter, as a person would.
        std::thread::sleep(Duration::from_millis(30));
        self.read_some(Duration::from_millis(10));
        self.entered_at = self.seen.len();
        self.send("\r");
    }

    fn read_some(&mut self, wait: Duration) {
        let mut pfd = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        let mut buf = [0u8; 65536];
        loop {
            match self.master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    // Decode up to the last whole character; keep a split one for the next read.
                    let valid = match std::str::from_utf8(&self.pending) {
                        Ok(_) => self.pending.len(),
                        Err(e) if e.error_len().is_none() => e.valid_up_to(),
                        Err(_) => self.pending.len(),
                    };
                    let text = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                    self.pending.drain(..valid);
                    self.seen.push_str(&strip_ansi(&text));
                }
                Err(_) => break,
            }
        }
    }

    /// Waits for `needle` after the cursor, and moves the cursor past it. Returns what came
    /// between.
    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, Duration::from_secs(20))
    }

    pub fn expect_within(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen[self.cursor..].find(needle) {
                let start = self.cursor;
                self.cursor += i + needle.len();
                return self.seen[start..self.cursor].to_string();
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting for {needle:?}; output after the last match:\n{}", &self.seen[self.cursor..]);
            }
            self.read_some(Duration::from_millis(50));
        }
    }

    /// Presses Tab as a person does: after a pause (the editor inserts a literal tab when more
    /// input is already waiting, as in a paste).
    pub fn tab(&mut self) {
        self.read_some(Duration::from_millis(100));
        self.send(TAB);
    }

    /// Types text a key at a time.
    pub fn type_keys(&mut self, text: &str) {
        for c in text.chars() {
            self.send(&c.to_string());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Ctrl-C; the next `line` waits for the prompt that follows it.
    pub fn interrupt(&mut self) {
        self.read_some(Duration::from_millis(10));
        self.entered_at = self.seen.len();
        self.send(CTRL_C);
    }

    /// Leaves the REPL with Ctrl-D and waits for it to exit.
    pub fn quit(mut self) -> String {
        self.wait_prompt();
        self.send(CTRL_D);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            self.read_some(Duration::from_millis(50));
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "repl exited with {status}:\n{}", self.seen);
                self.read_some(Duration::from_millis(10));
                return std::mem::take(&mut self.seen);
            }
            assert!(Instant::now() < deadline, "repl did not exit after Ctrl-D:\n{}", self.seen);
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes CSI and OSC escape sequences and carriage returns.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.peek() == Some(&'\\')) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
