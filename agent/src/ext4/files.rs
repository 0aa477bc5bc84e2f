//! Reading one file from an ext2/3/4 filesystem without mounting it.
//!
//! [`read_file`] resolves a path from the root directory, following
//! symbolic links in any component as the kernel does (at most
//! [`MAX_SYMLINKS`] of them), and reads a regular file's data from its
//! extent tree, block map or inline data. [`os_release`] uses it to name the
//! operating system on a partition.
//!
//! It starts from the superblock and group descriptors that [`super::probe`]
//! validates, so it refuses the same filesystems. Everything after them is
//! untrusted too: inode numbers, extent and block map entries, directory
//! entries and symlink targets are bounded before use, the walks are bounded
//! by the bytes asked for, and with metadata_csum the checksums of inodes,
//! extent blocks and directory leaf blocks are verified.
//!
//! What it does not do: use the htree index (a lookup scans every block of
//! the directory, which an htree directory allows), read encrypted files or
//! directories, or follow data stored in an EA inode; those are errors.

use super::{crc32c, read, Checksum, Ext4Error, Fields, GroupDesc, Superblock};
use crate::source::ReadAt;

/// The kernel follows 40; [`read_file`] promises 16, plenty for any OS tree.
const MAX_SYMLINKS: u32 = 16;
/// PATH_MAX, which counts the terminating NUL.
const SYMLINK_MAX: u64 = 4095;
/// A lookup scans at most this much directory, and resolving one path
/// (where symlinks may add thousands of `..`) at most `LOOKUP_MAX`.
const DIR_MAX: u64 = 64 << 20;
const LOOKUP_MAX: u64 = 256 << 20;
/// Directories are read this much at a time: a multiple of every block size.
const DIR_CHUNK: usize = 64 << 10;
const OS_RELEASE_MAX: usize = 64 << 10;

const ROOT_INO: u32 = 2;
const GOOD_OLD_INODE_SIZE: usize = 128;
const I_BLOCK_AT: usize = 0x28;
const I_BLOCK_LEN: usize = 60;

const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
const S_IFDIR: u16 = 0x4000;
const S_IFLNK: u16 = 0xA000;

const FL_ENCRYPT: u32 = 0x800;
const FL_EXTENTS: u32 = 0x8_0000;
const FL_INLINE_DATA: u32 = 0x1000_0000;
const BG_INODE_UNINIT: u16 = 0x1;

const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENT_MAX_DEPTH: u16 = 5;
/// An extent longer than this is uninitialised: allocated, reads as zeros.
const EXTENT_INIT_MAX: u16 = 32768;
/// One past the largest logical block an extent can map.
const EXTENT_LOGICAL_END: u64 = 1 << 32;
const XATTR_MAGIC: u32 = 0xEA02_0000;
const XATTR_INDEX_SYSTEM: u8 = 7;
/// `det_reserved_ft` of the dirent that holds a leaf block's checksum.
const DIR_TAIL_FT: u8 = 0xDE;
const DIR_TAIL_LEN: usize = 12;

/// Reads the regular file at `path` (absolute; a relative path starts at the
/// root too) from the ext2/3/4 filesystem at the start of `src`, which is
/// `len` bytes long, following symbolic links in every component (relative
/// and absolute, at most 16). Returns the first `max` bytes of the file, or
/// all of it if shorter (`max` bounds the allocation, whatever size the
/// inode claims). `Ok(None)` if there is no ext filesystem, the path
/// does not exist, or it names something other than a regular file.
pub fn read_file(src: &dyn ReadAt, len: u64, path: &str, max: usize) -> Result<Option<Vec<u8>>, Ext4Error> {
    match Fs::open(src, len)? {
        Some(fs) => fs.read_file(path, max),
        None => Ok(None),
    }
}

/// The operating system on the filesystem, from `/etc/os-release` or else
/// `/usr/lib/os-release`: `PRETTY_NAME`, or `NAME VERSION_ID`, or `ID`, as
/// printable text of at most 200 characters. `None` if there is no
/// os-release or the filesystem cannot be read.
pub fn os_release(src: &dyn ReadAt, len: u64) -> Option<String> {
    let fs = match Fs::open(src, len) {
        Ok(fs) => fs?,
        Err(e) => {
            tracing::debug!("no os-release: {e}");
            return None;
        }
    };
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        match fs.read_file(path, OS_RELEASE_MAX) {
            Ok(Some(text)) => return crate::os_release::os_name(&text),
            Ok(None) => {}
            Err(e) => tracing::debug!("{path}: {e}"),
        }
    }
    None
}

