//! Appending an upload's bytes to its session file around the page cache
//! (`O_DIRECT`), where the filesystem allows it.
//!
//! Why, and when: filling page-cache pages is most of a buffered write's
//! kernel CPU, and on a virtual machine whose memory the host has not yet
//! backed it is very costly (1.0–2.9 s per GiB here with `dd
//! conv=fsync`, 0.36 s once the guest's memory had been touched once,
//! against 0.2 s with `O_DIRECT`; `bench/results/2026-12-07-direct-io.md`).
//! But the first read of a blob written around the cache (a pull, or the
//! mover copying it to another region) then reads the disk and pays that
//! fill instead (`bench/results/2026-12-07-blob-ab-direct-io.md`). So it
//! is off by default (`uploads.direct_io`): worth it where pushes
//! dominate and blobs are rarely read back soon, or memory is short.
//!
//! `O_DIRECT` wants the buffer's address, the file offset and the length
//! aligned to the device's logical block: the aligned middle of each
//! append goes out from an aligned buffer of our own (one user-space copy,
//! cheap next to the page cache's), and the unaligned head and tail (where
//! an earlier append stopped mid-block, and what is left at the end) are
//! written through the page cache. A block is therefore written either
//! whole by `O_DIRECT` or only through the page cache, never both, so the
//! two paths never hold different versions of one block. Where the
//! filesystem refuses `O_DIRECT` (tmpfs, some FUSE and network mounts) the
//! writer falls back to buffered writes for the rest of the append,
//! rewriting the refused bytes: nothing is lost, only the speed.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::unix::fs::FileExt;

use bytes::Bytes;

/// Alignment of direct writes: the largest logical block in common use
/// (4 KiB-sector disks), a multiple of the 512-byte one.
pub const ALIGN: usize = 4096;
/// Bytes collected before each direct write.
const BUFFER_BYTES: usize = 1 << 20;
/// Buffered writes ask the kernel to start writeback this often, so the
/// acknowledging fsync waits for the last few MiB only.
const WRITEBACK_BYTES: u64 = 8 << 20;

/// One page of the aligned buffer: `Vec<Page>` is aligned memory without
/// a hand-written allocator.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Page([u8; ALIGN]);

/// Appends to one file: direct where it can, buffered where it must.
pub struct Appender {
    /// The session file, open for writing (buffered writes, the fsync).
    file: File,
    /// Whether `file`'s cursor is at `end` (a direct write does not move
    /// it; one cut short may leave the file longer than `end`).
    positioned: bool,
    /// The same file opened with `O_DIRECT`; `None` once refused.
    direct: Option<File>,
    pages: Vec<Page>,
    /// Bytes held in `pages`, to be written at `end`.
    filled: usize,
    /// Where the file's content ends (before `pages`' bytes).
    end: u64,
    /// Buffered bytes since writeback was last started.
    unsynced: u64,
    /// Bytes that went out by `O_DIRECT`.
    direct_bytes: u64,
    /// Tests: direct writes are refused (EINVAL) once this many went out,
    /// as a filesystem that takes the open but not the write does.
    #[cfg(test)]
    refuse_direct_after: u64,
}

impl Appender {
    /// Appends to `file` (open for writing, not necessarily for
    /// appending); `direct` asks for `O_DIRECT` where the filesystem
    /// allows it.
    pub fn new(file: File, direct: bool) -> std::io::Result<Appender> {
        let end = file.metadata()?.len();
        let direct = if direct { open_direct(&file) } else { None };
        let pages = match direct {
            Some(_) => vec![Page([0; ALIGN]); BUFFER_BYTES / ALIGN],
            None => Vec::new(),
        };
        Ok(Appender {
            file,
            positioned: false,
            direct,
            pages,
            filled: 0,
            end,
            unsynced: 0,
            direct_bytes: 0,
            #[cfg(test)]
            refuse_direct_after: u64::MAX,
        })
    }

