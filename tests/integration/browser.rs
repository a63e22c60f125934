//! The console in a real browser: Debian's Chromium, driven over WebDriver by chromedriver.
//! An operator logs in, starts a runbook from its form, watches its steps turn green live, is
//! refused at the gate (she started the run), and an approver logs in and approves it; the run
//! finishes, seen live. A screenshot of the run page is taken (kept in docs/ for the README
//! when RUNBOOK_SCREENSHOT names the file).
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::console::{team_config, Console};
use crate::harness::Env;

const SLOW_GATED: &str = r#"runbook {
  name = "gated",
  description = "Migrate the orders table, with a DBA's approval between the copy and the switch",
  params = {
    table = { type = "string", default = "orders", description = "the table to migrate" },
    mode = { type = "enum", choices = { "online", "offline" }, default = "online" },
  },
}
step("snapshot", function() exec{shell = "sleep 1; echo snapshot >> ledger"} end)
step("copy rows", function() exec{shell = "sleep 1; echo copy >> ledger"} return { rows = 18250 } end)
approve("Switch the application to the new table?", { approvers = { "group:dba" } })
step("switch", function() exec{shell = "sleep 1; echo switch >> ledger"} end)
step("verify", function() exec{shell = "sleep 1; echo verify >> ledger"} end)
"#;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> (Driver, u16) {
    let port = crate::servers::free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is needed for the browser test: apt-get install chromium chromium-driver (scripts/test installs them)");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Driver(child), port)
}

async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000", format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::rustls()
        .expect("rustls connector")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session over WebDriver")
}

async fn css(c: &Client, sel: &str) -> fantoccini::elements::Element {
    match c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css(sel)).await {
        Ok(e) => e,
        Err(e) => {
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let text =
                c.execute("return document.body ? document.body.innerText : '';", vec![]).await.unwrap_or_default();
            panic!("no element {sel} at {url} ({e}):\n{}", text.as_str().unwrap_or(""))
        }
    }
}

/// Waits until a script returns true in the page.
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = c.execute(script, vec![]).await.unwrap_or(serde_json::Value::Null);
        if v == serde_json::Value::Bool(true) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let text =
                c.execute("return document.body ? document.body.innerText : '';", vec![]).await.unwrap_or_default();
            panic!("timed out waiting for {what} at {url}:\n{}", text.as_str().unwrap_or(""));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    css(c, "#user").await.send_keys(user).await.unwrap();
    css(c, "#password").await.send_keys(password).await.unwrap();
    css(c, "#login-submit").await.click().await.unwrap();
    until(c, "the runs page", "return document.getElementById('me') !== null").await;
}

fn step_status(step: &str) -> String {
    format!("var r = document.querySelector('tr.step[data-step=\"{step}\"]'); return r !== null && r.classList.contains('succeeded');")
}

#[test]
fn in_chromium_an_operator_starts_a_run_watches_it_live_and_an_approver_lets_it_finish() {
    let env = Env::new();
    env.write("runbook.toml", &team_config(""));
    env.write("runbooks/gated.lua", SLOW_GATED);
    let console = Console::start(&env, &["--workers", "1"], &[]);
    let (_driver, port) = chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://127.0.0.1:{}", console.port);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = browser(port, profile.path()).await;
        // dora operates and approves, and starts the run from its form.
        login(&c, &base, "dora", "approver-password").await;
        c.goto(&format!("{base}/runbooks/gated")).await.unwrap();
        let table = css(&c, "#p-table").await;
        table.send_keys("orders_2026").await.unwrap();
        css(&c, "#enqueue").await.click().await.unwrap();
        until(&c, "the run page", "return document.getElementById('run-id') !== null").await;
        // Marked now: a reload would lose the mark. The steps turn green without one.
        c.execute("window.__same_page = true; return true;", vec![]).await.unwrap();
        until(&c, "snapshot green", &step_status("snapshot")).await;
        let same = c.execute("return window.__same_page === true;", vec![]).await.unwrap();
        assert_eq!(same, serde_json::Value::Bool(true), "the step turned green live, not by reloading");
        until(&c, "copy rows green", &step_status("copy rows")).await;
        // At the gate (the page reloads itself once the run stops), dora is refused: she asked.
        until(&c, "the gate", "return document.getElementById('gate') !== null").await;
        let refusal = css(&c, "#cannot-decide").await.text().await.unwrap();
        assert!(refusal.contains("dora started this run and cannot approve it"), "{refusal}");
        assert!(c.find(Locator::Css("#approve")).await.is_err(), "no approve button for the requester");
        let run_url = c.current_url().await.unwrap().to_string();
        // Log out; carol (group dba) approves with a comment.
        css(&c, "form[action='/logout'] button").await.click().await.unwrap();
        css(&c, "#login-submit").await;
        login(&c, &base, "carol", "approver-password").await;
        c.goto(&run_url).await.unwrap();
        css(&c, "#comment").await.send_keys("copy verified, go").await.unwrap();
        css(&c, "#approve").await.click().await.unwrap();
        // The console's worker resumes it; the page follows it to the end.
        until(&c, "switch green", &step_status("switch")).await;
        until(&c, "verify green", &step_status("verify")).await;
        until(&c, "the run succeeded", "var s = document.getElementById('run-status'); return s !== null && s.textContent === 'succeeded';").await;
        // Once it ended the page is rendered again, final (no live view any more).
        until(&c, "the final page", "return document.getElementById('run-id') !== null && document.querySelector('#timeline[data-live]') === null;").await;
        let votes = css(&c, "ul.votes").await.text().await.unwrap();
        assert!(votes.contains("approve by carol") && votes.contains("copy verified, go"), "{votes}");
        // No console error in the page (CSP violations would show here).
        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let out = std::env::var("RUNBOOK_SCREENSHOT").ok().map(std::path::PathBuf::from).unwrap_or_else(|| env.path("run.png"));
        std::fs::write(&out, &png).unwrap();
        c.close().await.unwrap();
    });
    assert_eq!(env.read("ledger"), "snapshot\ncopy\nswitch\nverify\n");
}