/// An opened filesystem: the validated superblock and descriptors.
struct Fs<'a> {
    src: &'a dyn ReadAt,
    sb: Superblock,
    descs: Vec<GroupDesc>,
}

/// What an inode is, from its mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// The fields of one inode this module uses.
struct Inode {
    ino: u32,
    kind: Kind,
    flags: u32,
    size: u64,
    block: [u8; I_BLOCK_LEN],
    /// The in-inode extended attribute area, after `i_extra_isize`.
    xattrs: Vec<u8>,
    /// The metadata_csum seed of this inode's extent and directory blocks.
    seed: Option<u32>,
}

impl Inode {
    fn damaged(&self, what: &'static str) -> Ext4Error {
        Ext4Error::Inode { ino: self.ino, what }
    }
}

/// Where a read lands: `buf` receives the file's bytes from `offset`, which
/// lie in logical blocks `first..end`.
struct Target<'b> {
    buf: &'b mut [u8],
    offset: u64,
    first: u64,
    end: u64,
}

impl Target<'_> {
    fn wants(&self, start: u64, end: u64) -> bool {
        start < self.end && end > self.first
    }
}

impl<'a> Fs<'a> {
    fn open(src: &'a dyn ReadAt, len: u64) -> Result<Option<Self>, Ext4Error> {
        Ok(super::open(src, len)?.map(|(sb, descs)| Fs { src, sb, descs }))
    }

    fn read_file(&self, path: &str, max: usize) -> Result<Option<Vec<u8>>, Ext4Error> {
        let Some(inode) = self.resolve(path)? else {
            return Ok(None);
        };
        if inode.kind != Kind::File {
            return Ok(None);
        }
        let len = usize::try_from(inode.size).unwrap_or(usize::MAX).min(max);
        let mut buf = vec![0; len];
        self.read_data(&inode, 0, &mut buf)?;
        Ok(Some(buf))
    }

    /// The inode `path` leads to, or `None` if a component does not exist
    /// or one before the last is not a directory.
    fn resolve(&self, path: &str) -> Result<Option<Inode>, Ext4Error> {
        // Pending components, last first. An empty component (a leading,
        // doubled or trailing slash) is ".", which demands a directory.
        let mut pending: Vec<Vec<u8>> = components(path.as_bytes()).rev().collect();
        let mut at = self.inode(ROOT_INO)?;
        if at.kind != Kind::Dir {
            return Err(at.damaged("root is not a directory"));
        }
        let (mut hops, mut budget) = (0, LOOKUP_MAX);
        while let Some(name) = pending.pop() {
            if at.kind != Kind::Dir {
                return Ok(None);
            }
            if name == b"." {
                continue;
            }
            let Some(ino) = self.lookup(&at, &name, &mut budget)? else {
                return Ok(None);
            };
            let child = self.inode(ino)?;
            if child.kind != Kind::Symlink {
                at = child;
                continue;
            }
            hops += 1;
            if hops > MAX_SYMLINKS {
                return Err(Ext4Error::SymlinkLoop(MAX_SYMLINKS));
            }
            let target = self.symlink_target(&child)?;
            match target.first() {
                None => return Ok(None),
                Some(b'/') => at = self.inode(ROOT_INO)?,
                // Relative to the directory holding the link: `at` still.
                Some(_) => {}
            }
            pending.extend(components(&target).rev());
        }
        Ok(Some(at))
    }