    /// Append `chunks` (in order).
    pub fn write(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        if self.direct.is_none() {
            return self.write_buffered(chunks);
        }
        for chunk in chunks {
            let mut rest: &[u8] = chunk;
            while !rest.is_empty() {
                if self.direct.is_none() {
                    self.write_buffered(&[chunk.slice_ref(rest)])?;
                    break;
                }
                // The file ends mid-block (an earlier append's tail):
                // buffered up to the next block boundary.
                if self.filled == 0 && !self.end.is_multiple_of(ALIGN as u64) {
                    let to_boundary = ALIGN - (self.end % ALIGN as u64) as usize;
                    let n = to_boundary.min(rest.len());
                    self.write_buffered(&[chunk.slice_ref(&rest[..n])])?;
                    rest = &rest[n..];
                    continue;
                }
                let n = (BUFFER_BYTES - self.filled).min(rest.len());
                as_bytes_mut(&mut self.pages)[self.filled..self.filled + n]
                    .copy_from_slice(&rest[..n]);
                self.filled += n;
                rest = &rest[n..];
                if self.filled == BUFFER_BYTES {
                    self.flush_aligned()?;
                }
            }
        }
        Ok(())
    }

    /// Write what is held (whole blocks direct, the tail buffered) and
    /// give the file back for the fsync, with the bytes that went direct.
    pub fn finish(mut self) -> std::io::Result<(File, u64)> {
        self.flush_aligned()?;
        self.flush_buffered()?;
        Ok((self.file, self.direct_bytes))
    }

    /// Write the whole blocks held with `O_DIRECT`; keep the remainder at
    /// the front of the buffer.
    fn flush_aligned(&mut self) -> std::io::Result<()> {
        let whole = self.filled / ALIGN * ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let result = match &self.direct {
            #[cfg(test)]
            Some(_) if self.direct_bytes >= self.refuse_direct_after => {
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            }
            Some(direct) => write_all_at(direct, &as_bytes(&self.pages)[..whole], self.end),
            None => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        };
        match result {
            Ok(()) => {
                self.direct_bytes += whole as u64;
                self.end += whole as u64;
                self.positioned = false;
                self.filled -= whole;
                let filled = self.filled;
                as_bytes_mut(&mut self.pages).copy_within(whole..whole + filled, 0);
                Ok(())
            }
            // Refused (by the filesystem, or wanting a larger alignment
            // than ours): the same bytes through the page cache, at the
            // same offset, and so for the rest of this append.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(error = %e, "O_DIRECT refused; writing through the page cache");
                self.direct = None;
                self.flush_buffered()
            }
            Err(e) => Err(e),
        }
    }

    /// Everything held, through the page cache.
    fn flush_buffered(&mut self) -> std::io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let held = Bytes::copy_from_slice(&as_bytes(&self.pages)[..self.filled]);
        self.filled = 0;
        self.write_buffered(&[held])
    }

    /// Write at `end` through the page cache, starting writeback behind.
    fn write_buffered(&mut self, chunks: &[Bytes]) -> std::io::Result<()> {
        use std::io::Seek;
        if !self.positioned {
            self.file.seek(std::io::SeekFrom::Start(self.end))?;
            self.positioned = true;
        }
        write_all_vectored(&mut self.file, chunks)?;
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        self.end += len;
        self.unsynced += len;
        if self.unsynced >= WRITEBACK_BYTES {
            start_writeback(&self.file, self.end - self.unsynced, self.unsynced);
            self.unsynced = 0;
        }
        Ok(())
    }
}

fn as_bytes(pages: &[Page]) -> &[u8] {
    // SAFETY: `Page` is `repr(C)` over a byte array, without padding: the
    // pages are `len * ALIGN` initialised, contiguous bytes.
    unsafe { std::slice::from_raw_parts(pages.as_ptr().cast::<u8>(), pages.len() * ALIGN) }
}

fn as_bytes_mut(pages: &mut [Page]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(pages.as_mut_ptr().cast::<u8>(), pages.len() * ALIGN) }
}

/// The file open once more, with `O_DIRECT`, through `/proc/self/fd` (the
/// session file's path is not needed, and a renamed file is still this
/// one). `None` where the filesystem refuses it.
fn open_direct(file: &File) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::debug!(error = %e, "no O_DIRECT here; uploads go through the page cache");
            None
        }
    }
}

