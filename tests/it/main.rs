//! Integration tests: one binary (links once). Each test runs the built `lakepurge` binary in a
//! fresh temporary folder and checks rows, bytes, hashes, exit codes and the manifest.

mod airflow;
mod audit;
mod azure;
mod cli;
mod cloud;
mod common;
mod confirm;
mod crash;
mod deep;
mod delta;
mod discover;
mod faults;
mod fixtures;
mod formats;
mod holds;
mod iceberg;
mod ops;
mod proxy;
mod regressions;
mod report;
mod rewrite;
mod s3;
mod store_faults;
mod truth;
