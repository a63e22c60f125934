//! `metrics.analyze`: a canary stage judged by numbers, the way alert rules are written.
//!
//! Checks are read from rules such as `error_rate < 0.05 for 5m` (the name's query given in
//! `queries`) or from tables (`{ name, query | fn, below | above, ["for"] }`). Every `interval`
//! each check is sampled; a check fails when its value has broken the threshold on every sample
//! for at least `for` (at once without one), like a Prometheus alert rule. The analysis passes
//! when `duration` has gone by with no check failed. A sample without data is its own outcome,
//! handled by `on_no_data`: `fail` (inconclusive is an error), `pause` (the analysis stops and
//! returns `no_data` for the caller to decide, e.g. with an approval), or `continue` (the
//! sample counts for nothing).
use std::time::Duration;

/// How a value is compared with its threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Below,
    AtMost,
    Above,
    AtLeast,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Below => value < threshold,
            Op::AtMost => value <= threshold,
            Op::Above => value > threshold,
            Op::AtLeast => value >= threshold,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Op::Below => "<",
            Op::AtMost => "<=",
            Op::Above => ">",
            Op::AtLeast => ">=",
        }
    }
}

/// A check's rule: `name op threshold [for hold]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub op: Op,
    pub threshold: f64,
    /// The threshold as the rule wrote it ("5%", "2s"), for messages.
    pub written: String,
    pub hold: Duration,
    /// The hold as the rule wrote it ("5m"), when it did.
    pub hold_written: Option<String>,
}

impl Rule {
    pub fn describe(&self) -> String {
        let mut s = format!("{} {} {}", self.name, self.op.symbol(), self.written);
        match &self.hold_written {
            Some(w) => s.push_str(&format!(" for {w}")),
            None if !self.hold.is_zero() => s.push_str(&format!(" for {}", crate::duration::human(self.hold))),
            None => {}
        }
        s
    }
}

/// A threshold as rules write it: a number, a percentage (`5%` is 0.05) or a duration in
/// seconds (`2s`, `500ms`), since latency metrics are in seconds.
pub fn threshold(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        return p.trim().parse::<f64>().map(|v| v / 100.0).map_err(|_| format!("'{t}' is not a percentage"));
    }
    if let Ok(v) = t.parse::<f64>() {
        return Ok(v);
    }
    crate::duration::parse(t)
        .map(|d| d.as_secs_f64())
        .map_err(|_| format!("'{t}' is not a threshold (a number, a percentage such as 5% or a duration such as 2s)"))
}

/// Parses `error_rate < 0.05 for 5m`.
pub fn parse_rule(text: &str) -> Result<Rule, String> {
    let bad = |why: &str| format!("check '{text}': {why} (expected e.g. \"error_rate < 0.05 for 5m\")");
    let t = text.trim();
    let at = t.find(['<', '>']).ok_or_else(|| bad("no comparison (<, <=, > or >=)"))?;
    let name = t[..at].trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-') {
        return Err(bad("the name before the comparison must be a word"));
    }
    let rest = &t[at..];
    let (op, rest) = if let Some(r) = rest.strip_prefix("<=") {
        (Op::AtMost, r)
    } else if let Some(r) = rest.strip_prefix(">=") {
        (Op::AtLeast, r)
    } else if let Some(r) = rest.strip_prefix('<') {
        (Op::Below, r)
    } else {
        (Op::Above, &rest[1..])
    };
    let mut words = rest.split_whitespace();
    let value = words.next().ok_or_else(|| bad("no threshold"))?;
    let threshold = threshold(value).map_err(|e| bad(&e))?;
    let (hold, hold_written) = match (words.next(), words.next(), words.next()) {
        (None, _, _) => (Duration::ZERO, None),
        (Some("for"), Some(d), None) => (crate::duration::parse(d).map_err(|e| bad(&e))?, Some(d.to_string())),
        _ => return Err(bad("only `for DURATION` may follow the threshold")),
    };
    Ok(Rule { name: name.to_string(), op, threshold, written: value.to_string(), hold, hold_written })
}

