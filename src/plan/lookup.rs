//! The erased keys of one rule as the key columns of a schema need them: a hash table over
//! Arrow rows, or sorted integers shared with statistics pruning.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::DataType;
use arrow::row::{RowConverter, SortField};

use super::*;
use crate::error::{Error, Result};

/// Erased keys in Arrow's row format, with the events naming each: the rows in one buffer, a
/// hash table of row indices over them (aHash: every key value of every affected file is looked
/// up), the event of each row, and the further events of keys several events name. About 30
/// bytes a key, where a map of boxed keys to vectors took over 100.
pub(super) struct KeyTable {
    pub(super) rows: arrow::row::Rows,
    pub(super) table: hashbrown::HashTable<u32>,
    pub(super) hasher: ahash::RandomState,
    /// The event of each row (for a repeated key, of its first row).
    pub(super) events: Vec<u32>,
    /// By a key's first row: its events after the first.
    pub(super) more: HashMap<u32, Vec<u32>>,
}

impl KeyTable {
    /// Indexes the valid rows of `rows`; `events[i]` names row `i`.
    pub(super) fn new(
        rows: arrow::row::Rows,
        events: Vec<u32>,
        valid: impl Fn(usize) -> bool,
    ) -> KeyTable {
        let hasher = ahash::RandomState::new();
        let mut table = hashbrown::HashTable::with_capacity(rows.num_rows());
        let mut more: HashMap<u32, Vec<u32>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            if !valid(i) {
                continue;
            }
            let key = row.as_ref();
            let hash = hasher.hash_one(key);
            match table.find(hash, |&j: &u32| rows.row(j as usize).as_ref() == key) {
                Some(&first) => {
                    let extra = more.entry(first).or_default();
                    if events[first as usize] != events[i] && !extra.contains(&events[i]) {
                        extra.push(events[i]);
                    }
                }
                None => {
                    table.insert_unique(hash, i as u32, |&j: &u32| {
                        hasher.hash_one(rows.row(j as usize).as_ref())
                    });
                }
            }
        }
        more.retain(|_, v| !v.is_empty());
        KeyTable {
            rows,
            table,
            hasher,
            events,
            more,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The events naming `key`, if it is an erased key.
    pub(super) fn events_of(&self, key: &[u8]) -> Option<impl Iterator<Item = u32> + '_> {
        let hash = self.hasher.hash_one(key);
        let &first = self
            .table
            .find(hash, |&j| self.rows.row(j as usize).as_ref() == key)?;
        let more = self.more.get(&first).into_iter().flatten().copied();
        Some(std::iter::once(self.events[first as usize]).chain(more))
    }
}

/// Erased key values of one rule, encoded in Arrow's row format for one set of key types.
pub(super) struct Lookup {
    pub(super) converter: RowConverter,
    pub(super) keys: KeyIndex,
    pub(super) unconvertible: u64,
    /// Sorted erased values, for statistics pruning (single top-level columns only).
    pub(super) sorted: Option<SortedKeys>,
}

impl Lookup {
    /// A lookup of no keys: its rule matches nothing.
    pub(super) fn empty() -> Result<Lookup> {
        let converter = RowConverter::new(vec![SortField::new(DataType::Int64)])
            .map_err(|e| Error::arrow("an empty lookup".to_string(), e))?;
        Ok(Lookup {
            converter,
            keys: KeyIndex::ints(Arc::new(Vec::new()), Vec::new()),
            unconvertible: 0,
            sorted: None,
        })
    }
}

pub(super) enum SortedKeys {
    /// Shared with a [`KeyIndex::Ints`] (a key named by several events may repeat).
    Ints(Arc<Vec<i64>>),
    Bytes(Vec<Vec<u8>>),
}

/// How a rule's erased keys are looked up.
pub(super) enum KeyIndex {
    /// Keys in Arrow's row format (any key types).
    Rows(KeyTable),
    /// One Int64 key column: the keys sorted (a key named by several events repeats), the
    /// event of each in the same order, and a hash table of where each key starts. About 20
    /// bytes a key.
    Ints {
        keys: Arc<Vec<i64>>,
        events: Vec<u32>,
        starts: hashbrown::HashTable<u32>,
        hasher: ahash::RandomState,
    },
}

impl KeyIndex {
    pub(super) fn is_empty(&self) -> bool {
        match self {
            KeyIndex::Rows(t) => t.is_empty(),
            KeyIndex::Ints { keys, .. } => keys.is_empty(),
        }
    }

    /// `keys` sorted with `events`: indexed by where each key starts.
    pub(super) fn ints(keys: Arc<Vec<i64>>, events: Vec<u32>) -> KeyIndex {
        let hasher = ahash::RandomState::new();
        let mut starts = hashbrown::HashTable::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if i == 0 || keys[i - 1] != *k {
                starts.insert_unique(hasher.hash_one(k), i as u32, |&j: &u32| {
                    hasher.hash_one(keys[j as usize])
                });
            }
        }
        KeyIndex::Ints {
            keys,
            events,
            starts,
            hasher,
        }
    }
}

