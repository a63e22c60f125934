//! PostgreSQL values both ways, in the binary form the extended protocol carries.
//!
//! Every built-in type a DBA's query returns is read: numbers, text, time, intervals (as
//! PostgreSQL prints them), network and MAC addresses, xid/xid8/oid/cid/tid, pg_lsn, bit strings,
//! json, uuid, enums (their label), domains (as their base type) and arrays of any of these. A
//! type without a binary form we read (reg*, money, tsvector, ranges, composites, geometric
//! types, aclitem, extension types) is asked for as its text: the statement is wrapped as
//! `WITH _rb("1", ...) AS (<statement>) SELECT "1", "2"::text ...`, so the server prints it as
//! psql would, and the columns keep their names and order.
//!
//! Parameters are encoded in the type the server inferred for them (the statement is described
//! once, then cached): `$1::interval` takes "5m" or "1 day 02:00:00", `$1::inet` takes
//! "10.0.0.0/8", and so on; see [`encode`].
use std::fmt::Write;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgArguments, PgRow, PgTypeInfo, PgTypeKind};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Column, Postgres, Row, TypeInfo, ValueRef};

use super::tape::{Item, Out, Tape};

use super::{DbError, DbValue, Rows};

/// Built-in type OIDs (pg_type.dat: stable across versions).
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT2VECTOR: u32 = 22;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const TID: u32 = 27;
    pub const XID: u32 = 28;
    pub const CID: u32 = 29;
    pub const OIDVECTOR: u32 = 30;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const PG_NODE_TREE: u32 = 194;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const MACADDR8: u32 = 774;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const REFCURSOR: u32 = 1790;
    pub const VOID: u32 = 2278;
    pub const UUID: u32 = 2950;
    pub const PG_LSN: u32 = 3220;
    pub const JSONB: u32 = 3802;
    pub const XID8: u32 = 5069;
    /// regproc, regclass, regtype ...: an OID, printed and parsed as a name by the server.
    pub const REG: &[u32] = &[24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191];
}

/// The reg* type of a parameter that takes a name ('public.orders'::regclass), if it is one:
/// such a name is turned into its OID by the server first (see `Db::pg_reg_params`).
pub fn reg_type(ty: &PgTypeInfo) -> Option<String> {
    oid::REG.contains(&oid_of(ty)).then(|| ty.name().to_lowercase())
}

fn oid_of(ty: &PgTypeInfo) -> u32 {
    ty.oid().map(|o| o.0).unwrap_or(0)
}

/// The type's kind; a type sqlx did not resolve (known by its OID only) counts as simple,
/// where sqlx's own `kind()` would panic.
fn kind(ty: &PgTypeInfo) -> &PgTypeKind {
    if ty.name() == "?" {
        &PgTypeKind::Simple
    } else {
        ty.kind()
    }
}

/// Whether values of `ty` are read from their binary form here (else they are asked as text).
pub fn readable(ty: &PgTypeInfo) -> bool {
    match kind(ty) {
        PgTypeKind::Enum(_) => true,
        PgTypeKind::Domain(base) => readable(base),
        PgTypeKind::Array(elem) => readable(elem),
        PgTypeKind::Composite(_) | PgTypeKind::Range(_) | PgTypeKind::Pseudo => oid_of(ty) == oid::VOID,
        PgTypeKind::Simple => {
            use oid::*;
            matches!(
                oid_of(ty),
                BOOL | BYTEA
                    | CHAR
                    | NAME
                    | INT8
                    | INT2
                    | INT2VECTOR
                    | INT4
                    | TEXT
                    | OID
                    | TID
                    | XID
                    | CID
                    | OIDVECTOR
                    | JSON
                    | XML
                    | PG_NODE_TREE
                    | CIDR
                    | FLOAT4
                    | FLOAT8
                    | UNKNOWN
                    | MACADDR8
                    | MACADDR
                    | INET
                    | BPCHAR
                    | VARCHAR
                    | DATE
                    | TIME
                    | TIMESTAMP
                    | TIMESTAMPTZ
                    | INTERVAL
                    | TIMETZ
                    | BIT
                    | VARBIT
                    | NUMERIC
                    | REFCURSOR
                    | VOID
                    | UUID
                    | PG_LSN
                    | JSONB
                    | XID8
            ) || ty.name().eq_ignore_ascii_case("citext")
        }
    }
}

/// The statement asking for the columns db cannot read as text (see the module docs), or None
/// when every column is readable or the statement cannot be wrapped (SHOW, EXPLAIN, CALL ...).
pub fn text_wrapped(sql: &str, columns: &[(String, PgTypeInfo)]) -> Option<String> {
    if columns.iter().all(|(_, t)| readable(t)) {
        return None;
    }
    // One statement, without its trailing `;` and comments (`select 1::money; -- done`).
    let statements = super::split_statements(sql, false);
    let [(_, body)] = statements.as_slice() else { return None };
    let first = first_word(body);
    if !matches!(first.as_str(), "select" | "with" | "values" | "table" | "insert" | "update" | "delete" | "(") {
        return None;
    }
    // A data-modifying WITH must stay at the top level, and MERGE cannot be in a WITH at all:
    // those run as written (an unreadable column is then an error saying to cast it).
    if first == "with" && modifies(body) {
        return None;
    }
    let names: Vec<String> = (1..=columns.len()).map(|i| format!("\"{i}\"")).collect();
    let select: Vec<String> = columns
        .iter()
        .zip(&names)
        .map(|((_, t), n)| if readable(t) { n.clone() } else { format!("{n}::text") })
        .collect();
    Some(format!("WITH _rb({}) AS (\n{body}\n) SELECT {} FROM _rb", names.join(", "), select.join(", ")))
}

