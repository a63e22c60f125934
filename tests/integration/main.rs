//! One integration-test binary: every test drives the real `runbook` binary over a temporary
//! directory, as a user would.
mod approval;
mod backup;
mod checks;
mod cli;
mod corpus;
mod crash;
mod cron;
mod db;
mod doc;
mod fixtures;
mod harness;
mod http;
mod locks;
mod params;
mod pty;
mod repl;
mod review;
mod run;
mod runbooks;
mod sandbox;
mod schedule;
mod secrets;
mod servers;
mod ssh;
mod storage;
mod tls;
