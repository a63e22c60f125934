//! The arithmetic of fan-outs: failure limits and rolling batches (`2` or `"25%"` of the hosts).
use std::ops::Range;

/// A count, or a percentage of the hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    Count(usize),
    Percent(f64),
}

impl Amount {
    /// From Lua: a non-negative integer or "N%".
    pub fn parse(v: &mlua::Value, what: &str) -> Result<Amount, String> {
        let bad = || format!("{what}: expected a number or a percentage such as \"10%\"");
        match v {
            mlua::Value::Integer(i) if *i >= 0 => Ok(Amount::Count(*i as usize)),
            mlua::Value::Number(n) if *n >= 0.0 && n.fract() == 0.0 => Ok(Amount::Count(*n as usize)),
            mlua::Value::String(s) => {
                let s = s.to_string_lossy();
                let pct: f64 = s.trim().strip_suffix('%').ok_or_else(bad)?.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(format!("{what}: a percentage between 0% and 100%"));
                }
                Ok(Amount::Percent(pct))
            }
            _ => Err(bad()),
        }
    }

    /// Failures tolerated among `n` hosts (a percentage rounds down).
    pub fn failures_of(self, n: usize) -> usize {
        match self {
            Amount::Count(c) => c,
            Amount::Percent(p) => (p * n as f64 / 100.0).floor() as usize,
        }
    }

    /// A batch size among `n` hosts (a percentage rounds up; at least one).
    pub fn batch_of(self, n: usize) -> usize {
        match self {
            Amount::Count(c) => c.max(1),
            Amount::Percent(p) => ((p * n as f64 / 100.0).ceil() as usize).max(1),
        }
    }
}

/// The batches of a rolling run over `n` hosts: `first` hosts alone (a canary), then groups of
/// `batch`.
pub fn batches(n: usize, first: usize, batch: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    if first > 0 && n > 0 {
        out.push(0..first.min(n));
        at = first.min(n);
    }
    while at < n {
        let end = (at + batch.max(1)).min(n);
        out.push(at..end);
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_batches() {
        assert_eq!(Amount::Percent(10.0).failures_of(25), 2);
        assert_eq!(Amount::Percent(25.0).batch_of(10), 3);
        assert_eq!(Amount::Count(0).batch_of(10), 1);
        assert_eq!(batches(5, 1, 2), vec![0..1, 1..3, 3..5]);
        assert_eq!(batches(3, 0, 5), vec![0..3]);
        assert_eq!(batches(0, 1, 2), Vec::<Range<usize>>::new());
    }
}
