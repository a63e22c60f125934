//! `runbook serve`: the web console and HTTP API over the journal.
pub mod config;