    fn inode(&self, ino: u32) -> Result<Inode, Ext4Error> {
        let damaged = |what| Ext4Error::Inode { ino, what };
        let index = ino.checked_sub(1).ok_or(damaged("inode number 0"))?;
        let desc = self
            .descs
            .get((index / self.sb.inodes_per_group) as usize)
            .ok_or(damaged("inode number past the last group"))?;
        if desc.flags & BG_INODE_UNINIT != 0 && self.sb.checksum != Checksum::None {
            return Err(damaged("inode in an uninitialised group"));
        }
        // Inside the inode table, which GroupDesc::parse placed inside the
        // filesystem: no overflow.
        let offset =
            self.sb.bytes(desc.inode_table) + u64::from(index % self.sb.inodes_per_group) * self.sb.inode_size as u64;
        let mut raw = vec![0; self.sb.inode_size];
        read(self.src, &mut raw, offset)?;
        let f = Fields::new(&raw, "inode");
        let mode = f.u16(0x00)?;
        if mode == 0 || f.u16(0x1A)? == 0 {
            return Err(damaged("directory entry names a free inode"));
        }
        let extra_end = if raw.len() > GOOD_OLD_INODE_SIZE {
            let extra = usize::from(f.u16(0x80)?);
            let end = GOOD_OLD_INODE_SIZE + extra;
            if end > raw.len() || extra % 4 != 0 {
                return Err(damaged("extra inode size out of range"));
            }
            end
        } else {
            GOOD_OLD_INODE_SIZE
        };
        let seed = match self.sb.checksum {
            Checksum::Crc32c(fs_seed) => {
                let generation = f.u32(0x64)?;
                let seed = crc32c(crc32c(fs_seed, &ino.to_le_bytes()), &generation.to_le_bytes());
                verify_inode(ino, seed, &raw, extra_end)?;
                Some(seed)
            }
            _ => None,
        };
        let kind = match mode & S_IFMT {
            S_IFREG => Kind::File,
            S_IFDIR => Kind::Dir,
            S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        Ok(Inode {
            ino,
            kind,
            flags: f.u32(0x20)?,
            size: u64::from(f.u32(0x6C)?) << 32 | u64::from(f.u32(0x04)?),
            block: f.array(I_BLOCK_AT)?,
            xattrs: f.slice(extra_end, raw.len())?.to_vec(),
            seed,
        })
    }

    fn symlink_target(&self, link: &Inode) -> Result<Vec<u8>, Ext4Error> {
        if link.size > SYMLINK_MAX {
            return Err(link.damaged("symbolic link target longer than PATH_MAX"));
        }
        // Bounded just above.
        let len = link.size as usize;
        if link.flags & (FL_EXTENTS | FL_INLINE_DATA) == 0 && len < I_BLOCK_LEN {
            return Ok(link.block[..len].to_vec());
        }
        let mut target = vec![0; len];
        self.read_data(link, 0, &mut target)?;
        Ok(target)
    }

    /// The inode number of `name` in directory `dir`, or `None`. Each
    /// directory byte read comes out of `budget`.
    fn lookup(&self, dir: &Inode, name: &[u8], budget: &mut u64) -> Result<Option<u32>, Ext4Error> {
        if dir.flags & FL_ENCRYPT != 0 {
            return Err(dir.damaged("encrypted directory"));
        }
        if dir.flags & FL_INLINE_DATA != 0 {
            // The parent's inode number, then entries in the rest of
            // i_block and in the system.data attribute.
            let data = inline_data(dir)?;
            let parent = data.get(..4).ok_or(dir.damaged("inline directory without a parent"))?;
            if name == b".." {
                return Ok(Some(u32::from_le_bytes([parent[0], parent[1], parent[2], parent[3]])));
            }
            let (head, tail) = data.split_at(data.len().min(I_BLOCK_LEN));
            return match self.scan(dir, &head[4..], name)? {
                Some(ino) => Ok(Some(ino)),
                None => self.scan(dir, tail, name),
            };
        }
        let bs = self.sb.block_size as usize;
        if dir.size > DIR_MAX || dir.size & (bs as u64 - 1) != 0 {
            return Err(dir.damaged("directory size out of range"));
        }
        let mut chunk = vec![0; DIR_CHUNK];
        let mut offset = 0;
        while offset < dir.size {
            // Below DIR_CHUNK.
            let len = (dir.size - offset).min(DIR_CHUNK as u64) as usize;
            *budget =
                budget.checked_sub(len as u64).ok_or(dir.damaged("path lookups read over 256 MiB of directories"))?;
            self.read_data(dir, offset, &mut chunk[..len])?;
            for block in chunk[..len].chunks(bs) {
                verify_dir_block(dir, block)?;
                if let Some(ino) = self.scan(dir, block, name)? {
                    return Ok(Some(ino));
                }
            }
            offset += len as u64;
        }
        Ok(None)
    }

    /// Looks for `name` among the directory entries filling `region`.
    fn scan(&self, dir: &Inode, region: &[u8], name: &[u8]) -> Result<Option<u32>, Ext4Error> {
        let mut pos = 0;
        while pos < region.len() {
            let head = region.get(pos..pos + 8).ok_or(dir.damaged("directory entry past the end of its block"))?;
            let ino = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            let rec_len = match u16::from_le_bytes([head[4], head[5]]) {
                0 | 0xFFFF if self.sb.block_size == 1 << 16 => 1 << 16,
                n => usize::from(n),
            };
            let name_len = match self.sb.filetype {
                true => usize::from(head[6]),
                false => usize::from(u16::from_le_bytes([head[6], head[7]])),
            };
            if rec_len < 8 + name_len || rec_len % 4 != 0 || rec_len > region.len() - pos {
                return Err(dir.damaged("directory entry length out of range"));
            }
            if ino != 0 {
                let entry = &region[pos + 8..pos + 8 + name_len];
                if entry.is_empty() {
                    return Err(dir.damaged("directory entry without a name"));
                }
                if entry == name {
                    return Ok(Some(ino));
                }
            }
            pos += rec_len;
        }
        Ok(None)
    }

    /// Fills `buf` with the bytes of `inode` from `offset`; the caller keeps
    /// `offset + buf.len()` within the file. Holes and uninitialised extents
    /// read as zeros.
    fn read_data(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<(), Ext4Error> {
        buf.fill(0);
        if inode.flags & FL_ENCRYPT != 0 {
            return Err(inode.damaged("encrypted file"));
        }
        if inode.flags & FL_INLINE_DATA != 0 {
            let data = inline_data(inode)?;
            let src = usize::try_from(offset).ok().and_then(|at| data.get(at..at.checked_add(buf.len())?));
            buf.copy_from_slice(src.ok_or(inode.damaged("read past the end of inline data"))?);
            return Ok(());
        }
        let bs = u64::from(self.sb.block_size);
        let end = offset.checked_add(buf.len() as u64).ok_or(inode.damaged("file size out of range"))?;
        let mut target = Target { buf, offset, first: offset / bs, end: end.div_ceil(bs) };
        if inode.flags & FL_EXTENTS != 0 {
            self.extents(inode, &inode.block, None, (0, EXTENT_LOGICAL_END), &mut target)
        } else {
            self.block_map(inode, &mut target)
        }
    }

    /// Walks extent tree node `node` (`i_block` at the root), whose entries
    /// map logical blocks within `span`, copying what `target` wants.
    /// Entries must ascend, so the nodes visited at each level cover
    /// disjoint ranges that meet the target: the walk is bounded by its size.
    fn extents(
        &self,
        inode: &Inode,
        node: &[u8],
        depth: Option<u16>,
        span: (u64, u64),
        target: &mut Target,
    ) -> Result<(), Ext4Error> {
        let f = Fields::new(node, "extent node");
        if f.u16(0)? != EXTENT_MAGIC {
            return Err(inode.damaged("extent header magic"));
        }
        let (entries, max, level) = (f.u16(2)?, f.u16(4)?, f.u16(6)?);
        if entries > max || 12 + 12 * usize::from(max) > node.len() {
            return Err(inode.damaged("extent entry count out of range"));
        }
        if depth.map_or(level > EXTENT_MAX_DEPTH, |want| level != want) {
            return Err(inode.damaged("extent tree depth out of range"));
        }
        let mut covered = span.0;
        for i in 0..usize::from(entries) {
            let at = 12 + 12 * i;
            let start = u64::from(f.u32(at)?);
            let next = match i + 1 < usize::from(entries) {
                true => u64::from(f.u32(at + 12)?),
                false => span.1,
            };
            if start < covered || start >= next.min(span.1) {
                return Err(inode.damaged("extents out of order"));
            }
            if level == 0 {
                let raw_len = f.u16(at + 4)?;
                let (len, init) = match raw_len > EXTENT_INIT_MAX {
                    true => (raw_len - EXTENT_INIT_MAX, false),
                    false => (raw_len, true),
                };
                let physical = u64::from(f.u16(at + 6)?) << 32 | u64::from(f.u32(at + 8)?);
                covered = start + u64::from(len);
                if len == 0 || covered > next.min(span.1) {
                    return Err(inode.damaged("extent length out of range"));
                }
                match init {
                    true => self.copy(inode, target, start, physical, len.into())?,
                    false => self.check_blocks(inode, physical, len.into())?,
                }
            } else {
                covered = next.min(span.1);
                if !target.wants(start, covered) {
                    continue;
                }
                let child = u64::from(f.u16(at + 8)?) << 32 | u64::from(f.u32(at + 4)?);
                let block = self.metadata_block(inode, child)?;
                verify_extent_block(inode, &block)?;
                self.extents(inode, &block, Some(level - 1), (start, covered), target)?;
            }
        }
        Ok(())
    }

    /// Walks the ext2/3 block map: 12 direct blocks, then single, double
    /// and triple indirect blocks. Block 0 is a hole.
    fn block_map(&self, inode: &Inode, target: &mut Target) -> Result<(), Ext4Error> {
        let entry = |i: usize| u64::from(u32::from_le_bytes([0, 1, 2, 3].map(|b| inode.block[4 * i + b])));
        for i in 0..12 {
            if entry(i) != 0 {
                self.copy(inode, target, i as u64, entry(i), 1)?;
            }
        }
        let per = u64::from(self.sb.block_size / 4);
        let (mut first, mut covers) = (12, per);
        for (i, level) in (12..15).zip(1..) {
            self.indirect(inode, entry(i), level, first, target)?;
            first += covers;
            covers *= per;
        }
        Ok(())
    }

    /// Indirect block `block` of `level` (1 single, 2 double, 3 triple),
    /// mapping logical blocks from `first`.
    fn indirect(
        &self,
        inode: &Inode,
        block: u64,
        level: u32,
        first: u64,
        target: &mut Target,
    ) -> Result<(), Ext4Error> {
        // At most (64 KiB / 4)^3 = 2^42 blocks per triple indirect block.
        let per = u64::from(self.sb.block_size / 4);
        let child_covers = per.pow(level - 1);
        if block == 0 || !target.wants(first, first + per * child_covers) {
            return Ok(());
        }
        let raw = self.metadata_block(inode, block)?;
        for (j, entry) in (0..).zip(raw.chunks_exact(4)) {
            let child = u64::from(u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]));
            let start = first + j * child_covers;
            match (child, level) {
                (0, _) => {}
                (_, 1) => self.copy(inode, target, start, child, 1)?,
                _ => self.indirect(inode, child, level - 1, start, target)?,
            }
        }
        Ok(())
    }