/// Whether a statement has INSERT, UPDATE, DELETE or MERGE as a word (outside nothing: a rough
/// test, erring on the side of not wrapping).
fn modifies(sql: &str) -> bool {
    sql.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(|w| ["insert", "update", "delete", "merge"].iter().any(|k| w.eq_ignore_ascii_case(k)))
}

/// The first keyword of a statement, past comments and whitespace.
fn first_word(sql: &str) -> String {
    let mut s = sql;
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map(|(_, r)| r).unwrap_or("");
        } else {
            break;
        }
    }
    if s.starts_with('(') {
        return "(".into();
    }
    s.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_lowercase()
}

// ---- reading ----

/// Reads rows of one statement onto a tape, column by column.
pub struct Reader {
    types: Vec<PgTypeInfo>,
    pub columns: Vec<String>,
}

impl Reader {
    /// For the statement `first` is a row of; `names` replaces the column names (a wrapped
    /// statement's are "1", "2" ...).
    pub fn new(first: &PgRow, names: Option<&[String]>) -> Reader {
        Reader {
            types: first.columns().iter().map(|c| c.type_info().clone()).collect(),
            columns: match names {
                Some(n) => n.to_vec(),
                None => first.columns().iter().map(|c| c.name().to_string()).collect(),
            },
        }
    }

    /// Appends the row's values, one per column, to the tape.
    pub fn row(&self, row: &PgRow, t: &mut Tape) -> Result<(), DbError> {
        for (i, ty) in self.types.iter().enumerate() {
            let raw = row.try_get_raw(i)?;
            if raw.is_null() {
                t.push(Item::Null);
                continue;
            }
            let bytes = raw.as_bytes().map_err(|e| DbError::Decode(e.to_string()))?;
            decode(bytes, ty, t).map_err(|e| {
                let name = self.columns.get(i).map(String::as_str).unwrap_or("?");
                DbError::Decode(format!("column '{name}' ({}): {e}", ty.name().to_lowercase()))
            })?;
        }
        Ok(())
    }
}

/// Rows as values; `names` replaces the column names (a wrapped statement's are "1", "2" ...).
pub fn rows(rows: Vec<PgRow>, names: Option<&[String]>) -> Result<Rows, DbError> {
    let Some(first) = rows.first() else {
        return Ok(Rows { columns: names.map(<[String]>::to_vec).unwrap_or_default(), rows: vec![] });
    };
    let reader = Reader::new(first, names);
    let mut tape = Tape::default();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        tape.clear();
        reader.row(row, &mut tape)?;
        out.push(tape.values());
    }
    Ok(Rows { columns: reader.columns, rows: out })
}

fn be<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], String> {
    b.get(at..at + N).and_then(|s| s.try_into().ok()).ok_or_else(|| format!("{} bytes is too short", b.len()))
}
fn i16_at(b: &[u8], at: usize) -> Result<i16, String> {
    Ok(i16::from_be_bytes(be(b, at)?))
}
fn i32_at(b: &[u8], at: usize) -> Result<i32, String> {
    Ok(i32::from_be_bytes(be(b, at)?))
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    Ok(u32::from_be_bytes(be(b, at)?))
}
fn i64_at(b: &[u8], at: usize) -> Result<i64, String> {
    Ok(i64::from_be_bytes(be(b, at)?))
}

/// 2000-01-01, PostgreSQL's epoch, in Unix microseconds.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// PostgreSQL's limit on an array's dimensions (MAXDIM).
const MAX_DIMS: usize = 6;

/// Appends a value of `ty` from its binary form to the tape.
pub fn decode(b: &[u8], ty: &PgTypeInfo, t: &mut Tape) -> Result<(), String> {
    match kind(ty) {
        PgTypeKind::Enum(_) => t.utf8(b),
        PgTypeKind::Domain(base) => decode(b, base, t),
        PgTypeKind::Array(elem) => array(b, Some(elem), t),
        _ => decode_oid(b, oid_of(ty), ty.name(), t),
    }
}

