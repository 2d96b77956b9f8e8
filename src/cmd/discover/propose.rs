//! Proposed table specs: for an unregistered table, a spec with a rule per column that holds
//! erased subjects; for a registered table with an uncovered column, its spec with the rules
//! to add. Written as TOML a data team reviews and commits; they pass `validate`.

use serde::Serialize;

use super::evidence::Evidence;
use crate::spec::{Action, ColumnPath, MatchSpec, Normalize, TableSpec};

#[derive(Serialize)]
struct Spec<'a> {
    name: &'a str,
    location: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partitioning: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    redact: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retain: Option<crate::spec::Retain>,
    #[serde(rename = "match")]
    matches: Vec<Rule>,
}

#[derive(Serialize)]
struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<ColumnPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    columns: Option<Vec<ColumnPath>>,
    subject_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    normalize: Option<Normalize>,
}

/// A column path as a spec writes it: dotted, or its segments when a name holds a dot.
pub fn column_path(segments: &[String]) -> ColumnPath {
    if segments.iter().any(|s| s.contains('.')) {
        ColumnPath::Segments(segments.to_vec())
    } else {
        ColumnPath::Dotted(segments.join("."))
    }
}

fn new_rules(evidence: &[Evidence]) -> Vec<Rule> {
    evidence
        .iter()
        .map(|e| Rule {
            column: Some(column_path(&e.column)),
            columns: None,
            subject_type: e.subject_type.clone(),
            normalize: e.normalize,
        })
        .collect()
}

fn existing_rule(m: &MatchSpec) -> Rule {
    Rule {
        column: m.column.clone(),
        columns: m.columns.clone(),
        subject_type: m.subject_type.clone(),
        normalize: m.normalize,
    }
}

fn to_toml(header: &str, spec: &Spec<'_>) -> String {
    // Serialising plain strings and lists cannot fail.
    let body = toml::to_string(spec).unwrap_or_default();
    format!("{header}{body}")
}

/// The spec of an unregistered table at `location` (`delta` when it is a Delta table).
pub fn unregistered(name: &str, location: &str, delta: bool, evidence: &[Evidence]) -> String {
    let header = "# Proposed by `lakepurge discover`: this table holds erased subjects in the \
                  columns below.\n# Review it (storage options, other personal columns), then \
                  add it to the job's table specs.\n";
    to_toml(
        header,
        &Spec {
            name,
            location,
            format: delta.then_some("delta"),
            partitioning: Vec::new(),
            action: None,
            redact: Vec::new(),
            retain: None,
            matches: new_rules(evidence),
        },
    )
}

/// The registered `spec` (at `location`) with rules for the uncovered columns added.
pub fn extended(spec: &TableSpec, location: &str, evidence: &[Evidence]) -> String {
    let header = format!(
        "# Proposed by `lakepurge discover`: table {} with rules for columns that hold erased \
         subjects and that no rule covered.\n# It replaces the spec in {}{}.\n",
        spec.name,
        spec.source.display(),
        if spec.storage_options.is_empty() {
            ""
        } else {
            " (copy its storage_options back: they are not written here)"
        }
    );
    let mut matches: Vec<Rule> = spec.matches.iter().map(existing_rule).collect();
    matches.extend(new_rules(evidence));
    to_toml(
        &header,
        &Spec {
            name: &spec.name,
            location,
            format: (spec.format == crate::spec::TableFormat::Delta).then_some("delta"),
            partitioning: spec.partitioning.clone(),
            action: (spec.action == Action::Redact).then_some("redact"),
            redact: spec.redact.clone(),
            retain: spec.retain.clone(),
            matches,
        },
    )
}