fn write_all_at(file: &File, mut buf: &[u8], mut at: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, at) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_all_vectored(file: &mut File, bufs: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ask the kernel to start writing `len` bytes at `offset` to the disk
/// without waiting. Only a hint: the fsync after the upload is what makes
/// them durable, so a failure here changes nothing but speed.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor this thread owns.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Whether `dir`'s filesystem takes `O_DIRECT` opens.
    fn takes_direct(dir: &std::path::Path) -> bool {
        let probe = std::fs::File::create(dir.join("probe")).unwrap();
        open_direct(&probe).is_some()
    }

    /// Appends of random sizes, several per "request" and several
    /// requests (each a new `Appender`, as each PATCH is), so heads and
    /// tails land at every offset within a block.
    fn append_randomly(path: &std::path::Path, direct: bool, seed: u64) -> (Vec<u8>, u64) {
        append_refusing(path, direct, seed, u64::MAX)
    }

    fn append_refusing(
        path: &std::path::Path,
        direct: bool,
        seed: u64,
        refuse_after: u64,
    ) -> (Vec<u8>, u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut expected = Vec::new();
        let mut direct_bytes = 0;
        std::fs::File::create(path).unwrap();
        for _ in 0..6 {
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            let mut out = Appender::new(file, direct).unwrap();
            out.refuse_direct_after = refuse_after.saturating_sub(direct_bytes);
            for _ in 0..rng.gen_range(1..5) {
                let chunks: Vec<Bytes> = (0..rng.gen_range(1..6))
                    .map(|_| {
                        let len = match rng.gen_range(0..4) {
                            0 => rng.gen_range(0..ALIGN),
                            1 => ALIGN,
                            2 => rng.gen_range(ALIGN..3 * BUFFER_BYTES / 2),
                            _ => rng.gen_range(1..100),
                        };
                        let mut b = vec![0u8; len];
                        rng.fill(&mut b[..]);
                        Bytes::from(b)
                    })
                    .collect();
                for c in &chunks {
                    expected.extend_from_slice(c);
                }
                out.write(&chunks).unwrap();
            }
            let (file, d) = out.finish().unwrap();
            file.sync_all().unwrap();
            direct_bytes += d;
            assert_eq!(file.metadata().unwrap().len(), expected.len() as u64);
        }
        (expected, direct_bytes)
    }

    #[test]
    fn appended_bytes_read_back_exactly_whatever_the_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let direct_here = takes_direct(dir.path());
        for seed in 0..8 {
            let path = dir.path().join(format!("data-{seed}"));
            let (expected, direct_bytes) = append_randomly(&path, true, seed);
            assert!(std::fs::read(&path).unwrap() == expected, "seed {seed}");
            // Where the filesystem takes O_DIRECT, the bulk goes that way.
            if direct_here {
                assert!(
                    direct_bytes > expected.len() as u64 / 2,
                    "seed {seed}: {direct_bytes} of {} direct",
                    expected.len()
                );
            } else {
                assert_eq!(direct_bytes, 0);
            }
        }
    }

    #[test]
    fn a_direct_write_refused_midway_is_written_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        if !takes_direct(dir.path()) {
            return;
        }
        for seed in 0..4 {
            let path = dir.path().join(format!("data-{seed}"));
            let refuse_after = 3 * BUFFER_BYTES as u64 / 2 + seed * ALIGN as u64;
            let (expected, direct_bytes) = append_refusing(&path, true, seed, refuse_after);
            assert!(std::fs::read(&path).unwrap() == expected, "seed {seed}");
            assert!(direct_bytes > 0 && direct_bytes < expected.len() as u64);
        }
    }

    #[test]
    fn buffered_when_asked_and_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let (expected, direct_bytes) = append_randomly(&path, false, 42);
        assert_eq!(direct_bytes, 0);
        assert!(std::fs::read(&path).unwrap() == expected);
    }

    #[test]
    fn a_filesystem_without_direct_io_still_gets_every_byte() {
        // tmpfs refused O_DIRECT before Linux 6.6; either way the bytes
        // must arrive.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let path = dir.path().join("data");
        let (expected, _) = append_randomly(&path, true, 7);
        assert!(std::fs::read(&path).unwrap() == expected);
    }
}
