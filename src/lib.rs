//! lakepurge: a batch erasure engine for Parquet warehouses in object storage.
//!
//! The pipeline, one module a stage: [`spec`] → [`events`] (and the [`holds`] that except
//! subjects from erasure) → [`plan`] → [`rewrite`] →
//! [`commit`] → [`manifest`] (with the [`confirm`]ations the erasure pipeline reads back) →
//! [`verify`]. [`purge`] runs the stages for a job, keeping its
//! [`journal`] so a crashed run resumes, and the job's [`lease`] so one run works at a time; [`table`] is where table formats differ (a plain
//! folder, or Delta Lake: files from the log, new paths, one transaction per table); [`cmd`] holds the other commands (validate, trace,
//! demo); [`store`] gives every stage its object store ([`store::fault`] injects failures in
//! tests); [`error`] says whose fault a failure is.

pub mod cmd;
pub mod commit;
pub mod confirm;
pub mod error;
pub mod events;
pub mod holds;
pub mod journal;
pub mod lease;
pub mod manifest;
pub mod plan;
pub mod purge;
pub mod rewrite;
pub mod spec;
pub mod store;
pub mod table;
pub mod verify;

pub use error::{Error, Result};
