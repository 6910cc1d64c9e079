//! Block checksums of a stored copy: the CRC32C of every block, kept with
//! the file itself in an extended attribute, so that a read can check each
//! block it sends for a fraction of what SHA-256 of the same bytes costs
//! (CRC32C runs at memory speed with SSE4.2; SHA-256 at about 1 GiB/s
//! even with SHA-NI, which made verified reads the largest CPU cost of a
//! blob GET). The SHA-256 digest stays the authority: the scrub hashes
//! every copy, and a block that fails its CRC is confirmed by a full hash
//! before the copy is condemned, so stale or damaged sums can cost a read
//! but never a good copy.
//!
//! Kept in the file's own attribute rather than a file beside it: it is
//! renamed, quarantined and deleted with the copy, atomically, and needs no
//! bookkeeping of its own. Where the filesystem refuses attributes (or one
//! this large), a copy simply has no sums and reads fall back to SHA-256.

/// The attribute holding a copy's sums.
const XATTR_NAME: &[u8] = b"user.wharf.sums\0";
/// The encoding's version: the first byte of the attribute. A reader that
/// does not know the version ignores the sums (and SHA-256 verifies).
const FORMAT_V1: u8 = 1;
/// Header: version, block shift, the copy's size (u64 LE).
const HEADER_BYTES: usize = 10;
/// Blocks are at least 1 MiB (the read unit), larger for large blobs so
/// that the attribute stays small enough for any filesystem's limit
/// (ext4 keeps about 4 KiB of attributes per inode): at most this many.
pub const MAX_BLOCKS: usize = 512;
pub const MIN_BLOCK_SHIFT: u8 = 20;
const MAX_BLOCK_SHIFT: u8 = 50;

/// The CRC32C of every block of one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSums {
    shift: u8,
    size: u64,
    crcs: Vec<u32>,
}

fn blocks_of(size: u64, shift: u8) -> usize {
    size.div_ceil(1u64 << shift) as usize
}

impl BlockSums {
    /// Sums as given (tests of readers with blocks of another size).
    #[cfg(test)]
    pub(crate) fn from_parts(shift: u8, size: u64, crcs: Vec<u32>) -> BlockSums {
        BlockSums { shift, size, crcs }
    }

    pub fn block_size(&self) -> u64 {
        1 << self.shift
    }

    /// The size of the copy the sums were computed over.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The CRC32C of block `i`.
    pub fn crc(&self, i: usize) -> Option<u32> {
        self.crcs.get(i).copied()
    }