    /// Rejects physical blocks `[start, start + count)` unless they lie
    /// inside the filesystem, past the primary superblock.
    fn check_blocks(&self, inode: &Inode, start: u64, count: u64) -> Result<(), Ext4Error> {
        match start.checked_add(count) {
            Some(end) if start > self.sb.first_data_block && end <= self.sb.blocks => Ok(()),
            _ => Err(inode.damaged("block outside the filesystem")),
        }
    }

    fn metadata_block(&self, inode: &Inode, block: u64) -> Result<Vec<u8>, Ext4Error> {
        self.check_blocks(inode, block, 1)?;
        let mut raw = vec![0; self.sb.block_size as usize];
        read(self.src, &mut raw, self.sb.bytes(block))?;
        Ok(raw)
    }

    /// Copies the part of logical blocks `[logical, logical + count)`, stored
    /// from `physical`, that the target wants.
    fn copy(
        &self,
        inode: &Inode,
        target: &mut Target,
        logical: u64,
        physical: u64,
        count: u64,
    ) -> Result<(), Ext4Error> {
        self.check_blocks(inode, physical, count)?;
        if !target.wants(logical, logical + count) {
            return Ok(());
        }
        // Logical blocks are below 2^43 and blocks 2^16 bytes: no overflow.
        let bs = u64::from(self.sb.block_size);
        let run = logical * bs;
        let lo = run.max(target.offset);
        let hi = (run + count * bs).min(target.offset + target.buf.len() as u64);
        if lo >= hi {
            return Ok(());
        }
        let dst = &mut target.buf[(lo - target.offset) as usize..(hi - target.offset) as usize];
        read(self.src, dst, self.sb.bytes(physical) + (lo - run))
    }
}

