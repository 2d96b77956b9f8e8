//! The commands that are not pipeline stages: `validate` (reaches every location and checks
//! every match column without writing), `trace` (where one erasure request took effect, from
//! the manifests), `status` (confirmed and pending requests, against an SLA), `discover` (where erased subjects
//! live outside the rules), `report` (one HTML page of all of it, for the privacy office and auditors)
//! and `demo` (a sample warehouse run end to end). `plan`, `purge` and `verify`
//! are stages of their own.

pub mod demo;
pub mod discover;
pub mod report;
pub mod status;
pub mod trace;
pub mod validate;