    /// The sums of `data` in one pass (a blob already in memory).
    pub fn of(data: &[u8]) -> BlockSums {
        let mut b = SumsBuilder::default();
        b.update(data);
        b.finish()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + 4 * self.crcs.len());
        out.push(FORMAT_V1);
        out.push(self.shift);
        out.extend_from_slice(&self.size.to_le_bytes());
        for c in &self.crcs {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// The sums in `bytes`, if they are sums of a copy of `size` bytes in
    /// a version this build reads; None otherwise (the read verifies with
    /// SHA-256 instead).
    pub fn decode(bytes: &[u8], size: u64) -> Option<BlockSums> {
        let (&version, rest) = bytes.split_first()?;
        if version != FORMAT_V1 || rest.len() < HEADER_BYTES - 1 {
            return None;
        }
        let shift = rest[0];
        let stored_size = u64::from_le_bytes(rest[1..9].try_into().ok()?);
        let body = &rest[9..];
        if !(MIN_BLOCK_SHIFT..=MAX_BLOCK_SHIFT).contains(&shift)
            || stored_size != size
            || body.len() != 4 * blocks_of(size, shift)
        {
            return None;
        }
        let crcs = body
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Some(BlockSums { shift, size, crcs })
    }

    /// The sums kept with `file` (of `size` bytes), if any.
    pub(crate) fn load(file: &std::fs::File, size: u64) -> Option<BlockSums> {
        let mut buf = vec![0u8; HEADER_BYTES + 4 * MAX_BLOCKS];
        let n = xattr::get(file, XATTR_NAME, &mut buf)?;
        BlockSums::decode(&buf[..n], size)
    }

    /// Keep the sums with `file`. Fails where the filesystem has no user
    /// attributes; callers go on without (reads then hash).
    pub(crate) fn store(&self, file: &std::fs::File) -> std::io::Result<()> {
        xattr::set(file, XATTR_NAME, &self.encode())
    }
}

/// Sums computed as bytes go by (an upload, a copy being hashed).
#[derive(Debug, Clone, Default)]
pub struct SumsBuilder {
    /// CRCs of the 1 MiB blocks completed so far.
    crcs: Vec<u32>,
    current: u32,
    filled: u64,
    total: u64,
}

impl SumsBuilder {
    pub fn update(&mut self, mut data: &[u8]) {
        let block = 1u64 << MIN_BLOCK_SHIFT;
        self.total += data.len() as u64;
        while !data.is_empty() {
            let take = ((block - self.filled) as usize).min(data.len());
            self.current = crc32c::crc32c_append(self.current, &data[..take]);
            self.filled += take as u64;
            if self.filled == block {
                self.crcs.push(self.current);
                self.current = 0;
                self.filled = 0;
            }
            data = &data[take..];
        }
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The sums, in blocks as large as it takes to have at most
    /// [`MAX_BLOCKS`] (neighbouring CRCs combine without the bytes).
    pub fn finish(mut self) -> BlockSums {
        if self.filled > 0 {
            self.crcs.push(self.current);
        }
        let size = self.total;
        let mut shift = MIN_BLOCK_SHIFT;
        let mut crcs = self.crcs;
        while crcs.len() > MAX_BLOCKS {
            let block = 1u64 << shift;
            crcs = crcs
                .chunks(2)
                .enumerate()
                .map(|(pair, c)| match c {
                    [a, b] => {
                        // The second block of the pair may be the short last one.
                        let start = (2 * pair as u64 + 1) * block;
                        let len = block.min(size - start);
                        crc32c::crc32c_combine(*a, *b, len as usize)
                    }
                    [a] => *a,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            shift += 1;
        }
        BlockSums { shift, size, crcs }
    }
}

/// Extended attributes through the file descriptor (Linux); elsewhere a
/// copy never has sums.
#[cfg(target_os = "linux")]
mod xattr {
    use std::os::fd::AsRawFd;

    pub fn get(file: &std::fs::File, name: &[u8], buf: &mut [u8]) -> Option<usize> {
        // SAFETY: `name` is NUL-terminated; `buf` is valid for its length.
        let n = unsafe {
            libc::fgetxattr(
                file.as_raw_fd(),
                name.as_ptr().cast(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        usize::try_from(n).ok()
    }

    pub fn set(file: &std::fs::File, name: &[u8], value: &[u8]) -> std::io::Result<()> {
        // SAFETY: `name` is NUL-terminated; `value` is valid for its length.
        let rc = unsafe {
            libc::fsetxattr(
                file.as_raw_fd(),
                name.as_ptr().cast(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod xattr {
    pub fn get(_: &std::fs::File, _: &[u8], _: &mut [u8]) -> Option<usize> {
        None
    }

    pub fn set(_: &std::fs::File, _: &[u8], _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    #[test]
    fn blocks_are_one_mib_until_there_would_be_too_many() {
        let data = bytes(3 * (1 << 20) + 5);
        let s = BlockSums::of(&data);
        assert_eq!(s.block_size(), 1 << 20);
        assert_eq!(s.crc(3), Some(crc32c::crc32c(&data[3 << 20..])));
        assert_eq!(s.crc(4), None);

        // 600 MiB + 1 byte: 601 blocks of 1 MiB combine into 301 of 2 MiB,
        // each the CRC of its bytes as if computed directly.
        let mib = bytes(1 << 20);
        let mut b = SumsBuilder::default();
        for _ in 0..600 {
            b.update(&mib);
        }
        b.update(b"x");
        let s = b.finish();
        assert_eq!(s.block_size(), 2 << 20);
        assert_eq!(s.crcs.len(), 301);
        let two = [mib.as_slice(), mib.as_slice()].concat();
        assert_eq!(s.crc(0), Some(crc32c::crc32c(&two)));
        assert_eq!(s.crc(299), Some(crc32c::crc32c(&two)));
        assert_eq!(s.crc(300), Some(crc32c::crc32c(b"x")));
    }

    #[test]
    fn updates_in_any_pieces_give_the_same_sums() {
        let data = bytes(5 * (1 << 20) / 2);
        let mut b = SumsBuilder::default();
        for piece in data.chunks(65_537) {
            b.update(piece);
        }
        assert_eq!(b.len(), data.len() as u64);
        assert_eq!(b.finish(), BlockSums::of(&data));
        assert_eq!(BlockSums::of(&[]).crcs.len(), 0);
    }

    #[test]
    fn the_encoding_round_trips_and_rejects_what_it_does_not_describe() {
        let data = bytes((1 << 20) + 10);
        let s = BlockSums::of(&data);
        let enc = s.encode();
        assert_eq!(BlockSums::decode(&enc, data.len() as u64), Some(s.clone()));
        // Another size (the file changed), a truncated or unknown encoding.
        assert_eq!(BlockSums::decode(&enc, data.len() as u64 + 1), None);
        assert_eq!(
            BlockSums::decode(&enc[..enc.len() - 1], data.len() as u64),
            None
        );
        let mut v2 = enc.clone();
        v2[0] = 2;
        assert_eq!(BlockSums::decode(&v2, data.len() as u64), None);
        assert_eq!(BlockSums::decode(&[], 0), None);
    }

    #[test]
    fn a_version_1_attribute_as_written_by_this_release_still_decodes() {
        // Stored format: version 1, shift 20, size 3 (LE u64), one CRC LE.
        let crc = crc32c::crc32c(b"abc").to_le_bytes();
        let mut stored = vec![1u8, 20, 3, 0, 0, 0, 0, 0, 0, 0];
        stored.extend_from_slice(&crc);
        let s = BlockSums::decode(&stored, 3).expect("decodes");
        assert_eq!(s, BlockSums::of(b"abc"));
    }

    #[test]
    fn sums_survive_on_the_file_where_the_filesystem_keeps_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data = bytes(2 << 20);
        std::fs::write(&path, &data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let s = BlockSums::of(&data);
        if s.store(&f).is_err() {
            eprintln!("this filesystem keeps no user attributes; nothing to check");
            return;
        }
        let reopened = std::fs::File::open(&path).unwrap();
        assert_eq!(BlockSums::load(&reopened, data.len() as u64), Some(s));
        // Renamed with the file.
        let moved = dir.path().join("moved");
        std::fs::rename(&path, &moved).unwrap();
        let f = std::fs::File::open(&moved).unwrap();
        assert!(BlockSums::load(&f, data.len() as u64).is_some());
    }
}