/// Appends a value of a built-in type (or one named `name`) from its binary form.
fn decode_oid(b: &[u8], type_oid: u32, name: &str, t: &mut Tape) -> Result<(), String> {
    use oid::*;
    match type_oid {
        BOOL => t.push(Item::Bool(b.first().copied().unwrap_or(0) != 0)),
        INT2 => t.push(Item::Int(i16_at(b, 0)?.into())),
        INT4 => t.push(Item::Int(i32_at(b, 0)?.into())),
        INT8 => t.push(Item::Int(i64_at(b, 0)?)),
        OID | XID | CID => t.push(Item::Int(u32_at(b, 0)?.into())),
        XID8 => {
            let v = u64::from_be_bytes(be(b, 0)?);
            match i64::try_from(v) {
                Ok(v) => t.push(Item::Int(v)),
                Err(_) => t.write(|o| write!(o, "{v}"))?,
            }
        }
        FLOAT4 => {
            let v = f32::from_be_bytes(be(b, 0)?);
            // Shortest text that reads back as the same f32, as PostgreSQL prints it.
            t.push(Item::Float(v.to_string().parse().unwrap_or(v.into())))
        }
        FLOAT8 => t.push(Item::Float(f64::from_be_bytes(be(b, 0)?))),
        NUMERIC => t.text(&numeric(b)?)?,
        TEXT | VARCHAR | BPCHAR | NAME | UNKNOWN | XML | PG_NODE_TREE | REFCURSOR => t.utf8(b)?,
        CHAR => t.text(&String::from_utf8_lossy(b))?,
        BYTEA => t.raw(b)?,
        UUID => {
            let id = uuid::Uuid::from_bytes(be(b, 0)?);
            t.write(|o| write!(o, "{id}"))?
        }
        JSON => t.json(b)?,
        JSONB => t.json(b.get(1..).unwrap_or_default())?,
        TIMESTAMPTZ | TIMESTAMP => match i64_at(b, 0)? {
            i64::MAX => t.text("infinity")?,
            i64::MIN => t.text("-infinity")?,
            us => {
                let unix = us.saturating_add(PG_EPOCH_US);
                let t0 = chrono::DateTime::from_timestamp_micros(unix).ok_or("a timestamp out of range")?;
                let zone = type_oid == TIMESTAMPTZ;
                t.write(|o| timestamp(o, &t0.naive_utc(), unix.rem_euclid(1_000_000), zone))?
            }
        },
        DATE => match i32_at(b, 0)? {
            i32::MAX => t.text("infinity")?,
            i32::MIN => t.text("-infinity")?,
            days => {
                let d = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
                    .and_then(|e| e.checked_add_signed(chrono::TimeDelta::days(days.into())))
                    .ok_or("a date out of range")?;
                t.write(|o| date(o, &d))?
            }
        },
        TIME => {
            let us = i64_at(b, 0)?;
            t.write(|o| time_of_day(o, us))?
        }
        TIMETZ => {
            // The zone is in seconds west of UTC.
            let (us, west) = (i64_at(b, 0)?, i32_at(b, 8)?);
            let east = -west;
            let (sign, east) = if east < 0 { ('-', -east) } else { ('+', east) };
            t.write(|o| {
                time_of_day(o, us)?;
                write!(o, "{sign}{:02}", east / 3600)?;
                if east % 3600 != 0 {
                    write!(o, ":{:02}", east % 3600 / 60)?;
                }
                Ok(())
            })?
        }
        INTERVAL => match (i64_at(b, 0)?, i32_at(b, 8)?, i32_at(b, 12)?) {
            // PostgreSQL 17's infinite intervals.
            (i64::MAX, i32::MAX, i32::MAX) => t.text("infinity")?,
            (i64::MIN, i32::MIN, i32::MIN) => t.text("-infinity")?,
            (us, days, months) => t.write(|o| write_interval(o, us, days, months))?,
        },
        INET | CIDR => inet(b, t)?,
        MACADDR | MACADDR8 => t.write(|o| {
            for (i, x) in b.iter().enumerate() {
                write!(o, "{}{x:02x}", if i == 0 { "" } else { ":" })?;
            }
            Ok(())
        })?,
        PG_LSN => {
            let v = u64::from_be_bytes(be(b, 0)?);
            t.write(|o| write!(o, "{:X}/{:X}", v >> 32, v & 0xffff_ffff))?
        }
        TID => {
            let (block, offset) = (u32_at(b, 0)?, u16::from_be_bytes(be(b, 4)?));
            t.write(|o| write!(o, "({block},{offset})"))?
        }
        BIT | VARBIT => {
            let len = i32_at(b, 0)?.max(0) as usize;
            let bits = b.get(4..).unwrap_or_default();
            if bits.len() * 8 < len {
                return Err(format!("{len} bits in {} bytes", bits.len()));
            }
            t.write(|o| {
                o.bytes(
                    &(0..len)
                        .map(|i| if bits[i / 8] & (0x80 >> (i % 8)) != 0 { b'1' } else { b'0' })
                        .collect::<Vec<_>>(),
                );
                Ok(())
            })?
        }
        INT2VECTOR | OIDVECTOR => array(b, None, t)?,
        VOID => t.push(Item::Null),
        _ if name.eq_ignore_ascii_case("citext") => t.utf8(b)?,
        _ => return Err("db reads this type as text only".into()),
    }
    Ok(())
}

/// Appends a binary array (any number of dimensions, as nested arrays); the element type is
/// the array's, or the built-in one the data names (int2vector, oidvector).
fn array(b: &[u8], elem: Option<&PgTypeInfo>, t: &mut Tape) -> Result<(), String> {
    let ndim = i32_at(b, 0)?.max(0) as usize;
    let elem_oid = u32_at(b, 8)?;
    if ndim > MAX_DIMS {
        return Err(format!("an array of {ndim} dimensions (PostgreSQL allows {MAX_DIMS})"));
    }
    let mut dims = [0usize; MAX_DIMS];
    for (d, dim) in dims.iter_mut().enumerate().take(ndim) {
        *dim = i32_at(b, 12 + d * 8)?.max(0) as usize;
    }
    let total = dims[..ndim].iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    // (Each element takes 4 bytes at least: a count past that is a damaged value.)
    if ndim > 0 && total.is_none_or(|n| n > b.len() / 4) {
        return Err("an array's dimensions run past the value".into());
    }
    // No elements: PostgreSQL writes an empty array with no dimensions; a header that names a
    // zero-length one (whatever the others say) is read as empty too, not as nested empties.
    if total == Some(0) {
        t.push(Item::Array(0));
        return Ok(());
    }
    let mut at = 12 + ndim * 8;
    let mut element = |t: &mut Tape| -> Result<(), String> {
        let len = i32_at(b, at)?;
        at += 4;
        if len < 0 {
            t.push(Item::Null);
            return Ok(());
        }
        let len = len as usize;
        let item = b.get(at..at + len).ok_or("an array element runs past the value")?;
        at += len;
        match elem {
            Some(e) => decode(item, e, t),
            None => decode_oid(item, elem_oid, "", t),
        }
    };
    if ndim == 0 {
        t.push(Item::Array(0));
        return Ok(());
    }
    nest(&dims[..ndim], t, &mut element)
}

/// One level of a multi-dimensional array, its elements read in order (the last dimension
/// varies fastest).
fn nest(dims: &[usize], t: &mut Tape, element: &mut impl FnMut(&mut Tape) -> Result<(), String>) -> Result<(), String> {
    let n = dims[0];
    t.push(Item::Array(u32::try_from(n).map_err(|_| "an array too large")?));
    for _ in 0..n {
        if dims.len() == 1 {
            element(t)?;
        } else {
            nest(&dims[1..], t, element)?;
        }
    }
    Ok(())
}

