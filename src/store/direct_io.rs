//! Direct I/O for new files on local disk: a rewritten file (or a part of one) written from a
//! buffer aligned to [`DIRECT_IO_ALIGN`] skips the page cache (`O_DIRECT`), where the file system
//! allows it; the data goes to disk at the flush anyway, and the page-cache copy was the
//! costliest kernel function of a purge. Elsewhere, and for a last partial block, files are
//! written the ordinary way.

use bytes::Bytes;
use object_store::PutPayload;

/// Buffers that start at a multiple of this (a rewritten file) are written to local disk
/// directly (`O_DIRECT`), bypassing the page cache, except for their last partial block.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// An empty buffer with room for `capacity` bytes after `pad` zero bytes, so that what is
/// appended starts at a [`DIRECT_IO_ALIGN`] boundary (as long as the buffer does not grow past
/// its capacity). Returns the buffer and `pad`.
pub fn aligned_buffer(capacity: usize) -> (Vec<u8>, usize) {
    let mut buf: Vec<u8> = Vec::with_capacity(capacity.saturating_add(DIRECT_IO_ALIGN));
    let pad = buf
        .as_ptr()
        .align_offset(DIRECT_IO_ALIGN)
        .min(DIRECT_IO_ALIGN);
    buf.resize(pad, 0);
    (buf, pad)
}

/// Writes `payload` to a new file at `path` and flushes it to disk. A payload of one aligned
/// buffer (see [`DIRECT_IO_ALIGN`]) is written with direct I/O where the file system allows it:
/// the page cache is skipped (the data goes to disk at the flush anyway), which on the machine
/// of `benches/` saved up to half a second of kernel time a run. Where direct I/O is refused,
/// the file is written the ordinary way.
pub(super) fn write_synced(path: &std::path::Path, payload: &PutPayload) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    let chunks: Vec<&Bytes> = payload.iter().collect();
    let direct = if direct_head(&chunks, 0) > 0 {
        open_direct(path)
    } else {
        None
    };
    write_at(&f, direct.as_ref(), &chunks, 0)?;
    f.sync_all()
}

/// How many leading bytes of `chunks`, written at offset `at`, can go by direct I/O: the whole
/// blocks of a single aligned buffer at an aligned offset.
fn direct_head(chunks: &[&Bytes], at: u64) -> usize {
    match chunks {
        [one]
            if one.as_ptr().align_offset(DIRECT_IO_ALIGN) == 0
                && at.is_multiple_of(DIRECT_IO_ALIGN as u64) =>
        {
            one.len() / DIRECT_IO_ALIGN * DIRECT_IO_ALIGN
        }
        _ => 0,
    }
}

/// Writes `chunks` at offset `at` of `file`: the [`direct_head`] through `direct` (the same file
/// opened for direct I/O) when there is one, the rest, or everything when direct I/O refuses the
/// write, through `file`.
pub(super) fn write_at(
    file: &std::fs::File,
    direct: Option<&std::fs::File>,
    chunks: &[&Bytes],
    at: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let head = direct_head(chunks, at);
    let mut skip = match (direct, chunks) {
        // Refused (the file system's alignment rules): the ordinary handle writes it all.
        (Some(d), [one]) if head > 0 && d.write_all_at(&one[..head], at).is_ok() => head,
        _ => 0,
    };
    let mut at = at;
    for chunk in chunks {
        let start = skip.min(chunk.len());
        file.write_all_at(&chunk[start..], at + start as u64)?;
        at += chunk.len() as u64;
        skip -= start;
    }
    Ok(())
}

/// `path` opened for writing with direct I/O (`O_DIRECT`), if the file system allows it.
pub(super) fn open_direct(path: &std::path::Path) -> Option<std::fs::File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_written_directly_or_not_hold_exactly_the_payload() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * DIRECT_IO_ALIGN + 100)
            .map(|i| (i % 251) as u8)
            .collect();
        // An aligned buffer (the direct path where the file system allows it), the same
        // shorter than a block, an unaligned one, and several chunks.
        let mut room = vec![0u8; data.len() + 2 * DIRECT_IO_ALIGN];
        let pad = room.as_ptr().align_offset(DIRECT_IO_ALIGN);
        room[pad..pad + data.len()].copy_from_slice(&data);
        let aligned = Bytes::from(room).slice(pad..pad + data.len());
        assert_eq!(aligned.as_ptr().align_offset(DIRECT_IO_ALIGN), 0);
        let cases: Vec<(&str, PutPayload, Vec<u8>)> = vec![
            ("aligned", PutPayload::from(aligned.clone()), data.clone()),
            (
                "short",
                PutPayload::from(aligned.slice(..100)),
                data[..100].to_vec(),
            ),
            (
                "unaligned",
                PutPayload::from(aligned.slice(1..)),
                data[1..].to_vec(),
            ),
            (
                "chunks",
                PutPayload::from_iter([
                    aligned.slice(..DIRECT_IO_ALIGN),
                    aligned.slice(DIRECT_IO_ALIGN..),
                ]),
                data.clone(),
            ),
        ];
        for (name, payload, expected) in cases {
            let path = dir.path().join(name);
            write_synced(&path, &payload).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), expected, "{name}");
        }
    }
}
