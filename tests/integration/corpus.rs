//! Bad input never panics: every case under tests/corpus/ gives its expected exit code and
//! error. A case is a .lua file whose header says how to run it and what it must print:
//!   -- args: run {file} -p count=x      ({file} is the case itself, {dir} the corpus folder)
//!   -- exit: 2
//!   -- stderr: param 'count'            (may repeat; each must appear)
use crate::harness::Env;

#[test]
fn every_malformed_input_gets_its_clear_error_and_no_panic() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap();
        let header = |key: &str| -> Vec<String> {
            text.lines().filter_map(|l| l.strip_prefix(&format!("-- {key}: ")).map(str::to_string)).collect()
        };
        let env = Env::new();
        let file = case.display().to_string();
        let args_line = header("args").pop().unwrap_or_else(|| "run {file}".into());
        let args: Vec<String> = args_line
            .split_whitespace()
            .map(|a| a.replace("{file}", &file).replace("{dir}", &corpus.display().to_string()))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = env.run(&args);
        let want: i32 = header("exit").pop().map(|c| c.parse().unwrap()).unwrap_or(2);
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        if r.code != want {
            failures.push(format!("{name}: exit {} instead of {want}\n{}", r.code, r.stderr));
        }
        if r.stderr.contains("panicked") || r.stderr.contains("RUST_BACKTRACE") {
            failures.push(format!("{name}: panicked\n{}", r.stderr));
        }
        for expected in header("stderr") {
            if !r.stderr.contains(&expected) {
                failures.push(format!("{name}: stderr lacks `{expected}`:\n{}", r.stderr));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