/// numeric's binary form (base-10000 digits) as its exact decimal text.
fn numeric(b: &[u8]) -> Result<String, String> {
    let ndigits = i16_at(b, 0)?.max(0) as usize;
    let weight = i16_at(b, 2)? as i64;
    let sign = u16::from_be_bytes(be(b, 4)?);
    let dscale = u16::from_be_bytes(be(b, 6)?) as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digit = |i: i64| -> Result<i64, String> {
        if i < 0 || i as usize >= ndigits {
            Ok(0)
        } else {
            Ok(i16_at(b, 8 + i as usize * 2)?.into())
        }
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            let d = digit(i)?;
            if i == 0 {
                let _ = write!(s, "{d}");
            } else {
                let _ = write!(s, "{d:04}");
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i)?);
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

fn time_of_day(out: &mut impl Write, us: i64) -> std::fmt::Result {
    let (h, m, s, f) = (us / 3_600_000_000, us / 60_000_000 % 60, us / 1_000_000 % 60, us % 1_000_000);
    write!(out, "{h:02}:{m:02}:{s:02}")?;
    fraction(out, f.unsigned_abs())
}

/// `.5`, `.000123`: microseconds with the trailing zeros dropped, nothing for none.
fn fraction(out: &mut impl Write, micros: u64) -> std::fmt::Result {
    if micros == 0 {
        return Ok(());
    }
    let (mut f, mut width) = (micros, 6);
    while f % 10 == 0 {
        f /= 10;
        width -= 1;
    }
    write!(out, ".{f:0width$}")
}

/// Two-digit fields written without the formatting machinery (a result has many timestamps).
fn two(buf: &mut [u8], at: usize, v: u32) {
    buf[at] = b'0' + (v / 10 % 10) as u8;
    buf[at + 1] = b'0' + (v % 10) as u8;
}

/// `YYYY-MM-DD`, as PostgreSQL and chrono print a date (years past 9999 through chrono).
fn date(out: &mut Out<'_>, d: &chrono::NaiveDate) -> std::fmt::Result {
    use chrono::Datelike;
    let year = d.year();
    if !(0..=9999).contains(&year) {
        return write!(out, "{}", d.format("%Y-%m-%d"));
    }
    let mut buf = *b"0000-00-00";
    two(&mut buf, 0, year as u32 / 100);
    two(&mut buf, 2, year as u32 % 100);
    two(&mut buf, 5, d.month());
    two(&mut buf, 8, d.day());
    out.bytes(&buf);
    Ok(())
}

/// RFC 3339 as chrono prints it (`2026-12-03T03:00:00.250+00:00`): the fraction in 3 or 6
/// digits as needed, the offset for a timestamptz (always UTC).
fn timestamp(out: &mut Out<'_>, t: &chrono::NaiveDateTime, micros: i64, zone: bool) -> std::fmt::Result {
    use chrono::Timelike;
    date(out, &t.date())?;
    let mut buf = *b"T00:00:00";
    two(&mut buf, 1, t.hour());
    two(&mut buf, 4, t.minute());
    two(&mut buf, 7, t.second());
    out.bytes(&buf);
    match micros {
        0 => {}
        us if us % 1000 == 0 => write!(out, ".{:03}", us / 1000)?,
        us => write!(out, ".{us:06}")?,
    }
    if zone {
        out.bytes(b"+00:00");
    }
    Ok(())
}

/// An interval as PostgreSQL prints it (IntervalStyle postgres): `1 year 2 mons 3 days
/// 04:05:06.5`, `-1 days +02:00:00`, `00:00:00`.
#[cfg(test)]
pub fn interval(micros: i64, days: i32, months: i32) -> String {
    let mut out = String::new();
    let _ = write_interval(&mut out, micros, days, months);
    out
}

fn write_interval(out: &mut impl Write, micros: i64, days: i32, months: i32) -> std::fmt::Result {
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |value: i64, unit: &str, out: &mut dyn Write| -> std::fmt::Result {
        if value == 0 {
            return Ok(());
        }
        write!(
            out,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value != 1 { "s" } else { "" }
        )?;
        is_before = value < 0;
        is_zero = false;
        Ok(())
    };
    part(i64::from(months / 12), "year", out)?;
    part(i64::from(months % 12), "mon", out)?;
    part(i64::from(days), "day", out)?;
    if is_zero || micros != 0 {
        let minus = micros < 0;
        let a = micros.unsigned_abs();
        let (h, m, s, f) = (a / 3_600_000_000, a / 60_000_000 % 60, a / 1_000_000 % 60, a % 1_000_000);
        let sign = if minus {
            "-"
        } else if is_before {
            "+"
        } else {
            ""
        };
        write!(out, "{}{sign}{h:02}:{m:02}:{s:02}", if is_zero { "" } else { " " })?;
        fraction(out, f)?;
    }
    Ok(())
}

/// inet/cidr: family, bits, is_cidr, length, address bytes.
fn inet(b: &[u8], t: &mut Tape) -> Result<(), String> {
    let (family, bits, is_cidr, n) = (
        *b.first().ok_or("empty")?,
        *b.get(1).ok_or("short")?,
        *b.get(2).ok_or("short")? != 0,
        *b.get(3).ok_or("short")? as usize,
    );
    let addr = b.get(4..4 + n).ok_or("short")?;
    let max = match (family, addr.len()) {
        (2, 4) => 32,
        (3, 16) => 128,
        _ => return Err(format!("unknown address family {family}")),
    };
    t.write(|o| {
        if let Ok(a) = <[u8; 4]>::try_from(addr) {
            write!(o, "{}", std::net::Ipv4Addr::from(a))?;
        } else if let Ok(a) = <[u8; 16]>::try_from(addr) {
            write!(o, "{}", std::net::Ipv6Addr::from(a))?;
        }
        if is_cidr || bits != max {
            write!(o, "/{bits}")?;
        }
        Ok(())
    })
}

// ---- binding ----

/// A parameter already in the binary form of the type the server inferred for it.
struct Param {
    ty: PgTypeInfo,
    bytes: Option<Vec<u8>>,
}

/// `text`, resolved (a declared type would have no kind).
fn text_type() -> PgTypeInfo {
    <String as sqlx::Type<Postgres>>::type_info()
}

impl sqlx::Type<Postgres> for Param {
    fn type_info() -> PgTypeInfo {
        text_type()
    }
    fn compatible(_: &PgTypeInfo) -> bool {
        true
    }
}

impl sqlx::Encode<'_, Postgres> for Param {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        match &self.bytes {
            Some(b) => {
                buf.extend_from_slice(b);
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }
    fn produces(&self) -> Option<PgTypeInfo> {
        Some(self.ty.clone())
    }
    fn size_hint(&self) -> usize {
        self.bytes.as_ref().map(Vec::len).unwrap_or(0)
    }
}

