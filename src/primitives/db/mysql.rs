//! MySQL and MariaDB values: what sqlx decodes, and the types it leaves to us (TIME past a day,
//! BIT as a number, spatial values as WKT).
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{Column, MySql, Row, TypeInfo};

use super::{collect_rows, opt, plain_query, DbError, DbValue, Rows};

pub(super) fn mysql_query<'q>(sql: &'q str, params: &[DbValue]) -> Result<Query<'q, MySql, MySqlArguments>, DbError> {
    plain_query(sql, params, "MySQL")
}

pub(super) fn mysql_rows(rows: Vec<MySqlRow>) -> Result<Rows, DbError> {
    collect_rows(rows, mysql_value)
}

fn mysql_value(row: &MySqlRow, i: usize, col: &sqlx::mysql::MySqlColumn) -> Result<DbValue, DbError> {
    Ok(match col.type_info().name() {
        "BOOLEAN" => opt(row.try_get::<Option<bool>, _>(i)?, DbValue::Bool),
        "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" => opt(row.try_get::<Option<i64>, _>(i)?, DbValue::Int),
        "YEAR" => opt(row.try_get::<Option<u16>, _>(i)?, |v| DbValue::Int(v.into())),
        // -838:59:59 to 838:59:59: a duration more than a time of day.
        "TIME" => opt(row.try_get::<Option<sqlx::mysql::types::MySqlTime>, _>(i)?, |v| {
            let mut t = format!(
                "{}{:02}:{:02}:{:02}",
                // (MySqlTime::is_negative answers is_positive in sqlx 0.9: the sign is asked.)
                if v.sign().is_negative() { "-" } else { "" },
                v.hours(),
                v.minutes(),
                v.seconds()
            );
            if v.microseconds() != 0 {
                let f = format!("{:06}", v.microseconds());
                t.push('.');
                t.push_str(f.trim_end_matches('0'));
            }
            DbValue::Text(t)
        }),
        // BIT(1..64) as the number it holds.
        "BIT" => opt(row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?, |b| {
            let v = b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
            i64::try_from(v).map(DbValue::Int).unwrap_or_else(|_| DbValue::Text(v.to_string()))
        }),
        // Spatial values as WKT (`POINT(1 2)`), the text MySQL's ST_AsText gives.
        "GEOMETRY" => opt(row.try_get_unchecked::<Option<Vec<u8>>, _>(i)?, |b| match mysql_wkt(&b) {
            Some(t) => DbValue::Text(t),
            None => DbValue::Bytes(b),
        }),
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "INT UNSIGNED" | "MEDIUMINT UNSIGNED" => {
            opt(row.try_get::<Option<u64>, _>(i)?, |v| DbValue::Int(v as i64))
        }
        // Above i64 it would lose nothing as a string, but Lua integers are 64-bit signed.
        "BIGINT UNSIGNED" => opt(row.try_get::<Option<u64>, _>(i)?, |v| match i64::try_from(v) {
            Ok(i) => DbValue::Int(i),
            Err(_) => DbValue::Text(v.to_string()),
        }),
        // Through its shortest decimal form, so 1.1 reads back as 1.1, not 1.100000023841858.
        "FLOAT" => {
            opt(row.try_get::<Option<f32>, _>(i)?, |v| DbValue::Float(v.to_string().parse().unwrap_or(v.into())))
        }
        "DOUBLE" => opt(row.try_get::<Option<f64>, _>(i)?, DbValue::Float),
        "DECIMAL" => opt(row.try_get::<Option<bigdecimal::BigDecimal>, _>(i)?, |v| DbValue::Text(v.to_plain_string())),
        "DATE" => {
            opt(row.try_get::<Option<chrono::NaiveDate>, _>(i)?, |v| DbValue::Text(v.format("%Y-%m-%d").to_string()))
        }
        "DATETIME" => opt(row.try_get::<Option<chrono::NaiveDateTime>, _>(i)?, |v| {
            DbValue::Text(v.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
        }),
        "TIMESTAMP" => opt(row.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i)?, |v| {
            DbValue::Text(v.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false))
        }),
        "JSON" => opt(row.try_get::<Option<sqlx::types::Json<serde_json::Value>>, _>(i)?, |v| DbValue::Json(v.0)),
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
            opt(row.try_get::<Option<Vec<u8>>, _>(i)?, DbValue::Bytes)
        }
        "NULL" => DbValue::Null,
        _ => opt(row.try_get::<Option<String>, _>(i)?, DbValue::Text),
    })
}

/// MySQL's internal geometry (4-byte SRID, then WKB) as WKT; None for what it does not know.
fn mysql_wkt(b: &[u8]) -> Option<String> {
    fn num(b: &[u8], at: &mut usize, le: bool) -> Option<f64> {
        let raw: [u8; 8] = b.get(*at..*at + 8)?.try_into().ok()?;
        *at += 8;
        Some(if le { f64::from_le_bytes(raw) } else { f64::from_be_bytes(raw) })
    }
    fn count(b: &[u8], at: &mut usize, le: bool) -> Option<usize> {
        let raw: [u8; 4] = b.get(*at..*at + 4)?.try_into().ok()?;
        *at += 4;
        Some((if le { u32::from_le_bytes(raw) } else { u32::from_be_bytes(raw) }) as usize)
    }
    fn points(b: &[u8], at: &mut usize, le: bool) -> Option<String> {
        let n = count(b, at, le)?;
        let mut out = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            out.push(format!("{} {}", num(b, at, le)?, num(b, at, le)?));
        }
        Some(out.join(","))
    }
    fn geometry(b: &[u8], at: &mut usize) -> Option<String> {
        let le = *b.get(*at)? == 1;
        *at += 1;
        let kind = count(b, at, le)?;
        Some(match kind {
            1 => format!("POINT({} {})", num(b, at, le)?, num(b, at, le)?),
            2 => format!("LINESTRING({})", points(b, at, le)?),
            3 => {
                let rings = count(b, at, le)?;
                let mut out = Vec::new();
                for _ in 0..rings {
                    out.push(format!("({})", points(b, at, le)?));
                }
                format!("POLYGON({})", out.join(","))
            }
            4..=7 => {
                let n = count(b, at, le)?;
                let mut parts = Vec::new();
                for _ in 0..n {
                    parts.push(geometry(b, at)?);
                }
                let name = ["MULTIPOINT", "MULTILINESTRING", "MULTIPOLYGON", "GEOMETRYCOLLECTION"][kind - 4];
                if kind == 7 {
                    format!("{name}({})", parts.join(","))
                } else {
                    // Inside MULTI*, parts drop their own type name.
                    let inner: Vec<&str> =
                        parts.iter().map(|p| p.split_once('(').map(|(_, r)| r).unwrap_or(p)).collect();
                    format!("{name}({})", inner.iter().map(|p| format!("({p}")).collect::<Vec<_>>().join(","))
                }
            }
            _ => return None,
        })
    }
    let mut at = 4;
    let text = geometry(b, &mut at)?;
    (at == b.len()).then_some(text)
}