/// What a check has seen so far.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub samples: u32,
    pub no_data: u32,
    pub last: Option<f64>,
    /// The value furthest past (or nearest to) the threshold in the wrong direction.
    pub worst: Option<f64>,
    /// Since when (seconds into the analysis) every sample has broken the threshold.
    pub breaking_since: Option<f64>,
}

/// One sample's verdict for a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fine,
    /// Broken, but not yet for as long as the rule's `for`.
    Breaking,
    Failed,
    NoData,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Fine => "ok",
            Verdict::Breaking => "breaking",
            Verdict::Failed => "failed",
            Verdict::NoData => "no_data",
        }
    }
}

impl Tally {
    /// Records a sample taken `at` seconds into the analysis.
    pub fn record(&mut self, rule: &Rule, value: Option<f64>, at: f64) -> Verdict {
        let Some(v) = value else {
            self.no_data += 1;
            return Verdict::NoData;
        };
        self.samples += 1;
        self.last = Some(v);
        let worse = |a: f64, b: f64| if matches!(rule.op, Op::Below | Op::AtMost) { a > b } else { a < b };
        if self.worst.is_none_or(|w| worse(v, w) || v.is_nan()) {
            self.worst = Some(v);
        }
        if rule.op.holds(v, rule.threshold) {
            self.breaking_since = None;
            return Verdict::Fine;
        }
        let since = *self.breaking_since.get_or_insert(at);
        if at - since >= rule.hold.as_secs_f64() {
            Verdict::Failed
        } else {
            Verdict::Breaking
        }
    }
}

/// A number as people read it: 0.05, 1.333, 42.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_alert_rules_are_written() {
        let r = parse_rule("error_rate < 5% for 5m").unwrap();
        assert_eq!(
            r,
            Rule {
                name: "error_rate".into(),
                op: Op::Below,
                threshold: 0.05,
                written: "5%".into(),
                hold: Duration::from_secs(300),
                hold_written: Some("5m".into()),
            }
        );
        assert_eq!(r.describe(), "error_rate < 5% for 5m");
        let r = parse_rule("p95_latency<=2s").unwrap();
        assert_eq!((r.op, r.threshold, r.hold), (Op::AtMost, 2.0, Duration::ZERO));
        assert_eq!(parse_rule("success >= 99.5%").unwrap().threshold, 0.995);
        assert_eq!(parse_rule("up > 0 for 30s").unwrap().describe(), "up > 0 for 30s");
        for bad in ["error_rate 0.05", "< 1", "a < many", "a < 1 during 5m", "a < 1 for", "a b < 1"] {
            assert!(parse_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_check_fails_only_once_it_has_broken_its_threshold_for_its_whole_hold() {
        let rule = parse_rule("error_rate < 0.05 for 10s").unwrap();
        let mut t = Tally::default();
        assert_eq!(t.record(&rule, Some(0.01), 0.0), Verdict::Fine);
        assert_eq!(t.record(&rule, Some(0.2), 5.0), Verdict::Breaking);
        assert_eq!(t.record(&rule, Some(0.01), 10.0), Verdict::Fine, "a good sample resets the hold");
        assert_eq!(t.record(&rule, Some(0.06), 15.0), Verdict::Breaking);
        assert_eq!(t.record(&rule, None, 20.0), Verdict::NoData);
        // A sample without data neither clears nor extends a breach: 15s to 25s is the whole hold.
        assert_eq!(t.record(&rule, Some(0.07), 25.0), Verdict::Failed);
        assert_eq!(t.worst, Some(0.2));
        let instant = parse_rule("error_rate < 0.05").unwrap();
        assert_eq!(Tally::default().record(&instant, Some(0.05), 0.0), Verdict::Failed);
    }
}