/// The statement with its parameters encoded for the types in `types`.
pub fn query(
    sql: &str,
    types: &[PgTypeInfo],
    params: &[DbValue],
) -> Result<Query<'static, Postgres, PgArguments>, DbError> {
    if !types.is_empty() && types.len() != params.len() {
        return Err(DbError::Bind(format!("the statement takes {} parameter(s), {} given", types.len(), params.len())));
    }
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for (n, v) in params.iter().enumerate() {
        let ty = types.get(n).cloned().unwrap_or_else(text_type);
        let bytes = if *v == DbValue::Null {
            None
        } else {
            Some(
                encode(v, &ty)
                    .map_err(|e| DbError::Bind(format!("parameter ${} ({}): {e}", n + 1, ty.name().to_lowercase())))?,
            )
        };
        q = q.bind(Param { ty, bytes });
    }
    Ok(q)
}

fn want(v: &DbValue, what: &str) -> String {
    format!("expected {what}, got a {}", v.kind())
}

fn text_of(v: &DbValue, what: &str) -> Result<String, String> {
    v.text().ok_or_else(|| want(v, what))
}

/// A Lua value in the binary form of `ty`.
pub fn encode(v: &DbValue, ty: &PgTypeInfo) -> Result<Vec<u8>, String> {
    match kind(ty) {
        PgTypeKind::Enum(labels) => {
            let t = text_of(v, "a label")?;
            if !labels.is_empty() && !labels.contains(&t) {
                return Err(format!("'{t}' is not one of {}", labels.join(", ")));
            }
            return Ok(t.into_bytes());
        }
        PgTypeKind::Domain(base) => return encode(v, base),
        PgTypeKind::Array(elem) => return encode_array(v, elem),
        _ => {}
    }
    use oid::*;
    Ok(match oid_of(ty) {
        BOOL => match v {
            DbValue::Bool(b) => vec![u8::from(*b)],
            other => return Err(want(other, "a boolean")),
        },
        INT2 => i16::try_from(super::int(v)?).map_err(|_| "does not fit a smallint")?.to_be_bytes().to_vec(),
        INT4 => i32::try_from(super::int(v)?).map_err(|_| "does not fit an integer")?.to_be_bytes().to_vec(),
        INT8 => super::int(v)?.to_be_bytes().to_vec(),
        o if o == OID || o == XID || o == CID || oid::REG.contains(&o) => {
            u32::try_from(super::int(v)?).map_err(|_| "does not fit 32 unsigned bits")?.to_be_bytes().to_vec()
        }
        XID8 => u64::try_from(super::int(v)?).map_err(|_| "is negative")?.to_be_bytes().to_vec(),
        FLOAT4 => (super::float(v)? as f32).to_be_bytes().to_vec(),
        FLOAT8 => super::float(v)?.to_be_bytes().to_vec(),
        NUMERIC => encode_numeric(&text_of(v, "a number or a numeric string")?)?,
        TEXT | VARCHAR | BPCHAR | NAME | UNKNOWN | XML | REFCURSOR | CHAR => text_of(v, "a string")?.into_bytes(),
        BYTEA => match v {
            DbValue::Bytes(b) => b.clone(),
            DbValue::Text(t) => t.clone().into_bytes(),
            other => return Err(want(other, "a string")),
        },
        UUID => {
            let t = text_of(v, "a uuid string")?;
            uuid::Uuid::parse_str(&t).map_err(|_| format!("'{t}' is not a uuid"))?.as_bytes().to_vec()
        }
        JSON | JSONB => {
            let j = match v {
                DbValue::Json(j) => j.clone(),
                DbValue::Array(items) => serde_json::Value::Array(items.iter().map(DbValue::to_json).collect()),
                DbValue::Text(t) => serde_json::from_str(t).map_err(|e| format!("not JSON text: {e}"))?,
                other => other.to_json(),
            };
            let mut out = if oid_of(ty) == JSONB { vec![1u8] } else { vec![] };
            out.extend(serde_json::to_vec(&j).map_err(|e| e.to_string())?);
            out
        }
        TIMESTAMPTZ => {
            let t = text_of(v, "an RFC 3339 timestamp")?;
            let d = chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|_| format!("'{t}' is not an RFC 3339 timestamp with offset (2026-11-22T03:15:00Z)"))?;
            (d.timestamp_micros() - PG_EPOCH_US).to_be_bytes().to_vec()
        }
        TIMESTAMP => {
            let t = text_of(v, "a timestamp")?;
            let d = chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%d %H:%M:%S%.f"))
                .map_err(|_| format!("'{t}' is not a timestamp (2026-11-22T03:15:00)"))?;
            (d.and_utc().timestamp_micros() - PG_EPOCH_US).to_be_bytes().to_vec()
        }
        DATE => {
            let t = text_of(v, "a date")?;
            let d = chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d")
                .map_err(|_| format!("'{t}' is not a date (YYYY-MM-DD)"))?;
            let epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
            i32::try_from((d - epoch).num_days()).map_err(|_| "out of range")?.to_be_bytes().to_vec()
        }
        TIME => {
            let t = text_of(v, "a time of day (HH:MM:SS)")?;
            let d = chrono::NaiveTime::parse_from_str(&t, "%H:%M:%S%.f")
                .or_else(|_| chrono::NaiveTime::parse_from_str(&t, "%H:%M"))
                .map_err(|_| format!("'{t}' is not a time of day (HH:MM:SS)"))?;
            let us = (d - chrono::NaiveTime::MIN).num_microseconds().unwrap_or(0);
            us.to_be_bytes().to_vec()
        }
        INTERVAL => {
            let (us, days, months) = match v {
                DbValue::Int(_) | DbValue::Float(_) => ((super::float(v)? * 1e6).round() as i64, 0, 0),
                _ => parse_interval(&text_of(v, "a duration (\"5m\", \"1 day 02:00:00\")")?)?,
            };
            let mut out = us.to_be_bytes().to_vec();
            out.extend(days.to_be_bytes());
            out.extend(months.to_be_bytes());
            out
        }
        INET | CIDR => encode_inet(&text_of(v, "an address (10.0.0.1, 10.0.0.0/8)")?, oid_of(ty) == CIDR)?,
        MACADDR | MACADDR8 => {
            let t = text_of(v, "a MAC address")?;
            let bytes: Result<Vec<u8>, _> = t.split([':', '-']).map(|p| u8::from_str_radix(p, 16)).collect();
            let want_len = if oid_of(ty) == MACADDR { 6 } else { 8 };
            match bytes {
                Ok(b) if b.len() == want_len => b,
                _ => return Err(format!("'{t}' is not a MAC address of {want_len} bytes (08:00:2b:01:02:03)")),
            }
        }
        PG_LSN => {
            let t = text_of(v, "an LSN (16/B374D848)")?;
            let (hi, lo) = t.split_once('/').ok_or_else(|| format!("'{t}' is not an LSN (16/B374D848)"))?;
            let hi = u64::from_str_radix(hi, 16).map_err(|_| format!("'{t}' is not an LSN"))?;
            let lo = u64::from_str_radix(lo, 16).map_err(|_| format!("'{t}' is not an LSN"))?;
            ((hi << 32) | lo).to_be_bytes().to_vec()
        }
        BIT | VARBIT => {
            let t = text_of(v, "a bit string (\"1010\")")?;
            if !t.chars().all(|c| c == '0' || c == '1') {
                return Err(format!("'{t}' is not a bit string of 0s and 1s"));
            }
            let mut out = (t.len() as i32).to_be_bytes().to_vec();
            let mut bytes = vec![0u8; t.len().div_ceil(8)];
            for (i, c) in t.chars().enumerate() {
                if c == '1' {
                    bytes[i / 8] |= 0x80 >> (i % 8);
                }
            }
            out.extend(bytes);
            out
        }
        _ if ty.name().eq_ignore_ascii_case("citext") => text_of(v, "a string")?.into_bytes(),
        _ => {
            return Err(format!(
                "db does not send this type; cast the parameter through text in SQL, e.g. $N::text::{}",
                ty.name().to_lowercase()
            ))
        }
    })
}

