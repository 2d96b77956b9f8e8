//! `--shard I/N`: which of a run's files a worker plans and purges. Ownership is decided
//! from the listing (table name and path), before any read, so a shard reads only its files.

/// `--shard I/N`: a stable subset of the run's files. A file belongs to shard
/// `hash(table name, path) mod N`, the same on every attempt and every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with `0 <= I < N`.
    pub fn parse(s: &str) -> std::result::Result<Shard, String> {
        let parsed = s.split_once('/').and_then(|(i, n)| {
            Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?))
        });
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => Err(format!(
                "--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/3"
            )),
        }
    }

    /// Whether the file `path` of `table` belongs to this shard.
    pub fn owns(&self, table: &str, path: &str) -> bool {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(table.as_bytes());
        h.update([0]);
        h.update(path.as_bytes());
        let d = h.finalize();
        let v = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        v % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
