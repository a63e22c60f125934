//! `runbook`: operational procedures written in Lua, run step by step and checkpointed in a
//! journal. See `docs/design.md` for the layers.
pub mod approval;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod duration;
pub mod engine;
pub mod error;
pub mod files;
pub mod journal;
pub mod lua;
pub mod output;
pub mod primitives;
pub mod process;
pub mod repl;
pub mod scheduler;
pub mod secret;
pub mod serve;
pub mod testing;