fn encode_array(v: &DbValue, elem: &PgTypeInfo) -> Result<Vec<u8>, String> {
    let items: &[DbValue] = match v {
        DbValue::Array(items) => items,
        DbValue::Json(serde_json::Value::Object(m)) if m.is_empty() => &[],
        other => return Err(want(other, "an array")),
    };
    // The dimensions, from the first item at each level; every sub-array must match them.
    let mut dims = vec![items.len()];
    let mut probe = items;
    while let Some(DbValue::Array(inner)) = probe.first() {
        dims.push(inner.len());
        probe = inner;
    }
    let mut flat: Vec<&DbValue> = Vec::new();
    fn flatten<'a>(items: &'a [DbValue], dims: &[usize], out: &mut Vec<&'a DbValue>) -> Result<(), String> {
        if items.len() != dims[0] {
            return Err("a multi-dimensional array must be rectangular (every sub-array the same length)".into());
        }
        for item in items {
            match (item, dims.len()) {
                (DbValue::Array(inner), n) if n > 1 => flatten(inner, &dims[1..], out)?,
                (DbValue::Array(_), _) => return Err("the array's items nest unevenly".into()),
                (_, n) if n > 1 => return Err("the array's items nest unevenly".into()),
                (other, _) => out.push(other),
            }
        }
        Ok(())
    }
    flatten(items, &dims, &mut flat)?;
    let empty = dims.contains(&0);
    let has_null = flat.contains(&&DbValue::Null);
    let mut out = Vec::new();
    out.extend((if empty { 0 } else { dims.len() as i32 }).to_be_bytes());
    out.extend(i32::from(has_null).to_be_bytes());
    out.extend(oid_of(elem).to_be_bytes());
    if !empty {
        for d in &dims {
            out.extend((*d as i32).to_be_bytes());
            out.extend(1i32.to_be_bytes());
        }
        for (i, item) in flat.iter().enumerate() {
            if **item == DbValue::Null {
                out.extend((-1i32).to_be_bytes());
            } else {
                let b = encode(item, elem).map_err(|e| format!("item {}: {e}", i + 1))?;
                out.extend((b.len() as i32).to_be_bytes());
                out.extend(b);
            }
        }
    }
    Ok(out)
}

