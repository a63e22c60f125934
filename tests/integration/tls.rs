//! The tls primitive against HTTPS fixtures with rcgen certificates: valid, expired, expiring
//! in 5 days, self-signed.
use serde_json::json;

use crate::fixtures::{self_signed, HttpServer, TestCa};
use crate::harness::Env;

#[test]
fn certificates_are_described_whether_or_not_they_validate() {
    let env = Env::new();
    let ca = TestCa::new();
    let valid = HttpServer::start_tls(&ca.leaf("valid.test", -1.0, 90.5, 0xabc001));
    let expired = HttpServer::start_tls(&ca.leaf("expired.test", -30.0, -1.5, 0xabc002));
    let soon = HttpServer::start_tls(&ca.leaf("soon.test", -1.0, 5.5, 0xabc003));
    let own = HttpServer::start_tls(&self_signed("self.test", 0x0a0b));
    let (ca_cert, ca_pem) = crate::fixtures::self_signed_ca("ca-as-server.test", 0x77);
    let ca_server = HttpServer::start_tls(&ca_cert);
    env.write("own-ca.pem", &ca_pem);
    let closed = crate::servers::free_port();
    env.write("ca.pem", &ca.pem);
    env.write(
        "rb.lua",
        &format!(
            r#"runbook {{ name = "tls" }}
local function err(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e)
end
step("valid", function() return tls.certificate("{valid}", {{ ca = "ca.pem" }}) end)
step("untrusted", function()
  local c = tls.certificate("{valid}")
  return {{ valid = c.valid, error = c.error, days_left = c.days_left }}
end)
step("expired", function() return tls.certificate("{expired}", {{ ca = "ca.pem" }}) end)
step("soon", function()
  local c = tls.certificate("https://{soon}/some/path", {{ ca = "ca.pem" }})
  return {{ valid = c.valid, days_left = c.days_left, error_is_nil = c.error == nil }}
end)
step("self-signed", function() return tls.certificate("{own}") end)
step("ca as server", function() return tls.certificate("{ca_server}", {{ ca = "own-ca.pem" }}).error end)
step("wrong name", function()
  local c = tls.certificate("{valid}", {{ ca = "ca.pem", server_name = "db.example.com" }})
  return {{ valid = c.valid, error = c.error }}
end)
step("expiring", function()
  return {{
    month = tls.check_expiry({{ "{valid}", "{soon}", "{expired}" }}, {{ warn_days = 30, ca = "ca.pem" }}),
    three = tls.check_expiry({{ "{valid}", "{soon}", "{expired}" }}, {{ warn_days = 3 }}),
    none = tls.check_expiry({{ "{valid}" }}),
  }}
end)
step("errors", function()
  return {{
    unreachable = err(tls.check_expiry, {{ "{valid}", "127.0.0.1:{closed}" }}),
    refused = err(tls.certificate, "127.0.0.1:{closed}"),
    target = err(tls.certificate, "127.0.0.1:99999"),
    not_tls = err(tls.certificate, "{plain}", {{ timeout = "2s" }}),
    unknown_key = err(tls.certificate, "{valid}", {{ warn = 3 }}),
    misplaced = err(tls.certificate, "{valid}", {{ warn_days = 3 }}),
    not_a_list = err(tls.check_expiry, 42),
    holes = err(tls.check_expiry, {{ [1] = "{valid}", [3] = "127.0.0.1:{closed}" }}),
    named = err(tls.check_expiry, {{ a = "{valid}" }}),
  }}
end)
"#,
            valid = valid.target(),
            expired = expired.target(),
            soon = soon.target(),
            own = own.target(),
            ca_server = ca_server.target(),
            plain = HttpServer::start().target(),
        ),
    );
    let out = env.run(&["run", "rb.lua"]);
    out.assert_code(0);
    let show = env.show("last");
    let result = |step: &str| {
        let s = Env::step(&show, step);
        assert_eq!(s["status"], "succeeded", "{s}");
        s["result"].clone()
    };
    let v = result("valid");
    assert_eq!(v["subject"], "CN=valid.test, O=Runbook Tests");
    assert_eq!(v["issuer"], "CN=runbook test CA");
    assert_eq!(v["sans"], json!(["localhost", "127.0.0.1"]));
    assert_eq!(v["serial"], "abc001");
    assert_eq!(v["chain_length"], 2);
    assert_eq!(v["days_left"], 90);
    assert_eq!(v["valid"], true);
    assert!(v.get("error").is_none(), "no error when valid: {v}");
    assert_eq!(v["host"], valid.target());
    let not_after = chrono::DateTime::parse_from_rfc3339(v["not_after"].as_str().unwrap()).unwrap();
    let not_before = chrono::DateTime::parse_from_rfc3339(v["not_before"].as_str().unwrap()).unwrap();
    assert_eq!((not_after - not_before).num_hours(), 91 * 24 + 12);

    let u = result("untrusted");
    assert_eq!(u["valid"], false);
    assert!(u["error"].as_str().unwrap().contains("issuer not trusted"), "{u}");
    assert_eq!(u["days_left"], 90, "an untrusted certificate is still read");

    let e = result("expired");
    assert_eq!(e["valid"], false);
    assert_eq!(e["days_left"], -2);
    assert!(e["error"].as_str().unwrap().starts_with("certificate expired (not after 20"), "{e}");

    assert_eq!(result("soon"), json!({"valid": true, "days_left": 5, "error_is_nil": true}));

    let s = result("self-signed");
    assert_eq!(s["valid"], false);
    assert_eq!(s["error"], "self-signed certificate (not trusted)");
    assert_eq!(s["chain_length"], 1);
    assert_eq!(s["subject"], s["issuer"]);
    assert_eq!(s["serial"], "0a0b", "whole bytes, as openssl shows it");
    assert!(result("ca as server")
        .as_str()
        .unwrap()
        .starts_with("self-signed CA certificate used as the server's own"));

    let w = result("wrong name");
    assert_eq!(w["valid"], false);
    assert_eq!(w["error"], "certificate not valid for 'db.example.com' (it names: localhost, 127.0.0.1)");

    let x = result("expiring");
    let not_after_of = |i: usize| x["month"][i]["not_after"].as_str().unwrap().to_string();
    assert_eq!(
        x["month"],
        json!([
            {"host": expired.target(), "days_left": -2, "not_after": not_after_of(0)},
            {"host": soon.target(), "days_left": 5, "not_after": not_after_of(1)},
        ])
    );
    assert_eq!(x["three"], json!([{"host": expired.target(), "days_left": -2, "not_after": not_after_of(0)}]));
    assert_eq!(x["none"], json!([]));

    let errs = result("errors");
    let get = |k: &str| errs[k].as_str().unwrap().to_string();
    assert!(
        get("unreachable")
            .contains(&format!("1 of 2 hosts could not be checked: cannot connect to 127.0.0.1:{closed}")),
        "{}",
        get("unreachable")
    );
    assert!(get("refused").contains("tls: cannot connect to 127.0.0.1"), "{}", get("refused"));
    assert!(get("target").contains("invalid target '127.0.0.1:99999'"), "{}", get("target"));
    assert!(get("not_tls").contains("TLS handshake with 127.0.0.1:"), "{}", get("not_tls"));
    assert!(get("unknown_key").contains("unknown key `warn`"), "{}", get("unknown_key"));
    assert!(get("misplaced").contains("warn_days belongs to tls.check_expiry"), "{}", get("misplaced"));
    assert!(get("not_a_list").contains("check_expiry expects an array"), "{}", get("not_a_list"));
    assert!(get("holes").contains("keys other than 1..n"), "{}", get("holes"));
    assert!(get("named").contains("keys other than 1..n"), "{}", get("named"));
}