/// The path's components, an empty one (from `//` or a leading or trailing
/// slash) as ".".
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/').map(|c| if c.is_empty() { b".".to_vec() } else { c.to_vec() })
}

/// An inline-data inode's bytes: `i_block`, then the value of its
/// `system.data` extended attribute, cut to the file size.
fn inline_data(inode: &Inode) -> Result<Vec<u8>, Ext4Error> {
    let size = usize::try_from(inode.size).map_err(|_| inode.damaged("inline data size out of range"))?;
    let mut data = inode.block.to_vec();
    if size > data.len() {
        data.extend_from_slice(system_data(inode)?);
    }
    if data.len() < size {
        return Err(inode.damaged("inline data shorter than the file"));
    }
    data.truncate(size);
    Ok(data)
}

/// The value of the in-inode `system.data` attribute.
fn system_data(inode: &Inode) -> Result<&[u8], Ext4Error> {
    let missing = || inode.damaged("inline data without a system.data attribute");
    let x = &inode.xattrs;
    let u32_at = |at: usize| x.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if u32_at(0) != Some(XATTR_MAGIC) {
        return Err(missing());
    }
    // Entries follow the magic; value offsets count from the first entry.
    let base = 4;
    let mut pos = base;
    loop {
        let head = x.get(pos..pos + 16).ok_or_else(missing)?;
        if head[..4] == [0; 4] {
            return Err(missing());
        }
        let name_len = usize::from(head[0]);
        let value_at = base + usize::from(u16::from_le_bytes([head[2], head[3]]));
        let value_inode = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let value_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let name = x.get(pos + 16..pos + 16 + name_len).ok_or_else(missing)?;
        if head[1] == XATTR_INDEX_SYSTEM && name == b"data" {
            if value_inode != 0 {
                return Err(inode.damaged("inline data in an EA inode"));
            }
            let value = value_at.checked_add(value_len).and_then(|end| x.get(value_at..end));
            return value.ok_or(inode.damaged("system.data attribute past the end of the inode"));
        }
        pos += (16 + name_len).next_multiple_of(4);
    }
}