/// A decimal string as numeric's binary form.
fn encode_numeric(t: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("'{t}' is not a number");
    let s = t.trim();
    let special = |sign: u16| {
        let mut out = vec![0, 0, 0, 0];
        out.extend(sign.to_be_bytes());
        out.extend([0, 0]);
        out
    };
    match s.to_ascii_lowercase().as_str() {
        "nan" => return Ok(special(0xC000)),
        "infinity" | "+infinity" | "inf" => return Ok(special(0xD000)),
        "-infinity" | "-inf" => return Ok(special(0xF000)),
        _ => {}
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mantissa, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => match e.parse::<i64>() {
            // numeric holds at most 131072 digits before the point and 16383 after.
            Ok(x) if x.abs() <= 200_000 => (m, x),
            _ => return Err(bad()),
        },
        None => (s, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.chars().chain(frac_part.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    // Shift the decimal point by the exponent.
    let mut digits: String = format!("{int_part}{frac_part}");
    let mut point = int_part.len() as i64 + exp;
    let dscale = (frac_part.len() as i64 - exp).max(0) as usize;
    if point < 0 {
        digits = format!("{}{digits}", "0".repeat((-point) as usize));
        point = 0;
    }
    while (digits.len() as i64) < point {
        digits.push('0');
    }
    let (ip, fp) = digits.split_at(point as usize);
    let ip = ip.trim_start_matches('0');
    // Group into base-10000 digits aligned on the decimal point.
    let ip_pad = format!("{}{ip}", "0".repeat((4 - ip.len() % 4) % 4));
    let fp_pad = format!("{fp}{}", "0".repeat((4 - fp.len() % 4) % 4));
    let mut groups: Vec<i16> = Vec::new();
    for c in ip_pad.as_bytes().chunks(4).chain(fp_pad.as_bytes().chunks(4)) {
        groups.push(std::str::from_utf8(c).unwrap_or("0").parse().unwrap_or(0));
    }
    let mut weight = (ip_pad.len() / 4) as i64 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let mut out = Vec::with_capacity(8 + groups.len() * 2);
    out.extend((groups.len() as i16).to_be_bytes());
    out.extend(i16::try_from(weight).map_err(|_| bad())?.to_be_bytes());
    out.extend((if neg && !groups.is_empty() { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend(u16::try_from(dscale).map_err(|_| bad())?.to_be_bytes());
    for g in groups {
        out.extend(g.to_be_bytes());
    }
    Ok(out)
}

fn encode_inet(t: &str, cidr: bool) -> Result<Vec<u8>, String> {
    let (addr, bits) = match t.trim().split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| format!("'{t}': bad prefix length"))?)),
        None => (t.trim(), None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| format!("'{t}' is not an IP address"))?;
    let (family, bytes, max) = match ip {
        std::net::IpAddr::V4(a) => (2u8, a.octets().to_vec(), 32u8),
        std::net::IpAddr::V6(a) => (3u8, a.octets().to_vec(), 128u8),
    };
    let bits = bits.unwrap_or(max);
    if bits > max {
        return Err(format!("'{t}': prefix length {bits} is more than {max}"));
    }
    let mut out = vec![family, bits, u8::from(cidr), bytes.len() as u8];
    out.extend(bytes);
    Ok(out)
}

/// An interval from a duration ("5m", "1h30m", "1.5s"), a clock ("02:00:00"), PostgreSQL's
/// words ("1 day 2 hours", "3 mons", "-1 days +02:00:00"), or a number of seconds.
pub fn parse_interval(t: &str) -> Result<(i64, i32, i32), String> {
    let s = t.trim();
    match s.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Ok((i64::MAX, i32::MAX, i32::MAX)),
        "-infinity" => return Ok((i64::MIN, i32::MIN, i32::MIN)),
        _ => {}
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok(((secs * 1e6).round() as i64, 0, 0));
    }
    if let Ok(d) = crate::duration::parse(s) {
        return Ok((i64::try_from(d.as_micros()).map_err(|_| "too long")?, 0, 0));
    }
    let bad = || format!("'{t}' is not a duration (\"5m\", \"1h30m\", \"1 day 02:00:00\", \"3 mons\")");
    let (mut us, mut days, mut months) = (0i64, 0i64, 0i64);
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if w.contains(':') {
            let (neg, clock) = match w.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, w.strip_prefix('+').unwrap_or(w)),
            };
            let parts: Vec<&str> = clock.split(':').collect();
            let (h, m, sec) = match parts.as_slice() {
                [h, m] => (h.parse::<i64>(), m.parse::<i64>(), Ok(0.0)),
                [h, m, s] => (h.parse::<i64>(), m.parse::<i64>(), s.parse::<f64>()),
                _ => return Err(bad()),
            };
            let (h, m, sec) = (h.map_err(|_| bad())?, m.map_err(|_| bad())?, sec.map_err(|_| bad())?);
            let v = h * 3_600_000_000 + m * 60_000_000 + (sec * 1e6).round() as i64;
            us += if neg { -v } else { v };
            i += 1;
            continue;
        }
        let n: f64 = w.parse().map_err(|_| bad())?;
        let unit = words.get(i + 1).ok_or_else(bad)?.to_ascii_lowercase();
        let unit = unit.trim_end_matches(',');
        match unit.trim_end_matches('s') {
            "microsecond" | "usec" | "u" => us += n.round() as i64,
            "millisecond" | "msec" | "m" if unit.starts_with("ms") || unit.starts_with("milli") => {
                us += (n * 1e3).round() as i64
            }
            "second" | "sec" => us += (n * 1e6).round() as i64,
            "minute" | "min" => us += (n * 60e6).round() as i64,
            "hour" | "hr" => us += (n * 3600e6).round() as i64,
            // Fractions carry down as PostgreSQL does: a month is 30 days, a day 24 hours.
            "day" => {
                days += n.trunc() as i64;
                us += (n.fract() * 86_400e6).round() as i64;
            }
            "week" => {
                let d = 7.0 * n;
                days += d.trunc() as i64;
                us += (d.fract() * 86_400e6).round() as i64;
            }
            "mon" | "month" | "year" | "yr" => {
                let m = if unit.starts_with('y') { 12.0 * n } else { n };
                months += m.trunc() as i64;
                let d = m.fract() * 30.0;
                days += d.trunc() as i64;
                us += (d.fract() * 86_400e6).round() as i64;
            }
            _ => return Err(bad()),
        }
        i += 2;
    }
    if words.is_empty() {
        return Err(bad());
    }
    Ok((us, i32::try_from(days).map_err(|_| bad())?, i32::try_from(months).map_err(|_| bad())?))
}

