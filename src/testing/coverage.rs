//! `runbook test --coverage`: per runbook, the steps, undos, gates and `when` branches no test
//! reached. What a runbook has is its plan (`runbook plan`, evaluated with each test run's params
//! and fakes: a runbook lists its gates and steps there whatever the data); what the tests
//! reached is what their runs journaled.
use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::engine::PlanEntry;
use crate::journal::{StepKind, StepRecord, StepStatus};

/// Whether `--coverage` was asked for.
pub static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Default)]
struct Cover {
    /// (kind, name, line, has undo, has a `when` condition), from the plans.
    planned: Vec<(String, String, u32, bool, bool)>,
    /// What the runs journaled.
    seen: Vec<Seen>,
}

struct Seen {
    kind: StepKind,
    name: String,
    line: Option<i64>,
    skipped: bool,
    undone: bool,
}

static COVER: Mutex<BTreeMap<String, Cover>> = Mutex::new(BTreeMap::new());

pub fn on() -> bool {
    ON.load(std::sync::atomic::Ordering::SeqCst)
}

/// A runbook's plan, as one test run's params and fakes make it.
pub fn planned(runbook: &str, plan: &[PlanEntry]) {
    let mut all = COVER.lock().unwrap_or_else(|p| p.into_inner());
    let cover = all.entry(runbook.to_string()).or_default();
    for e in plan {
        let entry = (
            e.kind.to_string(),
            e.name.clone(),
            e.line,
            e.options.iter().any(|o| o == "undo"),
            e.options.iter().any(|o| o.starts_with("when=<")),
        );
        if !cover.planned.contains(&entry) {
            cover.planned.push(entry);
        }
    }
}

/// What a test run of a runbook journaled.
pub fn seen(runbook: &str, steps: &[StepRecord]) {
    let mut all = COVER.lock().unwrap_or_else(|p| p.into_inner());
    let cover = all.entry(runbook.to_string()).or_default();
    for s in steps {
        cover.seen.push(Seen {
            kind: s.kind,
            name: s.name.clone(),
            line: s.line,
            skipped: s.status == StepStatus::Skipped,
            // ("pending" is a completed step's undo waiting to be needed: not run.)
            undone: matches!(s.undo_status.as_deref(), Some("done" | "running" | "failed")),
        });
    }
}

/// A runbook found beside the tests that no test ran.
pub fn present(runbook: &str) {
    COVER.lock().unwrap_or_else(|p| p.into_inner()).entry(runbook.to_string()).or_default();
}

/// One runbook's coverage.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub runbook: String,
    pub steps: (usize, usize),
    pub undos: (usize, usize),
    pub gates: (usize, usize),
    pub branches: (usize, usize),
    /// What no test reached, as people read it.
    pub missed: Vec<String>,
    /// No test ran it at all.
    pub not_run: bool,
}

/// The coverage of every runbook the tests ran or sat beside.
pub fn reports() -> Vec<Report> {
    let all = COVER.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    for (runbook, c) in all.iter() {
        let mut r = Report {
            runbook: runbook.clone(),
            steps: (0, 0),
            undos: (0, 0),
            gates: (0, 0),
            branches: (0, 0),
            missed: vec![],
            not_run: c.seen.is_empty(),
        };
        for (kind, name, line, undo, when) in &c.planned {
            if kind == "approval" {
                // A gate's message may hold data (counts, names): matched by its line.
                r.gates.1 += 1;
                if c.seen.iter().any(|s| s.kind == StepKind::Approval && s.line == Some(i64::from(*line))) {
                    r.gates.0 += 1;
                } else {
                    r.missed.push(format!("line {line}: the gate \"{name}\""));
                }
                continue;
            }
            let runs: Vec<&Seen> = c.seen.iter().filter(|s| s.kind == StepKind::Step && &s.name == name).collect();
            r.steps.1 += 1;
            if runs.iter().any(|s| !s.skipped) {
                r.steps.0 += 1;
            } else {
                r.missed.push(format!("line {line}: step '{name}' never ran"));
            }
            if *undo {
                r.undos.1 += 1;
                if runs.iter().any(|s| s.undone) {
                    r.undos.0 += 1;
                } else {
                    r.missed.push(format!("line {line}: the undo of '{name}' never ran"));
                }
            }
            if *when {
                r.branches.1 += 2;
                let (ran, skipped) = (runs.iter().any(|s| !s.skipped), runs.iter().any(|s| s.skipped));
                r.branches.0 += usize::from(ran) + usize::from(skipped);
                if !skipped {
                    r.missed.push(format!("line {line}: the `when` of '{name}' was never false"));
                }
                if !ran {
                    r.missed.push(format!("line {line}: the `when` of '{name}' was never true"));
                }
            }
        }
        out.push(r);
    }
    out
}

/// The report as text.
pub fn text(reports: &[Report]) -> String {
    let mut out = String::from("\ncoverage:\n");
    let of = |(a, b): (usize, usize), what: &str| format!("{a} of {b} {what}");
    for r in reports {
        if r.not_run {
            out.push_str(&format!("  {}: run by no test\n", r.runbook));
            continue;
        }
        out.push_str(&format!(
            "  {}: {}, {}, {}, {}\n",
            r.runbook,
            of(r.steps, "steps"),
            of(r.undos, "undos"),
            of(r.gates, "gates"),
            of(r.branches, "`when` branches")
        ));
        for m in &r.missed {
            out.push_str(&format!("      {m}\n"));
        }
    }
    out
}