/// Checks a metadata_csum inode checksum (the kernel's `ext4_inode_csum`):
/// the high half is there only if `i_extra_isize` covers it.
fn verify_inode(ino: u32, seed: u32, raw: &[u8], extra_end: usize) -> Result<(), Ext4Error> {
    const LO: usize = 0x7C;
    const HI: usize = 0x82;
    let zero = [0u8; 2];
    let has_hi = extra_end >= HI + 2;
    let mut computed = crc32c(crc32c(crc32c(seed, &raw[..LO]), &zero), &raw[LO + 2..GOOD_OLD_INODE_SIZE]);
    let mut stored = u32::from(u16::from_le_bytes([raw[LO], raw[LO + 1]]));
    if raw.len() > GOOD_OLD_INODE_SIZE {
        if has_hi {
            computed = crc32c(crc32c(crc32c(computed, &raw[GOOD_OLD_INODE_SIZE..HI]), &zero), &raw[HI + 2..]);
            stored |= u32::from(u16::from_le_bytes([raw[HI], raw[HI + 1]])) << 16;
        } else {
            computed = crc32c(computed, &raw[GOOD_OLD_INODE_SIZE..]);
        }
    }
    if !has_hi {
        computed &= 0xFFFF;
    }
    match stored == computed {
        true => Ok(()),
        false => Err(Ext4Error::InodeChecksum { ino, what: "inode", stored, computed }),
    }
}

/// Checks the tail of a metadata_csum extent block, just past `eh_max` entries.
fn verify_extent_block(inode: &Inode, block: &[u8]) -> Result<(), Ext4Error> {
    let Some(seed) = inode.seed else {
        return Ok(());
    };
    let tail = 12 + 12 * usize::from(u16::from_le_bytes([block[4], block[5]]));
    let stored = block.get(tail..tail + 4).ok_or(inode.damaged("extent block without room for a checksum"))?;
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32c(seed, &block[..tail]);
    match stored == computed {
        true => Ok(()),
        false => Err(Ext4Error::InodeChecksum { ino: inode.ino, what: "extent block", stored, computed }),
    }
}

/// Checks the checksum of a metadata_csum directory leaf block, kept in a
/// dirent at its end. htree index blocks have none (their checksum is in
/// the index, which this module never reads).
fn verify_dir_block(dir: &Inode, block: &[u8]) -> Result<(), Ext4Error> {
    let Some(seed) = dir.seed else {
        return Ok(());
    };
    let Some(split) = block.len().checked_sub(DIR_TAIL_LEN) else {
        return Ok(());
    };
    let (body, tail) = block.split_at(split);
    let is_tail = tail[..4] == [0; 4] && tail[4..6] == [DIR_TAIL_LEN as u8, 0] && tail[6..8] == [0, DIR_TAIL_FT];
    if !is_tail {
        return Ok(());
    }
    let stored = u32::from_le_bytes([tail[8], tail[9], tail[10], tail[11]]);
    let computed = crc32c(seed, body);
    match stored == computed {
        true => Ok(()),
        false => Err(Ext4Error::InodeChecksum { ino: dir.ino, what: "directory block", stored, computed }),
    }
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
