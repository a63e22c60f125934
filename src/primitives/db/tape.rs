//! Decoded values of many rows laid out flat: one vector of items and one of bytes, reused from
//! one batch of rows to the next.
//!
//! A 100,000-row result read into `DbValue`s made a million small allocations (a `Vec` per
//! row, a `String` per text value, a map and strings per JSON object) and freed them all again;
//! that cost more than the reading itself. A tape holds the same values in preorder: a compound
//! item (`Array(n)`, `Object(n)`) is followed by its `n` values (an object's as key, value
//! pairs). Lua results are built straight from a tape (see `db::lua`), everything else converts
//! it to `DbValue`s with [`Tape::values`], so there is one decoder for both.
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::DbValue;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Item {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A JSON integer past i64 (a float in Lua, exact in JSON).
    U64(u64),
    /// UTF-8 text at `.0 .. .0 + .1` of the tape's bytes.
    Text(u32, u32),
    /// Raw bytes (bytea), placed like `Text`.
    Bytes(u32, u32),
    /// An array of the next `n` values.
    Array(u32),
    /// A JSON object of the next `n` key (a `Text`), value pairs.
    Object(u32),
    /// The next value is a JSON document (its arrays and objects become JSON, not `DbValue`s).
    Json,
}

#[derive(Default)]
pub struct Tape {
    pub items: Vec<Item>,
    pub bytes: Vec<u8>,
}

/// The room a tape leaves for bytes: its places are 32-bit.
const MAX_BYTES: usize = u32::MAX as usize;

impl Tape {
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
    }

    pub fn push(&mut self, item: Item) {
        self.items.push(item);
    }

    /// The place of the bytes written since `start`.
    fn span(&self, start: usize) -> Result<(u32, u32), String> {
        if self.bytes.len() > MAX_BYTES {
            return Err("the result is too large to read at once (over 4 GB of values in one batch of rows)".into());
        }
        Ok((start as u32, (self.bytes.len() - start) as u32))
    }

    pub fn text(&mut self, s: &str) -> Result<(), String> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(s.as_bytes());
        let (at, len) = self.span(start)?;
        self.items.push(Item::Text(at, len));
        Ok(())
    }

    /// Text that must be checked to be UTF-8.
    pub fn utf8(&mut self, b: &[u8]) -> Result<(), String> {
        let s = std::str::from_utf8(b).map_err(|_| "not UTF-8 text")?;
        self.text(s)
    }

    pub fn raw(&mut self, b: &[u8]) -> Result<(), String> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        let (at, len) = self.span(start)?;
        self.items.push(Item::Bytes(at, len));
        Ok(())
    }

    /// Text formatted straight into the tape, with no string of its own.
    pub fn write(&mut self, f: impl FnOnce(&mut Out<'_>) -> std::fmt::Result) -> Result<(), String> {
        let start = self.bytes.len();
        f(&mut Out(&mut self.bytes)).map_err(|_| "cannot format the value")?;
        let (at, len) = self.span(start)?;
        self.items.push(Item::Text(at, len));
        Ok(())
    }

    /// Starts a compound item whose count is set when it is known ([`Tape::close`]).
    pub fn open(&mut self, item: Item) -> usize {
        self.items.push(item);
        self.items.len() - 1
    }

    pub fn close(&mut self, at: usize, n: u32) {
        match &mut self.items[at] {
            Item::Array(c) | Item::Object(c) => *c = n,
            _ => {}
        }
    }

    /// A JSON document, parsed straight into the tape.
    pub fn json(&mut self, b: &[u8]) -> Result<(), String> {
        let items = self.items.len();
        let bytes = self.bytes.len();
        self.items.push(Item::Json);
        let mut de = serde_json::Deserializer::from_slice(b);
        let parsed = JsonSeed(self).deserialize(&mut de).and_then(|()| de.end());
        if let Err(e) = parsed {
            self.items.truncate(items);
            self.bytes.truncate(bytes);
            return Err(e.to_string());
        }
        self.span(bytes).map(|_| ())
    }

    pub fn str_at(&self, at: u32, len: u32) -> &str {
        let b = self.slice(at, len);
        // Text items are only ever made from `str`s.
        std::str::from_utf8(b).unwrap_or_default()
    }

    pub fn slice(&self, at: u32, len: u32) -> &[u8] {
        self.bytes.get(at as usize..at as usize + len as usize).unwrap_or_default()
    }

    /// Appends a value read some other way (MySQL, SQLite, one value).
    pub fn add(&mut self, v: &DbValue) -> Result<(), String> {
        match v {
            DbValue::Null => self.push(Item::Null),
            DbValue::Bool(b) => self.push(Item::Bool(*b)),
            DbValue::Int(n) => self.push(Item::Int(*n)),
            DbValue::Float(f) => self.push(Item::Float(*f)),
            DbValue::Text(t) => self.text(t)?,
            DbValue::Bytes(b) => self.raw(b)?,
            DbValue::Json(j) => {
                self.push(Item::Json);
                self.add_json(j)?;
            }
            DbValue::Array(items) => {
                self.push(Item::Array(u32::try_from(items.len()).map_err(|_| "an array too large")?));
                for v in items {
                    self.add(v)?;
                }
            }
        }
        Ok(())
    }

    fn add_json(&mut self, j: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value as J;
        match j {
            J::Null => self.push(Item::Null),
            J::Bool(b) => self.push(Item::Bool(*b)),
            J::Number(n) => self.push(match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Item::Int(i),
                (None, Some(u)) => Item::U64(u),
                _ => Item::Float(n.as_f64().unwrap_or(f64::NAN)),
            }),
            J::String(t) => self.text(t)?,
            J::Array(items) => {
                self.push(Item::Array(u32::try_from(items.len()).map_err(|_| "a JSON array too large")?));
                for v in items {
                    self.add_json(v)?;
                }
            }
            J::Object(map) => {
                self.push(Item::Object(u32::try_from(map.len()).map_err(|_| "a JSON object too large")?));
                for (k, v) in map {
                    self.text(k)?;
                    self.add_json(v)?;
                }
            }
        }
        Ok(())
    }

    /// Every value on the tape, from the start.
    pub fn values(&self) -> Vec<DbValue> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.items.len() {
            out.push(self.value(&mut i));
        }
        out
    }

    /// The value at item `*i`, moving `*i` past it.
    pub fn value(&self, i: &mut usize) -> DbValue {
        let Some(&item) = self.items.get(*i) else {
            return DbValue::Null;
        };
        *i += 1;
        match item {
            Item::Null => DbValue::Null,
            Item::Bool(b) => DbValue::Bool(b),
            Item::Int(n) => DbValue::Int(n),
            Item::Float(f) => DbValue::Float(f),
            Item::U64(n) => DbValue::Float(n as f64),
            Item::Text(at, len) => DbValue::Text(self.str_at(at, len).to_string()),
            Item::Bytes(at, len) => DbValue::Bytes(self.slice(at, len).to_vec()),
            Item::Array(n) => DbValue::Array((0..n).map(|_| self.value(i)).collect()),
            Item::Object(_) => {
                *i -= 1;
                DbValue::Json(self.json_value(i))
            }
            Item::Json => DbValue::Json(self.json_value(i)),
        }
    }

    fn json_value(&self, i: &mut usize) -> serde_json::Value {
        use serde_json::Value as J;
        let Some(&item) = self.items.get(*i) else {
            return J::Null;
        };
        *i += 1;
        match item {
            Item::Null | Item::Json => J::Null,
            Item::Bool(b) => J::Bool(b),
            Item::Int(n) => J::from(n),
            Item::U64(n) => J::from(n),
            Item::Float(f) => serde_json::Number::from_f64(f).map(J::Number).unwrap_or(J::Null),
            Item::Text(at, len) => J::String(self.str_at(at, len).to_string()),
            Item::Bytes(at, len) => J::String(String::from_utf8_lossy(self.slice(at, len)).into_owned()),
            Item::Array(n) => J::Array((0..n).map(|_| self.json_value(i)).collect()),
            Item::Object(n) => {
                let mut map = serde_json::Map::new();
                for _ in 0..n {
                    let key = match self.json_value(i) {
                        J::String(s) => s,
                        other => other.to_string(),
                    };
                    map.insert(key, self.json_value(i));
                }
                J::Object(map)
            }
        }
    }
}

