//! The memory budget of the files in flight (`--memory-limit`).

use crate::commit;
use crate::error::{Error, Result};
use crate::plan::FilePlan;

/// The default memory limit: half of a 4 GB worker.
pub const DEFAULT_MEMORY_LIMIT: u64 = 2 << 30;

/// The memory the files in flight may hold: `--memory-limit` less what the process holds when
/// the rewrites start (resident memory: the program, the plan, memory the allocator kept).
/// Each file reserves what purging it will hold before it is read, and waits while the budget
/// is spent; a file needing more than the whole budget waits for all of it and runs alone.
/// The event dataset (spilled to disk) and the plan's key tables (freed before the rewrites)
/// come before it.
pub(super) struct Budget {
    pub(super) limit: u64,
    /// Resident memory when the budget was set.
    pub(super) held: u64,
    /// Permits are KiB.
    permits: tokio::sync::Semaphore,
    pub(super) reserved: std::sync::atomic::AtomicU64,
    pub(super) peak: std::sync::atomic::AtomicU64,
}

/// A file's share of the budget, given back on drop.
pub(super) struct Reservation<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget
            .reserved
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Budget {
    /// A budget of `limit` less `held`, the process's resident memory.
    pub(super) fn new(limit: u64, held: u64) -> Budget {
        let kib = (limit.saturating_sub(held) / 1024).clamp(1, u64::from(u32::MAX)) as usize;
        Budget {
            limit: kib as u64 * 1024,
            held,
            permits: tokio::sync::Semaphore::new(kib),
            reserved: Default::default(),
            peak: Default::default(),
        }
    }

    /// What purging a file holds: the original and its rewritten copy, plus decompressed
    /// pages. A large file is read by ranges, a row group at a time (that row group and its
    /// decompressed pages), and goes up in parts (a few parts).
    pub(super) fn need(fp: &FilePlan, large_file: u64) -> u64 {
        if fp.size >= large_file {
            2 * fp.largest_row_group.min(fp.size) + 4 * commit::PART_SIZE as u64
        } else {
            3 * fp.size
        }
    }

    pub(super) async fn reserve(&self, bytes: u64, file: &str) -> Result<Reservation<'_>> {
        use std::sync::atomic::Ordering::SeqCst;
        if bytes > self.limit {
            tracing::warn!(
                file,
                need = bytes,
                limit = self.limit,
                "file needs more than the memory limit: purged alone"
            );
        }
        let bytes = bytes.min(self.limit);
        let kib = bytes.div_ceil(1024).max(1) as u32;
        let permit = self
            .permits
            .acquire_many(kib)
            .await
            .map_err(|e| Error::Internal(format!("memory budget: {e}")))?;
        let now = self.reserved.fetch_add(bytes, SeqCst) + bytes;
        self.peak.fetch_max(now, SeqCst);
        Ok(Reservation {
            _permit: permit,
            budget: self,
            bytes,
        })
    }
}

/// The resident memory of this process in bytes (Linux: `/proc/self/statm`).
pub(super) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