/// One string column per key column: the ids themselves (`width` 1), or the parts of
/// composite ids (JSON arrays of `width` strings or numbers; any other id is null in each).
fn id_columns(values: &StringArray, width: usize) -> Vec<StringArray> {
    if width == 1 {
        return vec![values.clone()];
    }
    let mut parts: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(values.len()); width];
    for value in values.iter() {
        let elems = value
            .and_then(|v| serde_json::from_str::<Vec<serde_json::Value>>(v).ok())
            .filter(|v| v.len() == width);
        for (k, col) in parts.iter_mut().enumerate() {
            col.push(elems.as_ref().and_then(|v| match &v[k] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(x) => Some(x.to_string()),
                _ => None,
            }));
        }
    }
    parts.into_iter().map(StringArray::from).collect()
}

pub(super) fn build_lookup(
    rule: &RuleSubjects<'_>,
    types: &[DataType],
    sortable: bool,
) -> Result<Lookup> {
    let label = rule.spec.label();
    let aerr = |e| Error::arrow(format!("match {label}: converting subject ids"), e);
    let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())
        .map_err(aerr)?;
    let batches = match rule.subjects {
        Some(s) => Some(s.batches(rule.spec.normalize)?),
        None => None,
    };
    if let [DataType::Int64] = types {
        let capacity = rule.subjects.map_or(0, |s| s.len());
        return int_lookup(
            batches.into_iter().flatten(),
            capacity,
            converter,
            sortable,
            &label,
        );
    }
    // Any other key types: the ids are gathered, converted and encoded in Arrow's row format.
    let mut ids = Vec::new();
    let mut events: Vec<u32> = Vec::new();
    for batch in batches.into_iter().flatten() {
        let batch = batch?;
        events.extend(batch.events.values().iter());
        ids.push(batch.ids);
    }
    let values = match ids.len() {
        0 => StringArray::from(Vec::<Option<&str>>::new()),
        1 => ids.swap_remove(0),
        _ => {
            let parts: Vec<&dyn Array> = ids.iter().map(|a| a as &dyn Array).collect();
            let all = arrow::compute::concat(&parts).map_err(aerr)?;
            all.as_string::<i32>().clone()
        }
    };
    drop(ids);
    let values = &values;
    let id_columns = id_columns(values, types.len());
    let mut columns = Vec::with_capacity(types.len());
    for (col, ty) in id_columns.iter().zip(types) {
        columns.push(convert_ids(col, ty).map_err(aerr)?);
    }
    let valid = combined_nulls(&columns);
    let is_valid = |i: usize| valid.as_ref().is_none_or(|v| v.is_valid(i));
    let unconvertible = (0..values.len()).filter(|&i| !is_valid(i)).count() as u64;
    report_unconvertible(&label, unconvertible);
    let rows = converter.convert_columns(&columns).map_err(aerr)?;
    let keys = KeyIndex::Rows(KeyTable::new(rows, events, is_valid));
    let sorted = if sortable && !columns.is_empty() {
        sorted_keys(&columns[0])
    } else {
        None
    };
    Ok(Lookup {
        converter,
        keys,
        unconvertible,
        sorted,
    })
}

/// The lookup of one Int64 key: sorted keys and their events, no row format, built batch by
/// batch (pairs sorted in place, then split: ~16 bytes a key at the peak).
fn int_lookup(
    batches: impl Iterator<Item = Result<crate::events::SubjectBatch>>,
    capacity: usize,
    converter: RowConverter,
    sortable: bool,
    label: &str,
) -> Result<Lookup> {
    let aerr = |e| Error::arrow(format!("match {label}: converting subject ids"), e);
    let mut pairs: Vec<(i64, u32)> = Vec::with_capacity(capacity);
    let mut unconvertible = 0u64;
    for batch in batches {
        let batch = batch?;
        let col = convert_ids(&batch.ids, &DataType::Int64).map_err(aerr)?;
        let col = col.as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..col.len() {
            if col.is_valid(i) {
                pairs.push((col.value(i), batch.events.value(i)));
            } else {
                unconvertible += 1;
            }
        }
    }
    report_unconvertible(label, unconvertible);
    pairs.sort_unstable();
    pairs.dedup();
    let key_events: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    // Collected in place (same alignment), then shrunk.
    let mut keys: Vec<i64> = pairs.into_iter().map(|p| p.0).collect();
    keys.shrink_to_fit();
    let keys = Arc::new(keys);
    Ok(Lookup {
        converter,
        sorted: sortable.then(|| SortedKeys::Ints(Arc::clone(&keys))),
        keys: KeyIndex::ints(keys, key_events),
        unconvertible,
    })
}

pub(super) fn report_unconvertible(rule: &str, unconvertible: u64) {
    if unconvertible > 0 {
        tracing::debug!(
            rule,
            unconvertible,
            "subject ids that cannot convert to the key type match nothing"
        );
    }
}

pub(super) fn sorted_keys(column: &ArrayRef) -> Option<SortedKeys> {
    let ty = column.data_type();
    if matches!(
        ty,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    ) {
        let c = arrow::compute::cast(column, &DataType::Int64).ok()?;
        let a = c.as_primitive::<arrow::datatypes::Int64Type>();
        let mut v: Vec<i64> = a.iter().flatten().collect();
        v.sort_unstable();
        v.dedup();
        return Some(SortedKeys::Ints(Arc::new(v)));
    }
    if ty == &DataType::Utf8 {
        let a = column.as_string::<i32>();
        let mut v: Vec<Vec<u8>> = a.iter().flatten().map(|s| s.as_bytes().to_vec()).collect();
        v.sort_unstable();
        v.dedup();
        return Some(SortedKeys::Bytes(v));
    }
    None
}
