//! What chance alone would find: decoys and verdicts.
//!
//! A column of small integers holds some erased user ids whatever it means: a counter, a
//! duration, another entity's own sequence. So the erased ids a column holds are compared with
//! what the same column holds of *decoys*: ids of the same shape and the same neighbourhood
//! that were not erased (an integer id's decoys are integers within 5% or 100 of it; a text
//! id's digits are varied the same way and its letters kept; an id without digits gets other
//! letters). A column unrelated to the subjects holds decoys as often as erased ids; a column
//! that refers to them holds erased ids far more often than their neighbours that are not
//! subjects. The lift is the ratio, and the verdict weighs it with the number of distinct
//! subjects and how likely chance is to give that many.

use std::collections::{BTreeMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::events::Events;

/// Decoys made for each seed id.
pub const DECOYS_PER_ID: usize = 16;

/// Erased ids of one type decoys are made for, at most (a sample of larger sets).
pub const MAX_SEEDS: usize = 10_000;

/// The lift a finding needs by default: the column holds erased ids at least this many times
/// more often than ids of the same shape that were not erased.
pub const DEFAULT_MIN_LIFT: f64 = 10.0;

/// Distinct erased subjects a finding needs by default.
pub const DEFAULT_MIN_SUBJECTS: u64 = 1;

/// A finding also needs chance to give as many subjects with a probability below this.
pub const MAX_CHANCE: f64 = 1e-4;

/// Decoy fill above which a column counts as dense where the erased ids fall (a sequence, a
/// counter, a unique key): the lift it needs is raised.
const DENSE_FILL: f64 = 0.5;

/// The decoys of one subject type: for each decoy, the seed (index into the seeds) it was made
/// from.
#[derive(Debug, Default)]
pub struct Decoys {
    pub ids: Vec<String>,
    pub seed_of: Vec<u32>,
    /// Decoys made per seed; 0 where its neighbourhood is all erased ids (a block): its
    /// chance cannot be measured, and it is left out of the lift.
    pub per_seed: Vec<u32>,
    /// Each seed's erased id, as an index into the type's sorted erased ids.
    pub seeds: Vec<u32>,
    /// Erased ids of the type (seeds are all of them, or a sample past [`MAX_SEEDS`]).
    pub erased: usize,
}

/// The job's erased subjects and their decoys, as one set of subjects to look up: every id is
/// an event of its own, so a match says which id it was.
pub struct Probe {
    pub events: Events,
    /// By subject type.
    pub types: BTreeMap<String, ProbeType>,
    /// Every erased id, of any type: a folder named after one is masked in the report.
    pub erased: HashSet<String>,
}

impl Probe {
    /// `location` with each folder named after an erased id (`<id>` or `key=<id>`) masked.
    pub fn mask(&self, location: &str) -> String {
        location
            .split('/')
            .map(|seg| {
                let value = seg.split_once('=').map_or(seg, |(_, v)| v);
                if !value.is_empty() && self.erased.contains(value) {
                    match seg.split_once('=') {
                        Some((k, _)) => format!("{k}=<erased id>"),
                        None => "<erased id>".to_string(),
                    }
                } else {
                    seg.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

pub struct ProbeType {
    /// The subject type the decoys are looked up as.
    pub decoy_type: String,
    /// The event indices of the type's first erased id and first decoy (the erased ids of
    /// every type come before every decoy).
    pub erased_base: u32,
    pub decoy_base: u32,
    pub decoys: Decoys,
}

impl Probe {
    /// The probe of `events`' subjects (read back from their spill). The erased ids of every
    /// type come first, then the decoys of every type.
    pub fn new(events: &Events) -> Result<Probe> {
        let mut read: Vec<(String, Vec<String>, Decoys)> = Vec::new();
        for (ty, subjects) in &events.by_type {
            let mut erased = Vec::with_capacity(subjects.len());
            for batch in subjects.batches(None)? {
                erased.extend(batch?.ids.iter().flatten().map(str::to_string));
            }
            erased.sort_unstable();
            erased.dedup();
            let d = decoys(&erased);
            read.push((ty.clone(), erased, d));
        }
        let decoy_type = |ty: &str| format!("{ty}\u{1}decoy");
        let erased_total: usize = read.iter().map(|(_, e, _)| e.len()).sum();
        let (mut erased_base, mut decoy_base) = (0, erased_total);
        let mut bases = Vec::with_capacity(read.len());
        for (_, e, d) in &read {
            bases.push((erased_base as u32, decoy_base as u32));
            erased_base += e.len();
            decoy_base += d.ids.len();
        }
        let decoy_names: Vec<String> = read.iter().map(|(t, _, _)| decoy_type(t)).collect();
        let lists = read
            .iter()
            .map(|(t, e, _)| (t.as_str(), e.as_slice()))
            .chain(
                read.iter()
                    .zip(&decoy_names)
                    .map(|((_, _, d), n)| (n.as_str(), d.ids.as_slice())),
            );
        let events = Events::from_subjects("discover's probe", lists)?;
        let erased = read
            .iter()
            .flat_map(|(_, e, _)| e.iter().cloned())
            .collect();
        let types = read
            .into_iter()
            .zip(bases)
            .map(|((ty, _, decoys), (erased_base, decoy_base))| {
                let t = ProbeType {
                    decoy_type: decoy_type(&ty),
                    erased_base,
                    decoy_base,
                    decoys,
                };
                (ty, t)
            })
            .collect();
        Ok(Probe {
            events,
            types,
            erased,
        })
    }
}

/// A stable 64-bit hash of an id (the same decoys on every run).
fn stable_hash(s: &str, salt: u64) -> u64 {
    let d = Sha256::new()
        .chain_update(salt.to_le_bytes())
        .chain_update(s.as_bytes())
        .finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// Times a seed's neighbourhood is doubled when it offers too few decoys: past that, it is a
/// block of erased ids.
const MAX_WIDENING: u32 = 2;

/// Decoys made per subject type at most: the fewer the erased ids, the more decoys each (up to
/// [`MAX_DECOYS_PER_ID`]), so that chance is measured finely enough for one or two hits of ids
/// that nothing else resembles (emails) to count.
const DECOY_BUDGET: usize = 200_000;
const MAX_DECOYS_PER_ID: usize = 10_000;

/// Makes the decoys of `erased` (the ids of one subject type): per seed, up to the budget's
/// share of ids near it (see [`decoy`]), none an erased id, none twice for one seed. A seed
/// whose neighbourhood offers fewer than [`DECOYS_PER_ID`] (small numbers) has it doubled, up
/// to [`MAX_WIDENING`] times; one that still does not (inside a block of erased ids) gets none.
pub fn decoys(erased: &[String]) -> Decoys {
    let set: HashSet<&str> = erased.iter().map(String::as_str).collect();
    let mut seeds: Vec<u32> = (0..erased.len() as u32).collect();
    if seeds.len() > MAX_SEEDS {
        seeds.sort_by_key(|&i| stable_hash(&erased[i as usize], 0));
        seeds.truncate(MAX_SEEDS);
        seeds.sort_unstable();
    }
    let per = (DECOY_BUDGET / seeds.len().max(1)).clamp(DECOYS_PER_ID, MAX_DECOYS_PER_ID);
    let shape = Shape {
        stride: common_stride(erased),
        scale: 0,
    };
    let mut out = Decoys {
        erased: erased.len(),
        seeds: seeds.clone(),
        ..Decoys::default()
    };
    for (i, &at) in seeds.iter().enumerate() {
        let seed = &erased[at as usize];
        let mut rng = StdRng::seed_from_u64(stable_hash(seed, 1));
        let mut mine: HashSet<String> = HashSet::new();
        let mut shape = shape;
        loop {
            for _ in 0..per * 4 {
                if mine.len() == per {
                    break;
                }
                let d = decoy(seed, &mut rng, shape);
                if d != *seed && !set.contains(d.as_str()) {
                    mine.insert(d);
                }
            }
            if mine.len() >= DECOYS_PER_ID || shape.scale >= MAX_WIDENING {
                break;
            }
            shape.scale += 1;
        }
        if mine.len() < DECOYS_PER_ID {
            // Erased ids all around it: how often a column holds its neighbours says nothing
            // of how often it holds it.
            mine.clear();
        }
        let mut mine: Vec<String> = mine.into_iter().collect();
        mine.sort();
        out.per_seed.push(mine.len() as u32);
        out.seed_of
            .extend(std::iter::repeat_n(i as u32, mine.len()));
        out.ids.extend(mine);
    }
    out
}

/// How decoys of integer ids are drawn: every `stride`-th number (the erased ids' common
/// stride: an allocator stepping by 10 gives ids 10 apart, and so would a column of other
/// entities' ids from it), in a neighbourhood widened `scale` times.
#[derive(Debug, Clone, Copy)]
struct Shape {
    stride: i64,
    scale: u32,
}

/// The greatest common divisor of the differences between the integer ids among `erased`
/// (at least 5 of them), when above 1.
fn common_stride(erased: &[String]) -> i64 {
    let ints: Vec<i64> = erased
        .iter()
        .filter_map(|s| s.parse::<i64>().ok().filter(|v| v.to_string() == *s))
        .take(MAX_SEEDS)
        .collect();
    if ints.len() < 5 {
        return 1;
    }
    let first = ints[0];
    let g = ints.iter().fold(0u64, |g, v| gcd(g, v.abs_diff(first)));
    i64::try_from(g).unwrap_or(1).max(1)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A number near `v`, on its stride: within 5% of it or 10 (times 2^scale), not below 0 when
/// `v` is not.
fn near(v: i64, rng: &mut StdRng, shape: Shape) -> i64 {
    let w = (v.unsigned_abs() / 20)
        .max(10)
        .saturating_mul(1 << shape.scale.min(40))
        .min(i64::MAX as u64 / 4) as i64;
    let steps = (w / shape.stride).max(8);
    let lo = if v >= 0 {
        -steps.min(v / shape.stride)
    } else {
        -steps
    };
    v.saturating_add(rng.gen_range(lo..=steps).saturating_mul(shape.stride))
}

/// One id of the same shape as `id`, near it. An email's local part is replaced whole (other
/// letters, other digits): an address names one person, so a column holding one is never a
/// coincidence, whatever addresses are near it.
fn decoy(id: &str, rng: &mut StdRng, shape: Shape) -> String {
    let canonical_int = id.parse::<i64>().ok().filter(|v| v.to_string() == id);
    if let Some(v) = canonical_int {
        return near(v, rng, shape).to_string();
    }
    if id.contains('@') {
        return vary_letters(id, rng);
    }
    if id.bytes().any(|b| b.is_ascii_digit()) {
        return vary_digit_runs(id, rng, Shape { stride: 1, ..shape });
    }
    vary_letters(id, rng)
}

/// `id` with each run of digits replaced by a number near it (zero-padded to its width when it
/// was), the rest kept.
fn vary_digit_runs(id: &str, rng: &mut StdRng, shape: Shape) -> String {
    let mut out = String::with_capacity(id.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String, rng: &mut StdRng| {
        if run.is_empty() {
            return;
        }
        match run.parse::<i64>() {
            Ok(v) if run.len() <= 18 => {
                let n = near(v, rng, shape);
                if run.starts_with('0') && run.len() > 1 {
                    out.push_str(&format!("{n:0width$}", width = run.len()));
                } else {
                    out.push_str(&n.to_string());
                }
            }
            _ => out.extend((0..run.len()).map(|_| char::from(b'0' + rng.gen_range(0..10u8)))),
        }
        run.clear();
    };
    for c in id.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out, rng);
            out.push(c);
        }
    }
    flush(&mut run, &mut out, rng);
    out
}

/// `id` with its letters and digits (before an `@`, the whole id otherwise) replaced by random
/// letters of the same case and random digits.
fn vary_letters(id: &str, rng: &mut StdRng) -> String {
    let end = id.find('@').unwrap_or(id.len());
    let (head, tail) = id.split_at(end);
    let mut out: String = head
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || !c.is_ascii() && c.is_alphabetic() {
                char::from(b'a' + rng.gen_range(0..26u8))
            } else if c.is_ascii_uppercase() {
                char::from(b'A' + rng.gen_range(0..26u8))
            } else if c.is_ascii_digit() {
                char::from(b'0' + rng.gen_range(0..10u8))
            } else {
                c
            }
        })
        .collect();
    out.push_str(tail);
    out
}

/// Whether a column's name says it is a measure, a count or a time rather than a reference.
pub fn measure_name(path: &[String]) -> bool {
    const WORDS: &[&str] = &[
        "count",
        "cnt",
        "num",
        "seq",
        "sequence",
        "duration",
        "ms",
        "millis",
        "seconds",
        "secs",
        "size",
        "bytes",
        "amount",
        "total",
        "qty",
        "quantity",
        "ts",
        "time",
        "timestamp",
        "epoch",
        "version",
        "rank",
        "index",
        "idx",
        "position",
        "offset",
        "port",
        "price",
        "score",
        "age",
        "year",
        "day",
        "hour",
        "minute",
        "length",
        "len",
        "views",
        "clicks",
    ];
    path.last().is_some_and(|leaf| {
        leaf.to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| WORDS.contains(&w))
    })
}

/// The thresholds a finding must pass.
#[derive(Debug, Clone, Copy)]
pub struct Bar {
    pub min_lift: f64,
    pub min_subjects: u64,
}

/// What one column holds of one subject type's erased ids, against chance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Weighed {
    /// Distinct erased subjects the column holds.
    pub subjects: u64,
    /// Distinct erased subjects a column holding decoys as often as this one would hold.
    pub expected: f64,
    /// `subjects / expected`.
    pub lift: f64,
    /// How often chance alone gives `subjects` or more (Poisson with mean `expected`).
    pub chance: f64,
    /// Of the decoys near the erased ids the column holds any of, the share it holds: near 1
    /// for a sequence or a counter.
    pub fill: f64,
    /// The lift this column needs (the bar, raised or lowered by its name and fill).
    pub lift_needed: f64,
    pub verdict: Verdict,
    /// Why a weak match is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Evidence well beyond chance: a spec is proposed.
    Finding,
    /// Hits that chance explains, or too few to tell: listed, never proposed.
    WeakMatch,
}

/// What looking a column up found: distinct erased subjects, the rows holding them, and the
/// rows of the files looked at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub subjects: u64,
    pub rows: u64,
    pub rows_scanned: u64,
    /// Per seed: whether the column holds its erased id.
    pub seeds_held: &'a [bool],
}

/// Share of a column's rows above which erased ids in it are not evidence: a reference to
/// subjects names mostly people who were not erased; a column whose values are nearly all
/// erased ids is a small domain (a month, a rating, a count) inside a block of erased ids.
const MAX_ROW_SHARE: f64 = 0.5;

/// Weighs what a column holds against the decoy hits per seed (`decoy_hits[s]` of
/// `decoys.per_seed[s]`).
pub fn weigh(
    seen: Observed,
    decoys: &Decoys,
    decoy_hits: &[u32],
    id_like: bool,
    measure_like: bool,
    bar: Bar,
) -> Weighed {
    let subjects = seen.subjects;
    let share = seen.rows as f64 / seen.rows_scanned.max(1) as f64;
    let c = chance_of(decoys, decoy_hits, seen.seeds_held);
    let (expected, fill) = (c.expected, c.fill);
    let lift = c.held as f64 / c.expected;
    let mut needed = bar.min_lift;
    if fill >= DENSE_FILL {
        needed *= 4.0;
    }
    if measure_like {
        needed *= 2.0;
    } else if id_like {
        needed /= 2.0;
    }
    let needed = needed.max(2.0_f64.min(bar.min_lift));
    let chance = poisson_tail(c.held, c.expected);
    let reason = if c.known == 0 {
        Some(
            "every erased id it holds lies in a block of erased ids: chance cannot be measured"
                .to_string(),
        )
    } else if share > MAX_ROW_SHARE {
        Some(format!(
            "{:.0}% of the rows looked at hold an erased id: more than a reference to people, \
             most of whom were not erased, holds (a small domain inside a block of erased ids?); \
             look at it by hand",
            share * 100.0
        ))
    } else if subjects < bar.min_subjects {
        Some(format!(
            "{subjects} subject(s), fewer than --min-subjects {}",
            bar.min_subjects
        ))
    } else if lift < needed {
        Some(format!(
            "lift {lift:.1} below the {needed:.1} this column needs{}: chance explains it",
            if fill >= DENSE_FILL {
                " (it holds most ids near the erased ones: a sequence or a counter)"
            } else {
                ""
            }
        ))
    } else if chance >= MAX_CHANCE {
        Some(format!(
            "chance gives as many with probability {chance:.1e}: too few to tell"
        ))
    } else {
        None
    };
    // What chance would give over every erased id, for the report.
    let expected = expected * decoys.erased as f64 / c.known.max(1) as f64;
    Weighed {
        subjects,
        expected: round(expected, 3),
        lift: round(lift, 1),
        chance,
        fill: round(fill, 3),
        lift_needed: round(needed, 1),
        verdict: if reason.is_none() {
            Verdict::Finding
        } else {
            Verdict::WeakMatch
        },
        reason,
    }
}

/// Chance over the seeds whose chance can be measured (those with decoys).
struct Chance {
    /// Seeds with decoys, and those of them whose erased id the column holds.
    known: u64,
    held: u64,
    /// How many of them a column holding decoys as this one does would hold: each seed's
    /// share of its decoys held estimates the chance its erased id is held by coincidence;
    /// one decoy's worth is added, so that no decoy held still leaves chance its due.
    expected: f64,
    /// Of the decoys near the erased ids the column holds any of, the share it holds.
    fill: f64,
}

fn chance_of(decoys: &Decoys, decoy_hits: &[u32], seeds_held: &[bool]) -> Chance {
    let mut c = Chance {
        known: 0,
        held: 0,
        expected: 0.0,
        fill: 0.0,
    };
    let mut fills = Vec::new();
    let mut made: u64 = 0;
    for (s, &n) in decoys.per_seed.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let hit = decoy_hits.get(s).copied().unwrap_or(0);
        made += u64::from(n);
        c.known += 1;
        c.held += u64::from(seeds_held.get(s).copied().unwrap_or(false));
        c.expected += f64::from(hit) / f64::from(n);
        if hit > 0 {
            fills.push(f64::from(hit) / f64::from(n));
        }
    }
    c.expected += c.known as f64 / made.max(1) as f64;
    if !fills.is_empty() {
        c.fill = fills.iter().sum::<f64>() / fills.len() as f64;
    }
    c
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// P(X >= k) for X Poisson with mean `mean`.
pub fn poisson_tail(k: u64, mean: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if mean <= 0.0 {
        return 0.0;
    }
    // ln P(X = k), then the terms above it, each `mean / (i + 1)` times the last.
    let ln_fact: f64 = (2..=k).map(|i| (i as f64).ln()).sum();
    let ln_first = -mean + k as f64 * mean.ln() - ln_fact;
    if (k as f64) > mean {
        let mut term = 1.0;
        let mut sum = 1.0;
        let mut i = k;
        while term > 1e-17 * sum {
            i += 1;
            term *= mean / i as f64;
            sum += term;
        }
        (ln_first + sum.ln()).exp().min(1.0)
    } else {
        // Below the mean: one minus the terms under k.
        let mut term = (-mean).exp();
        let mut below = 0.0;
        for i in 0..k {
            below += term;
            term *= mean / (i + 1) as f64;
        }
        (1.0 - below).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoys_keep_the_shape_and_never_name_an_erased_id() {
        let erased: Vec<String> = ["7", "1234567", "u-0042", "C-000123", "Alice@Example.org"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let d = decoys(&erased);
        assert!(d.per_seed.iter().all(|&n| n >= 16), "{:?}", d.per_seed);
        // Few erased ids: many decoys each where the shape allows (a million numbers near
        // 1234567, any address), as many as there are near a small number.
        assert_eq!(d.per_seed[1], 10_000);
        assert_eq!(d.per_seed[4], 10_000);
        assert!(d.per_seed[0] < 50, "{:?}", d.per_seed);
        for (id, &s) in d.ids.iter().zip(&d.seed_of) {
            assert!(!erased.contains(id), "{id}");
            let seed = &erased[s as usize];
            match seed.as_str() {
                "7" => assert!((0..=47).contains(&id.parse::<i64>().unwrap()), "{id}"),
                "1234567" => {
                    let v: i64 = id.parse().unwrap();
                    assert!((1234567 - 61728..=1234567 + 61728).contains(&v), "{v}");
                }
                "u-0042" => assert!(id.starts_with("u-00") && id.len() == 6, "{id}"),
                "C-000123" => assert!(id.starts_with("C-000") && id.len() == 8, "{id}"),
                _ => assert!(id.ends_with("@Example.org") && id.len() == 17, "{id}"),
            }
        }
        assert_eq!(d.ids, decoys(&erased).ids, "the same decoys on every run");
    }

    #[test]
    fn decoys_keep_a_common_stride() {
        // Ids from an allocator stepping by 10: decoys on the same step.
        let erased: Vec<String> = (0..30).map(|i| (1003 + 10 * i * i).to_string()).collect();
        let d = decoys(&erased);
        assert!(!d.ids.is_empty());
        for id in &d.ids {
            assert_eq!(id.parse::<i64>().unwrap() % 10, 3, "{id}");
        }
        // A block of erased ids: decoys only near its edges, outside it; the ids deep inside
        // have none (their chance cannot be measured).
        let block: Vec<String> = (1..=300).map(|i| i.to_string()).collect();
        let d = decoys(&block);
        assert!(
            d.per_seed.iter().all(|&n| n == 0 || n >= 16),
            "{:?}",
            d.per_seed
        );
        assert!(d.per_seed.iter().filter(|&&n| n == 0).count() > 200);
        assert!(
            d.ids
                .iter()
                .all(|id| id.parse::<i64>().unwrap() > 300 || id == "0")
        );
    }

    #[test]
    fn a_column_holding_decoys_as_often_as_erased_ids_is_a_weak_match() {
        let erased: Vec<String> = (0..40u64)
            .map(|i| (i * 1000 + (i * 37 % 91) + 5).to_string())
            .collect();
        let d = decoys(&erased);
        assert!(d.per_seed.iter().all(|&n| n >= 16), "{:?}", d.per_seed);
        let bar = Bar {
            min_lift: DEFAULT_MIN_LIFT,
            min_subjects: DEFAULT_MIN_SUBJECTS,
        };
        let held = |n: usize| -> Vec<bool> { (0..40).map(|s| s < n).collect() };
        let (all_held, thirty, two) = (held(40), held(30), held(2));
        fn observed(subjects: u64, seeds_held: &[bool]) -> Observed<'_> {
            Observed {
                subjects,
                rows: subjects,
                rows_scanned: 1000,
                seeds_held,
            }
        }
        // A dense sequence: every erased id and every decoy held.
        let all: Vec<u32> = d.per_seed.clone();
        let w = weigh(observed(40, &all_held), &d, &all, true, false, bar);
        assert_eq!(w.verdict, Verdict::WeakMatch, "{w:?}");
        assert!(w.lift < 1.1 && w.fill == 1.0, "{w:?}");
        // A reference: 30 erased ids held, one decoy in all.
        let mut one = vec![0; d.per_seed.len()];
        one[3] = 1;
        let w = weigh(observed(30, &thirty), &d, &one, false, false, bar);
        assert_eq!(w.verdict, Verdict::Finding, "{w:?}");
        assert!(w.lift > 100.0 && w.chance < 1e-30, "{w:?}");
        // Two erased ids held and none of thousands of decoys: beyond chance.
        let w = weigh(observed(2, &two), &d, &[0; 40], false, false, bar);
        assert_eq!(w.verdict, Verdict::Finding, "{w:?}");
        // Two held where a tenth of the decoys are: chance.
        let tenth: Vec<u32> = d.per_seed.iter().map(|n| n / 10).collect();
        let w = weigh(observed(2, &two), &d, &tenth, false, false, bar);
        assert_eq!(w.verdict, Verdict::WeakMatch, "{w:?}");
        // Most rows erased ids: a small domain, whatever the lift.
        let most = Observed {
            rows: 600,
            ..observed(30, &thirty)
        };
        let w = weigh(most, &d, &one, false, false, bar);
        assert_eq!(w.verdict, Verdict::WeakMatch, "{w:?}");
    }

    #[test]
    fn poisson_tails() {
        assert!((poisson_tail(1, 1.0) - (1.0 - (-1f64).exp())).abs() < 1e-12);
        assert!((poisson_tail(3, 0.5) - 0.014_387_677).abs() < 1e-8);
        assert!(poisson_tail(100, 2.0) < 1e-100);
        assert!((poisson_tail(2, 10.0) - (1.0 - 11.0 * (-10f64).exp())).abs() < 1e-12);
    }
}
