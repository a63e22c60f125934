//! `backup`'s fake for `runbook test` (fake.lua beside this file): no database is dumped or
//! restored, but the objects and manifests are real ones in the store the test opened (in
//! memory), so `backup.list`, `latest` and `prune` work on them for real, a verification reads
//! the object back and checks its SHA-256 (an object a test corrupted fails it as it would in
//! production), and the outcome is recorded in the manifest as the real one is.
use std::collections::BTreeMap;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{BackupError, CreateSpec, Manifest, Source, Store};

/// What a test's fake says of a call (fake.lua hands over only these keys).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// create: the rows per table the dump holds; verify, restore: the rows the restore found.
    #[serde(default)]
    pub tables: Option<BTreeMap<String, i64>>,
    /// create: the object's bytes (default: a line naming the source).
    #[serde(default)]
    pub content: Option<String>,
    /// verify: what the verification found wrong (a check that failed, rows that differ).
    #[serde(default)]
    pub problems: Vec<String>,
    /// create: the object is damaged on its way to the store (its bytes are not those the
    /// manifest's SHA-256 was taken of), as a verification or restore will find.
    #[serde(default)]
    pub corrupt: bool,
}

/// A backup whose object is `answer.content`, with its manifest written last.
pub async fn create(spec: &CreateSpec, answer: &Answer) -> Result<Manifest, BackupError> {
    let (created_at, id) = super::timestamp_id();
    let engine = spec.source.engine();
    let ext = match (&spec.source, spec.plain) {
        (Source::Postgres { .. }, false) => "dump",
        (Source::Sqlite { .. }, _) => "sqlite",
        _ => "sql",
    };
    let key = format!("{}.{ext}{}", super::object_base(spec, &id), spec.compress.ext());
    let content = answer.content.clone().unwrap_or_else(|| format!("a fake dump of {}\n", spec.source.shown()));
    let bytes = content.into_bytes();
    let sha256 = super::hex(&Sha256::digest(&bytes));
    let size = bytes.len() as u64;
    let mut bytes = bytes;
    if answer.corrupt {
        if let Some(b) = bytes.first_mut() {
            *b ^= 0x20;
        }
    }
    spec.store.put_bytes(&key, bytes).await?;
    let manifest = Manifest {
        id,
        store: spec.store.url.clone(),
        key,
        created_at,
        engine: engine.into(),
        server_version: "fake".into(),
        tool: "runbook test".into(),
        tool_version: String::new(),
        source: spec.source.shown(),
        format: if ext == "dump" {
            "custom"
        } else if ext == "sqlite" {
            "sqlite"
        } else {
            "plain"
        }
        .into(),
        compress: spec.compress,
        bytes_raw: size,
        bytes_stored: size,
        sha256,
        duration_ms: 0,
        label: spec.label.clone(),
        tables: answer.tables.clone().unwrap_or_default(),
        tables_after: BTreeMap::new(),
        verified_at: None,
        verification: None,
    };
    super::write_manifest(&spec.store, &manifest).await?;
    Ok(manifest)
}

/// The object read back and its SHA-256 checked, then the fake's problems: recorded in the
/// manifest as a real verification is.
pub async fn verify(store: &Store, m: Manifest, answer: &Answer) -> Result<serde_json::Value, BackupError> {
    let started = Instant::now();
    let scratch = super::scratch()?;
    let outcome = match super::fetch_checked(store, &m, &scratch).await {
        Ok(_) => Ok((
            answer.tables.clone().unwrap_or_else(|| m.tables.clone()),
            vec![],
            answer.problems.clone(),
            vec![],
            false,
        )),
        Err(e) => Err(e),
    };
    super::record_verification(store, m, started, outcome, "").await
}

/// The object read back and its SHA-256 checked; nothing is restored. The rows restored are the
/// manifest's, or the fake's `tables`.
pub async fn restore(
    store: &Store,
    m: &Manifest,
    into: &Source,
    answer: &Answer,
) -> Result<serde_json::Value, BackupError> {
    if into.engine() != m.engine {
        return Err(BackupError::Usage(format!("a {} backup cannot be restored into {}", m.engine, into.shown())));
    }
    let scratch = super::scratch()?;
    super::fetch_checked(store, m, &scratch).await?;
    Ok(serde_json::json!({
        "key": m.key,
        "into": into.shown(),
        "cleaned_earlier_attempt": false,
        "tables": answer.tables.as_ref().unwrap_or(&m.tables),
        "duration_ms": 0,
    }))
}
