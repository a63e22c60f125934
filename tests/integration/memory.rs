//! `--max-memory` bounds what a run holds: the Lua VM and a command's output alike, and a
//! resume keeps the limit the run was started with.
use crate::harness::Env;

#[test]
fn a_flood_of_command_output_is_stopped_at_the_memory_limit_and_resume_keeps_the_limit() {
    let env = Env::new();
    env.write(
        "rb.lua",
        r#"runbook { name = "flood" }
step("flood", function() return #exec{shell = "head -c 40000000 /dev/zero | tr '\\0' x | fold -w 1000", echo = false}.stdout end)
"#,
    );
    let r = env.run(&["run", "rb.lua", "--max-memory", "16MB"]);
    r.assert_code(1);
    assert!(r.stderr.contains("wrote more than 16 MiB of output"), "{}", r.stderr);
    // Resumed without the option: the run's own limit still holds.
    let again = env.run(&["resume", "last"]);
    again.assert_code(1);
    let show = env.show("last");
    assert!(Env::step(&show, "flood")["error"].as_str().unwrap().contains("16 MiB"), "{show}");
    assert_eq!(Env::step(&show, "flood")["attempts"], 2);
    // Given again, a bigger limit wins.
    let bigger = env.run(&["resume", "last", "--max-memory", "256MB"]);
    bigger.assert_code(0);
    assert_eq!(Env::step(&env.show("last"), "flood")["result"], 40_039_999);
}
