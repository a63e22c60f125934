//! Retention, restic-style: a backup is kept when any rule wants it, and the reasons are kept
//! with it. The newest verified backup is always kept.
use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};

use super::Manifest;

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub keep_last: Option<usize>,
    pub keep_daily: Option<usize>,
    pub keep_weekly: Option<usize>,
    pub keep_monthly: Option<usize>,
    /// Everything created within this long of the newest backup.
    #[serde(default, deserialize_with = "crate::duration::de_opt")]
    pub keep_within: Option<Duration>,
    #[serde(default)]
    pub dry_run: bool,
    pub prefix: Option<String>,
    pub label: Option<String>,
}

impl Policy {
    /// A policy that keeps something: at least one rule, none of them zero (a rule of 0 would
    /// read as "keep none" and a typo would empty the store).
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            ("keep_last", self.keep_last),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
        ];
        for (name, v) in counts {
            if v == Some(0) {
                return Err(format!("{name} = 0 keeps nothing: leave the rule out, or give at least 1"));
            }
        }
        if self.keep_within.is_some_and(|d| d.is_zero()) {
            return Err("keep_within = 0 keeps nothing: leave the rule out, or give a duration".into());
        }
        if counts.iter().all(|(_, v)| v.is_none()) && self.keep_within.is_none() {
            return Err("give at least one rule (keep_last, keep_daily, keep_weekly, keep_monthly, keep_within): without one, every backup would go".into());
        }
        Ok(())
    }
}

fn time(m: &Manifest) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&m.created_at).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// For each backup (newest first, as given), why it is kept; an empty list means removed.
pub fn plan(newest_first: &[Manifest], policy: &Policy) -> Vec<Vec<String>> {
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); newest_first.len()];
    if let Some(n) = policy.keep_last {
        for (i, r) in reasons.iter_mut().enumerate().take(n) {
            r.push(format!("last {}", i + 1));
        }
    }
    let mut bucketed = |n: Option<usize>, kind: &str, bucket: &dyn Fn(DateTime<Utc>) -> String| {
        let Some(n) = n else { return };
        let mut seen = BTreeSet::new();
        for (i, m) in newest_first.iter().enumerate() {
            if seen.len() == n {
                break;
            }
            let b = bucket(time(m));
            if seen.insert(b.clone()) {
                reasons[i].push(format!("{kind} {b}"));
            }
        }
    };
    bucketed(policy.keep_daily, "daily", &|t| t.format("%Y-%m-%d").to_string());
    bucketed(policy.keep_weekly, "weekly", &|t| {
        let w = t.iso_week();
        format!("{}-W{:02}", w.year(), w.week())
    });
    bucketed(policy.keep_monthly, "monthly", &|t| t.format("%Y-%m").to_string());
    if let (Some(within), Some(newest)) = (policy.keep_within, newest_first.first()) {
        let limit = time(newest) - chrono::Duration::from_std(within).unwrap_or_default();
        for (i, m) in newest_first.iter().enumerate() {
            if time(m) >= limit {
                reasons[i].push(format!("within {}", crate::duration::human(within)));
            }
        }
    }
    if let Some(i) = newest_first.iter().position(|m| m.verified_at.is_some() && verified_ok(m)) {
        reasons[i].push("newest verified".into());
    }
    reasons
}

fn verified_ok(m: &Manifest) -> bool {
    m.verification.as_ref().and_then(|v| v.get("ok")).and_then(|v| v.as_bool()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(days: i64) -> Vec<Manifest> {
        // One backup a day at 02:00 UTC, from 2025-10-19 to 2026-11-22 (400 days), newest first.
        let last = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        (0..days)
            .map(|i| {
                let d = last - chrono::Duration::days(i);
                Manifest {
                    id: format!("b{i}"),
                    store: "file:///b".into(),
                    key: format!("pg-{d}.dump.zst"),
                    created_at: format!("{d}T02:00:00.000Z"),
                    engine: "postgres".into(),
                    server_version: "15".into(),
                    tool: "pg_dump".into(),
                    tool_version: String::new(),
                    source: String::new(),
                    format: "custom".into(),
                    compress: super::super::Compress::Zstd,
                    bytes_raw: 1,
                    bytes_stored: 1,
                    sha256: String::new(),
                    duration_ms: 1,
                    label: None,
                    tables: Default::default(),
                    tables_after: Default::default(),
                    verified_at: None,
                    verification: None,
                }
            })
            .collect()
    }

    fn kept(h: &[Manifest], p: &Policy) -> Vec<String> {
        plan(h, p).iter().zip(h).filter(|(r, _)| !r.is_empty()).map(|(_, m)| m.created_at[..10].to_string()).collect()
    }

    #[test]
    fn four_hundred_daily_backups_against_a_hand_computed_expectation() {
        let h = history(400);
        assert_eq!(h.last().unwrap().created_at, "2025-10-19T02:00:00.000Z");
        let p = Policy { keep_daily: Some(7), keep_weekly: Some(4), keep_monthly: Some(6), ..Default::default() };
        // Daily: 2026-11-16 .. 2026-11-22. Weekly (newest of each ISO week): Sun 2026-11-22 (W47),
        // Sun 11-15 (W46), Sun 11-08 (W45), Sun 11-01 (W44). Monthly (newest of each month):
        // 11-22, 10-31, 09-30, 08-31, 07-31, 06-30.
        let want = [
            "2026-11-22",
            "2026-11-21",
            "2026-11-20",
            "2026-11-19",
            "2026-11-18",
            "2026-11-17",
            "2026-11-16",
            "2026-11-15",
            "2026-11-08",
            "2026-11-01",
            "2026-10-31",
            "2026-09-30",
            "2026-08-31",
            "2026-07-31",
            "2026-06-30",
        ];
        assert_eq!(kept(&h, &p), want);
        let reasons = plan(&h, &p);
        assert_eq!(reasons[0], ["daily 2026-11-22", "weekly 2026-W47", "monthly 2026-11"]);

        let p = Policy { keep_last: Some(3), keep_within: Some(Duration::from_secs(10 * 86400)), ..Default::default() };
        // Within 10 days of the newest (2026-11-22 02:00): 11-12 02:00 included, 11 backups.
        assert_eq!(kept(&h, &p).len(), 11);
        assert_eq!(kept(&h, &p).last().unwrap(), "2026-11-12");

        // Twelve months back from a 400-day history: every month end, plus the newest.
        let p = Policy { keep_monthly: Some(14), ..Default::default() };
        let months = kept(&h, &p);
        assert_eq!(months.len(), 14);
        assert_eq!(months.last().unwrap(), "2025-10-31");
    }

    #[test]
    fn the_newest_verified_backup_is_kept_whatever_the_policy() {
        let mut h = history(30);
        h[20].verified_at = Some("2026-11-02T03:00:00Z".into());
        h[20].verification = Some(serde_json::json!({"ok": true}));
        h[25].verified_at = Some("2026-10-28T03:00:00Z".into());
        h[25].verification = Some(serde_json::json!({"ok": true}));
        let p = Policy { keep_last: Some(2), ..Default::default() };
        let r = plan(&h, &p);
        assert_eq!(r[20], ["newest verified"]);
        assert!(r[25].is_empty());
        assert_eq!(r.iter().filter(|r| !r.is_empty()).count(), 3);
    }
}
