//! Durations as runbooks write them: "500ms", "30s", "5m", "2h", "1d", "1h30m", or a bare
//! number of seconds.
use std::time::Duration;

/// Parses a duration string such as `"1h30m"`. Returns a message fit for a user on failure.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return from_secs(secs, text);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "invalid duration '{text}': expected a number before '{rest}' (examples: 30s, 5m, 2h, 1h30m, 500ms)"
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration '{text}': bad number '{}'", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" => 7.0 * 86400.0,
            "" => return Err(format!("invalid duration '{text}': missing unit after {value} (use ms, s, m, h or d)")),
            other => return Err(format!("invalid duration '{text}': unknown unit '{other}' (use ms, s, m, h or d)")),
        };
        total += value * factor;
    }
    from_secs(total, text)
}

/// A duration from a Lua value: a string such as "30s", or a number of seconds.
pub fn from_lua(v: &mlua::Value) -> Result<Duration, String> {
    match v {
        mlua::Value::String(s) => parse(&s.to_string_lossy()),
        mlua::Value::Integer(i) => from_secs(*i as f64, &i.to_string()),
        mlua::Value::Number(n) => from_secs(*n, &n.to_string()),
        other => Err(format!("expected a duration such as \"30s\", got a {}", other.type_name())),
    }
}

/// Seconds to a duration, refusing negative, non-finite and absurd (over ten years) values.
pub fn from_secs(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration '{text}': must be a non-negative number of seconds"));
    }
    if secs > 10.0 * 365.0 * 86400.0 {
        return Err(format!("invalid duration '{text}': longer than ten years"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration for people: "850ms", "12.3s", "4m05s", "2h10m".
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// Serde support for option tables: a duration field written `"30s"` or as a number of seconds,
/// `#[serde(default, deserialize_with = "crate::duration::de_opt")]`.
pub fn de_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"30s\" or a number of seconds")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse(v).map(Some).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            from_secs(v as f64, &v.to_string()).map(Some).map_err(E::custom)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            from_secs(v as f64, &v.to_string()).map(Some).map_err(E::custom)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            from_secs(v, &v.to_string()).map(Some).map_err(E::custom)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_runbooks_use() {
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86400));
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        for (bad, reason) in [
            ("", "empty duration"),
            ("abc", "expected a number before 'abc'"),
            ("5x", "unknown unit 'x'"),
            ("-1s", "expected a number before '-1s'"),
            ("s5", "expected a number before 's5'"),
            ("5", ""),
        ] {
            match parse(bad) {
                Err(err) => assert!(!reason.is_empty() && err.contains(reason), "{bad}: {err}"),
                Ok(_) => assert!(reason.is_empty(), "{bad} should be refused"),
            }
        }
        assert!(parse("100000h").unwrap_err().contains("longer than ten years"));
        assert!(parse("5").is_ok());
        for absurd in [1e20, f64::INFINITY, f64::NAN, -1.0] {
            assert!(from_secs(absurd, "x").is_err(), "{absurd}");
        }
    }

    #[test]
    fn human_is_short() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human(Duration::from_secs(245)), "4m05s");
    }
}
