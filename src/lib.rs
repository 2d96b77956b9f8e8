//! lakepurge: a batch erasure engine for Parquet warehouses in object storage.
//!
//! The pipeline, one module a stage: [`spec`] → [`events`] → [`plan`] → [`rewrite`] →
//! [`commit`] → [`manifest`] → [`verify`]. [`purge`] runs the stages for a job, keeping its
//! [`journal`] so a crashed run resumes; [`validate`] and [`trace`] are the other commands;
//! [`store`] gives every stage its object store ([`store::fault`] injects failures in tests); [`demo`]
//! builds a sample warehouse.

pub mod commit;
pub mod demo;
pub mod error;
pub mod events;
pub mod journal;
pub mod manifest;
pub mod plan;
pub mod purge;
pub mod rewrite;
pub mod spec;
pub mod store;
pub mod trace;
pub mod validate;
pub mod verify;

pub use error::{Error, Result};