/// The tape's bytes as a `fmt::Write` target.
pub struct Out<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Out<'_> {
    pub fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

/// Parses one JSON value onto the tape (serde_json's own recursion limit applies).
struct JsonSeed<'t>(&'t mut Tape);

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.0.push(Item::Null);
        Ok(())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(Item::Bool(v));
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(Item::Int(v));
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(i64::try_from(v).map(Item::Int).unwrap_or(Item::U64(v)));
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(Item::Float(v));
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.0.text(v).map_err(E::custom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.open(Item::Array(0));
        let mut n = 0u32;
        while seq.next_element_seed(JsonSeed(&mut *self.0))?.is_some() {
            n += 1;
        }
        self.0.close(at, n);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.open(Item::Object(0));
        let mut n = 0u32;
        while map.next_key_seed(JsonSeed(&mut *self.0))?.is_some() {
            map.next_value_seed(JsonSeed(&mut *self.0))?;
            n += 1;
        }
        self.0.close(at, n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_on_a_tape_reads_back_as_the_same_document() {
        let doc = r#"{"a":[1,-2,3.5,18446744073709551615],"b":{"c":null,"d":true,"e":"x\u00e9"},"f":[]}"#;
        let mut t = Tape::default();
        t.json(doc.as_bytes()).unwrap();
        let DbValue::Json(back) = t.values().remove(0) else { panic!("not JSON") };
        let want: serde_json::Value = serde_json::from_str(doc).unwrap();
        assert_eq!(back, want);
    }

    #[test]
    fn a_broken_json_document_leaves_the_tape_as_it_was() {
        let mut t = Tape::default();
        t.text("before").unwrap();
        assert!(t.json(br#"{"a": [1, 2"#).is_err());
        assert_eq!(t.values(), vec![DbValue::Text("before".into())]);
    }

    #[test]
    fn nested_arrays_keep_their_shape() {
        let mut t = Tape::default();
        let outer = t.open(Item::Array(0));
        for row in 0..2 {
            let inner = t.open(Item::Array(0));
            t.push(Item::Int(row));
            t.push(Item::Null);
            t.close(inner, 2);
        }
        t.close(outer, 2);
        assert_eq!(
            t.values(),
            vec![DbValue::Array(vec![
                DbValue::Array(vec![DbValue::Int(0), DbValue::Null]),
                DbValue::Array(vec![DbValue::Int(1), DbValue::Null]),
            ])]
        );
    }
}