/// Names for a wrapped statement's rows: the original statement's columns.
pub fn names(columns: &[(String, PgTypeInfo)]) -> Vec<String> {
    columns.iter().map(|(n, _)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_print_as_postgresql_does() {
        assert_eq!(interval(0, 0, 0), "00:00:00");
        assert_eq!(interval(3_723_500_000, 0, 0), "01:02:03.5");
        assert_eq!(interval(7_200_000_000, -1, 0), "-1 days +02:00:00");
        assert_eq!(interval(0, 3, 14), "1 year 2 mons 3 days");
        assert_eq!(interval(-1_000_000, 1, 0), "1 day -00:00:01");
        assert_eq!(interval(90_000_000_000, 0, 0), "25:00:00");
    }

    #[test]
    fn interval_parameters_take_durations_clocks_and_postgresql_words() {
        assert_eq!(parse_interval("5m").unwrap(), (300_000_000, 0, 0));
        assert_eq!(parse_interval("1 day 02:00:00").unwrap(), (7_200_000_000, 1, 0));
        assert_eq!(parse_interval("3 mons").unwrap(), (0, 0, 3));
        assert_eq!(parse_interval("2 hours 30 minutes").unwrap(), (9_000_000_000, 0, 0));
        assert_eq!(parse_interval("90").unwrap(), (90_000_000, 0, 0));
        assert!(parse_interval("soon").is_err());
        assert_eq!(parse_interval("0.5 days").unwrap(), (43_200_000_000, 0, 0));
        assert_eq!(parse_interval("1.5 mons").unwrap(), (0, 15, 1));
        assert_eq!(parse_interval("infinity").unwrap(), (i64::MAX, i32::MAX, i32::MAX));
    }

    #[test]
    fn numerics_round_trip_exactly() {
        for t in ["0", "1.50", "-12345.6789", "100000000", "0.0001", "123456789012345678901234567890.5"] {
            let b = encode_numeric(t).unwrap();
            assert_eq!(numeric(&b).unwrap(), t, "{t}");
        }
        assert_eq!(numeric(&encode_numeric("NaN").unwrap()).unwrap(), "NaN");
        assert!(encode_numeric("12abc").is_err());
        assert!(encode_numeric("1e-9999999999").is_err(), "a huge exponent is refused, not allocated");
        assert!(encode_numeric("1e2147483647").is_err());
    }

    /// The text one value decodes to.
    fn decoded(b: &[u8], type_oid: u32) -> String {
        let mut t = Tape::default();
        decode_oid(b, type_oid, "", &mut t).unwrap();
        match t.values().remove(0) {
            DbValue::Text(s) => s,
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn addresses_round_trip() {
        for (text, cidr) in [("10.0.0.1", false), ("10.0.0.0/8", true), ("::1", false), ("10.1.2.3/24", false)] {
            assert_eq!(decoded(&encode_inet(text, cidr).unwrap(), oid::INET), text);
        }
    }

    #[test]
    fn timestamps_and_dates_print_as_chrono_prints_them() {
        let pg = |unix_us: i64| (unix_us - PG_EPOCH_US).to_be_bytes();
        for unix_us in [
            0,
            1_700_000_000_000_000,
            1_700_000_000_250_000,
            1_700_000_000_000_123,
            -1_000_001,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            253_402_300_800_000_000,
        ] {
            let t = chrono::DateTime::from_timestamp_micros(unix_us).unwrap();
            assert_eq!(
                decoded(&pg(unix_us), oid::TIMESTAMPTZ),
                t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
                "{unix_us}"
            );
            assert_eq!(
                decoded(&pg(unix_us), oid::TIMESTAMP),
                t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
                "{unix_us}"
            );
            let days = (unix_us.div_euclid(86_400_000_000) - PG_EPOCH_US / 86_400_000_000) as i32;
            assert_eq!(decoded(&days.to_be_bytes(), oid::DATE), t.date_naive().format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn unreadable_columns_are_asked_as_text_in_place() {
        let money = <sqlx::postgres::types::PgMoney as sqlx::Type<Postgres>>::type_info();
        let int = <i32 as sqlx::Type<Postgres>>::type_info();
        let cols = vec![("a".to_string(), int.clone()), ("b".to_string(), money)];
        assert_eq!(
            text_wrapped("select 1, '1'::money;  ", &cols).unwrap(),
            "WITH _rb(\"1\", \"2\") AS (\nselect 1, '1'::money\n) SELECT \"1\", \"2\"::text FROM _rb"
        );
        assert_eq!(text_wrapped("show all", &cols), None);
        assert!(text_wrapped("select 1, '1'::money; -- done", &cols).unwrap().contains("select 1, '1'::money\n)"));
        assert_eq!(text_wrapped("with d as (delete from q returning x) select 1, x::money from d", &cols), None);
        assert_eq!(text_wrapped("select 1; select 2", &cols), None);
        assert_eq!(text_wrapped("select 1", &[("a".into(), int)]), None);
    }
}
