//! ext2, ext3 and ext4: which bytes of a filesystem hold data or metadata.
//!
//! [`probe`] reads the primary superblock, the group descriptors and the
//! block bitmaps, and returns the allocated byte ranges so that capture
//! reads only those. It follows 64bit, flex_bg, meta_bg, sparse_super and
//! sparse_super2 layouts and uninitialised block groups (BLOCK_UNINIT), and
//! verifies the superblock, descriptor and block bitmap checksums (gdt_csum
//! and metadata_csum). Every field read from disk is bounded before use.
//!
//! [`read_file`] and [`os_release`] (in `files`) go further on the same
//! validated superblock and descriptors: they resolve a path through
//! directories and symbolic links and read a file's data.
//!
//! What [`probe`] does not do: read inodes, directories, extents or the journal,
//! consult backup superblocks, or repair anything. bigalloc, a journal that
//! still needs replaying, an external journal device, an unclean or errored
//! filesystem, any feature it does not know, and any inconsistency are
//! errors: the caller then captures every nonzero block instead, which is
//! slower but never loses data.

use std::io;

use thiserror::Error;

use crate::ranges::RangeSet;
use crate::source::ReadAt;

mod files;

pub use files::{os_release, read_file};

/// The superblock sits 1024 bytes in whatever the block size; the bytes
/// before it (a boot sector) and the superblock itself are always kept.
const SUPERBLOCK_AT: u64 = 1024;
const SUPERBLOCK_LEN: usize = 1024;
const MAGIC_AT: usize = 0x38;
const MAGIC: u16 = 0xEF53;
const CHECKSUM_AT: usize = 0x3FC;

const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;

const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
/// extents, mmp, flex_bg, ea_inode, dirdata, largedir, inline_data,
/// encrypt, casefold: none moves a bitmap or changes what a bit means.
const INCOMPAT_NEUTRAL: u32 = 0x40 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x4000 | 0x8000 | 0x1_0000 | 0x2_0000;
const INCOMPAT_KNOWN: u32 =
    INCOMPAT_FILETYPE | INCOMPAT_META_BG | INCOMPAT_64BIT | INCOMPAT_CSUM_SEED | INCOMPAT_NEUTRAL;

const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_BTREE_DIR: u32 = 0x4;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_HAS_SNAPSHOT: u32 = 0x80;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// huge_file, dir_nlink, extra_isize, quota, readonly, project,
/// shared_blocks, verity, orphan_present.
const RO_COMPAT_NEUTRAL: u32 = 0x8 | 0x20 | 0x40 | 0x100 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x1_0000;
const RO_COMPAT_KNOWN: u32 = RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_BTREE_DIR
    | RO_COMPAT_GDT_CSUM
    | RO_COMPAT_METADATA_CSUM
    | RO_COMPAT_NEUTRAL;

/// What ext3 understands; a feature beyond these makes it ext4 (blkid's rule).
const EXT3_INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
const EXT3_RO_COMPAT: u32 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;

const BG_BLOCK_UNINIT: u16 = 0x2;
/// Where `bg_checksum` sits in a group descriptor.
const DESC_CHECKSUM_AT: usize = 0x1E;
/// Descriptors at least this long carry the high half of the bitmap checksum.
const DESC_BITMAP_CSUM_HI_END: usize = 0x3A;

/// Which generation of the format, by features, as blkid names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtKind {
    Ext2,
    Ext3,
    Ext4,
}

/// An ext2/3/4 filesystem and the bytes it uses.
#[derive(Clone, Debug)]
pub struct ExtInfo {
    pub kind: ExtKind,
    pub block_size: u32,
    pub blocks: u64,
    /// Bytes the filesystem occupies: `blocks * block_size`.
    pub size: u64,
    /// Byte ranges relative to the filesystem start that hold allocated
    /// data or metadata, always including the first 2048 bytes.
    pub used: RangeSet,
    pub label: String,
    pub uuid: [u8; 16],
}

/// Why an ext filesystem could not be mapped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Ext4Error {
    /// A read from the partition failed.
    #[error("ext: read of {len} bytes at offset {offset} failed")]
    Io {
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    /// `s_log_block_size` names a block size outside 1 KiB..64 KiB.
    #[error("ext superblock: log block size {0} out of range")]
    BlockSize(u32),
    /// A superblock field has a value no valid filesystem has.
    #[error("ext superblock: {what} {value} out of range")]
    OutOfRange { what: &'static str, value: u64 },
    /// Two superblock fields contradict each other.
    #[error("ext superblock: {0}")]
    Inconsistent(&'static str),
    /// The filesystem claims to be larger than its partition.
    #[error("ext superblock: filesystem of {fs} bytes is larger than its partition of {partition} bytes")]
    TooBig { fs: u64, partition: u64 },
    /// A feature this module deliberately does not handle.
    #[error("ext superblock: unsupported feature {0}")]
    Unsupported(&'static str),
    /// Feature bits this module does not know.
    #[error("ext superblock: unknown {kind} feature bits {bits:#x}")]
    UnknownFeatures { kind: &'static str, bits: u32 },
    /// The filesystem was not cleanly unmounted or has recorded errors.
    #[error("ext superblock: state {0:#x} is not clean, run e2fsck")]
    NotClean(u16),
    /// The metadata_csum superblock checksum does not match.
    #[error("ext superblock: checksum {stored:#010x} does not match computed {computed:#010x}")]
    SuperblockChecksum { stored: u32, computed: u32 },
    /// A group descriptor points outside the filesystem.
    #[error("ext group {group}: {what} at block {block} outside the filesystem")]
    Location { group: u32, what: &'static str, block: u64 },
    /// A group descriptor's gdt_csum or metadata_csum checksum does not match.
    #[error("ext group {group}: descriptor checksum {stored:#06x} does not match computed {computed:#06x}")]
    DescriptorChecksum { group: u32, stored: u16, computed: u16 },
    /// A block bitmap's metadata_csum checksum does not match.
    #[error("ext group {group}: block bitmap checksum {stored:#010x} does not match computed {computed:#010x}")]
    BitmapChecksum { group: u32, stored: u32, computed: u32 },
    /// A group's superblock backup and descriptor blocks do not fit in it.
    #[error("ext group {group}: {blocks} metadata blocks do not fit in the group")]
    GroupOverflow { group: u32, blocks: u64 },
    /// A field lies past the end of its structure (a bug, never data).
    #[error("ext {what}: field at byte {offset} past the end")]
    Truncated { what: &'static str, offset: usize },
    /// An inode, or the extents, block map or directory entries it leads
    /// to, is damaged.
    #[error("ext inode {ino}: {what}")]
    Inode { ino: u32, what: &'static str },
    /// An inode's metadata_csum checksum (of the inode, an extent block or
    /// a directory block) does not match.
    #[error("ext inode {ino}: {what} checksum {stored:#010x} does not match computed {computed:#010x}")]
    InodeChecksum { ino: u32, what: &'static str, stored: u32, computed: u32 },
    /// Resolving a path took more symbolic links than `read_file` follows.
    #[error("ext path: more than {0} symbolic links")]
    SymlinkLoop(u32),
}

/// The validated superblock and group descriptors of the filesystem at the
/// start of `src`; `Ok(None)` if there is no ext magic.
fn open(src: &dyn ReadAt, len: u64) -> Result<Option<(Superblock, Vec<GroupDesc>)>, Ext4Error> {
    if len < SUPERBLOCK_AT + SUPERBLOCK_LEN as u64 {
        return Ok(None);
    }
    let mut raw = [0u8; SUPERBLOCK_LEN];
    read(src, &mut raw, SUPERBLOCK_AT)?;
    if Fields::new(&raw, "superblock").u16(MAGIC_AT)? != MAGIC {
        return Ok(None);
    }
    let sb = Superblock::parse(&raw, len)?;
    let descs = read_descriptors(src, &sb)?;
    Ok(Some((sb, descs)))
}

/// Maps the ext2/3/4 filesystem at the start of `src`, which is `len`
/// bytes long. `Ok(None)` if there is no ext magic; an error if there is
/// but the filesystem is damaged or uses something not handled here.
pub fn probe(src: &dyn ReadAt, len: u64) -> Result<Option<ExtInfo>, Ext4Error> {
    let Some((sb, descs)) = open(src, len)? else { return Ok(None) };
    let end_of_superblock = SUPERBLOCK_AT + SUPERBLOCK_LEN as u64;
    let mut used = RangeSet::new();
    used.insert(0, end_of_superblock);
    allocated(src, &sb, &descs, &mut used)?;
    Ok(Some(ExtInfo {
        kind: sb.kind,
        block_size: sb.block_size,
        blocks: sb.blocks,
        size: sb.bytes(sb.blocks),
        used,
        label: sb.label,
        uuid: sb.uuid,
    }))
}

/// Little-endian fields of one on-disk structure: a field past the end is
/// an error, never a panic.
struct Fields<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Fields { buf, what }
    }

    fn slice(&self, start: usize, end: usize) -> Result<&'a [u8], Ext4Error> {
        self.buf.get(start..end).ok_or(Ext4Error::Truncated { what: self.what, offset: start })
    }

    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], Ext4Error> {
        let end = at.checked_add(N).ok_or(Ext4Error::Truncated { what: self.what, offset: at })?;
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(at, end)?);
        Ok(out)
    }

    fn u8(&self, at: usize) -> Result<u8, Ext4Error> {
        self.array::<1>(at).map(|[b]| b)
    }

    fn u16(&self, at: usize) -> Result<u16, Ext4Error> {
        self.array(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: usize) -> Result<u32, Ext4Error> {
        self.array(at).map(u32::from_le_bytes)
    }
}

/// How group descriptors (and, for metadata_csum, bitmaps) are checksummed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Checksum {
    None,
    /// gdt_csum: CRC16 seeded with the filesystem UUID.
    Crc16([u8; 16]),
    /// metadata_csum: CRC32C from this seed.
    Crc32c(u32),
}

/// The validated superblock. Invariant: `blocks * block_size` fits in a
/// u64 and is at most the partition length, so any block number up to
/// `blocks` converts to a byte offset without overflow.
struct Superblock {
    kind: ExtKind,
    block_size: u32,
    blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    groups: u32,
    inodes_per_group: u32,
    /// Bytes per inode: a power of two from 128 to the block size.
    inode_size: usize,
    inode_table_blocks: u64,
    desc_size: usize,
    descs_per_block: u32,
    gdt_blocks: u32,
    reserved_gdt_blocks: u64,
    /// `s_first_meta_bg` if meta_bg is on.
    meta_bg: Option<u32>,
    sparse_super: bool,
    /// Directory entries carry a file type byte (and a one-byte name length).
    filetype: bool,
    /// `s_backup_bgs` if sparse_super2 is on.
    backup_groups: Option<[u32; 2]>,
    checksum: Checksum,
    label: String,
    uuid: [u8; 16],
}

impl Superblock {
    fn parse(raw: &[u8], len: u64) -> Result<Self, Ext4Error> {
        let f = Fields::new(raw, "superblock");
        let out_of_range = |what, value: u64| Ext4Error::OutOfRange { what, value };
        let compat = f.u32(0x5C)?;
        let incompat = f.u32(0x60)?;
        let ro_compat = f.u32(0x64)?;
        let uuid: [u8; 16] = f.array(0x68)?;
        let checksum = if ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            let stored = f.u32(CHECKSUM_AT)?;
            let computed = crc32c(!0, f.slice(0, CHECKSUM_AT)?);
            if stored != computed {
                return Err(Ext4Error::SuperblockChecksum { stored, computed });
            }
            if f.u8(0x175)? != 1 {
                return Err(out_of_range("checksum type", f.u8(0x175)?.into()));
            }
            let seed = if incompat & INCOMPAT_CSUM_SEED != 0 { f.u32(0x270)? } else { crc32c(!0, &uuid) };
            Checksum::Crc32c(seed)
        } else if ro_compat & RO_COMPAT_GDT_CSUM != 0 {
            Checksum::Crc16(uuid)
        } else {
            Checksum::None
        };
        check_features(incompat, ro_compat)?;
        let state = f.u16(0x3A)?;
        if state & STATE_VALID == 0 || state & STATE_ERROR != 0 {
            return Err(Ext4Error::NotClean(state));
        }
        let revision = f.u32(0x4C)?;
        if revision > 1 {
            return Err(out_of_range("revision", revision.into()));
        }

        let log_block_size = f.u32(0x18)?;
        if log_block_size > 6 {
            return Err(Ext4Error::BlockSize(log_block_size));
        }
        if f.u32(0x1C)? != log_block_size {
            return Err(Ext4Error::Inconsistent("cluster size differs from block size without bigalloc"));
        }
        let block_size = 1024u32 << log_block_size;
        let bs = u64::from(block_size);
        let first_data_block = u64::from(f.u32(0x14)?);
        if first_data_block != u64::from(block_size == 1024) {
            return Err(out_of_range("first data block", first_data_block));
        }
        let blocks_hi = if incompat & INCOMPAT_64BIT != 0 { f.u32(0x150)? } else { 0 };
        let blocks = u64::from(blocks_hi) << 32 | u64::from(f.u32(0x04)?);
        let fs = blocks.checked_mul(bs).ok_or(out_of_range("block count", blocks))?;
        if blocks <= first_data_block {
            return Err(out_of_range("block count", blocks));
        }
        if fs > len {
            return Err(Ext4Error::TooBig { fs, partition: len });
        }

        let blocks_per_group = u64::from(f.u32(0x20)?);
        if blocks_per_group < 8 || blocks_per_group > 8 * bs || blocks_per_group % 8 != 0 {
            return Err(out_of_range("blocks per group", blocks_per_group));
        }
        if u64::from(f.u32(0x24)?) != blocks_per_group {
            return Err(Ext4Error::Inconsistent("clusters per group differs from blocks per group"));
        }
        let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
        let groups = u32::try_from(groups).map_err(|_| out_of_range("group count", groups))?;
        let inodes_per_group = u64::from(f.u32(0x28)?);
        if inodes_per_group == 0 || inodes_per_group > 8 * bs {
            return Err(out_of_range("inodes per group", inodes_per_group));
        }
        if inodes_per_group.checked_mul(groups.into()) != Some(f.u32(0x00)?.into()) {
            return Err(Ext4Error::Inconsistent("inode count is not groups times inodes per group"));
        }
        let inode_size = if revision == 0 { 128 } else { u64::from(f.u16(0x58)?) };
        if inode_size < 128 || inode_size > bs || !inode_size.is_power_of_two() {
            return Err(out_of_range("inode size", inode_size));
        }
        let inode_table_blocks = (inodes_per_group * inode_size).div_ceil(bs);

        let desc_size = if incompat & INCOMPAT_64BIT != 0 { f.u16(0xFE)? } else { 32 };
        let min_desc_size = if incompat & INCOMPAT_64BIT != 0 { 64 } else { 32 };
        if desc_size < min_desc_size || desc_size > 1024 || !desc_size.is_power_of_two() {
            return Err(out_of_range("descriptor size", desc_size.into()));
        }
        let descs_per_block = block_size / u32::from(desc_size);
        let gdt_blocks = groups.div_ceil(descs_per_block);
        let reserved_gdt_blocks = u64::from(f.u16(0xCE)?);
        if reserved_gdt_blocks > bs / 4 {
            return Err(out_of_range("reserved gdt blocks", reserved_gdt_blocks));
        }
        let meta_bg = match incompat & INCOMPAT_META_BG {
            0 => None,
            _ => Some(f.u32(0x104)?),
        };
        if let Some(first) = meta_bg.filter(|&first| first > gdt_blocks) {
            return Err(out_of_range("first meta block group", first.into()));
        }
        let backup_groups = match compat & COMPAT_SPARSE_SUPER2 {
            0 => None,
            _ => Some([f.u32(0x24C)?, f.u32(0x250)?]),
        };

        let label = f.slice(0x78, 0x88)?;
        let label = label.split(|&b| b == 0).next().unwrap_or_default();
        let kind = if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
            ExtKind::Ext4
        } else if compat & COMPAT_HAS_JOURNAL != 0 {
            ExtKind::Ext3
        } else {
            ExtKind::Ext2
        };
        Ok(Superblock {
            kind,
            block_size,
            blocks,
            first_data_block,
            blocks_per_group,
            groups,
            // Both bounded above: at most 8 * 64 KiB, at most the block size.
            inodes_per_group: inodes_per_group as u32,
            inode_size: inode_size as usize,
            inode_table_blocks,
            desc_size: desc_size.into(),
            descs_per_block,
            gdt_blocks,
            reserved_gdt_blocks,
            meta_bg,
            sparse_super: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
            filetype: incompat & INCOMPAT_FILETYPE != 0,
            backup_groups,
            checksum,
            label: String::from_utf8_lossy(label).into_owned(),
            uuid,
        })
    }

    /// Byte offset of `block`; see the invariant on the type.
    fn bytes(&self, block: u64) -> u64 {
        block.saturating_mul(self.block_size.into())
    }

    fn group_start(&self, group: u32) -> u64 {
        self.first_data_block + u64::from(group) * self.blocks_per_group
    }

    /// One past the group's last block: the last group stops at `blocks`.
    fn group_end(&self, group: u32) -> u64 {
        (self.group_start(group) + self.blocks_per_group).min(self.blocks)
    }

    /// Whether `group` holds a superblock (the kernel's `ext4_bg_has_super`).
    fn has_super(&self, group: u32) -> bool {
        fn power_of(group: u32, base: u32) -> bool {
            let mut power = base;
            while power < group {
                match power.checked_mul(base) {
                    Some(next) => power = next,
                    None => return false,
                }
            }
            power == group
        }
        if group == 0 {
            return true;
        }
        if let Some(backups) = self.backup_groups {
            return backups.contains(&group);
        }
        group == 1
            || !self.sparse_super
            || (group % 2 == 1 && (power_of(group, 3) || power_of(group, 5) || power_of(group, 7)))
    }

    /// Block holding descriptor block `nr` (the kernel's `descriptor_loc`).
    fn descriptor_block(&self, nr: u32) -> u64 {
        match self.meta_bg {
            Some(first) if nr >= first => {
                let group = nr.saturating_mul(self.descs_per_block);
                self.group_start(group) + u64::from(self.has_super(group))
            }
            _ => self.first_data_block + 1 + u64::from(nr),
        }
    }

    /// Superblock backup, descriptor and reserved descriptor blocks at the
    /// start of `group` (the kernel's `ext4_num_base_meta_blocks`).
    fn base_meta_blocks(&self, group: u32) -> u64 {
        let has_super = u64::from(self.has_super(group));
        let per_block = u64::from(self.descs_per_block);
        match self.meta_bg {
            Some(first) if u64::from(group) >= u64::from(first) * per_block => {
                let at = u64::from(group) % per_block;
                has_super + u64::from(at <= 1 || at == per_block - 1)
            }
            _ if has_super == 1 => 1 + u64::from(self.meta_bg.unwrap_or(self.gdt_blocks)) + self.reserved_gdt_blocks,
            _ => 0,
        }
    }

    /// Rejects `[start, start + count)` unless it lies inside the
    /// filesystem and past the primary superblock.
    fn check_extent(&self, group: u32, what: &'static str, start: u64, count: u64) -> Result<(), Ext4Error> {
        match start.checked_add(count) {
            Some(end) if start > self.first_data_block && end <= self.blocks => Ok(()),
            _ => Err(Ext4Error::Location { group, what, block: start }),
        }
    }
}

/// Rejects the features whose layout this module does not follow.
fn check_features(incompat: u32, ro_compat: u32) -> Result<(), Ext4Error> {
    let unsupported = [
        (ro_compat & RO_COMPAT_BIGALLOC, "bigalloc"),
        (ro_compat & RO_COMPAT_HAS_SNAPSHOT, "snapshot"),
        (incompat & INCOMPAT_RECOVER, "needs_recovery (the journal is not replayed)"),
        (incompat & INCOMPAT_JOURNAL_DEV, "journal_dev (an external journal, not a filesystem)"),
        (incompat & INCOMPAT_COMPRESSION, "compression"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(bits, _)| *bits != 0) {
        return Err(Ext4Error::Unsupported(name));
    }
    match (incompat & !INCOMPAT_KNOWN, ro_compat & !RO_COMPAT_KNOWN) {
        (0, 0) => Ok(()),
        (0, bits) => Err(Ext4Error::UnknownFeatures { kind: "ro_compat", bits }),
        (bits, _) => Err(Ext4Error::UnknownFeatures { kind: "incompat", bits }),
    }
}

/// The fields of one group descriptor that locate its metadata.
struct GroupDesc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
    bitmap_checksum: u32,
}

impl GroupDesc {
    fn parse(raw: &[u8], group: u32, sb: &Superblock) -> Result<Self, Ext4Error> {
        let f = Fields::new(raw, "group descriptor");
        let stored = f.u16(DESC_CHECKSUM_AT)?;
        let head = f.slice(0, DESC_CHECKSUM_AT)?;
        let tail = f.slice(DESC_CHECKSUM_AT + 2, sb.desc_size)?;
        let group_le = group.to_le_bytes();
        let computed = match sb.checksum {
            Checksum::None => stored,
            Checksum::Crc16(uuid) => [&group_le[..], head, tail].iter().fold(crc16(!0, &uuid), |c, d| crc16(c, d)),
            // Truncation intended: the descriptor keeps the low 16 bits.
            Checksum::Crc32c(seed) => {
                [&group_le[..], head, &[0, 0], tail].iter().fold(seed, |c, d| crc32c(c, d)) as u16
            }
        };
        if stored != computed {
            return Err(Ext4Error::DescriptorChecksum { group, stored, computed });
        }
        let wide = sb.desc_size >= 64;
        let location = |lo, hi| -> Result<u64, Ext4Error> {
            let hi = if wide { f.u32(hi)? } else { 0 };
            Ok(u64::from(hi) << 32 | u64::from(f.u32(lo)?))
        };
        let bitmap_checksum_hi = if sb.desc_size >= DESC_BITMAP_CSUM_HI_END { f.u16(0x38)? } else { 0 };
        let desc = GroupDesc {
            block_bitmap: location(0x00, 0x20)?,
            inode_bitmap: location(0x04, 0x24)?,
            inode_table: location(0x08, 0x28)?,
            flags: f.u16(0x12)?,
            bitmap_checksum: u32::from(bitmap_checksum_hi) << 16 | u32::from(f.u16(0x18)?),
        };
        sb.check_extent(group, "block bitmap", desc.block_bitmap, 1)?;
        sb.check_extent(group, "inode bitmap", desc.inode_bitmap, 1)?;
        sb.check_extent(group, "inode table", desc.inode_table, sb.inode_table_blocks)?;
        Ok(desc)
    }

    /// The blocks the descriptor says hold metadata, as `[start, end)`.
    fn metadata(&self, sb: &Superblock) -> [(u64, u64); 3] {
        [
            (self.block_bitmap, self.block_bitmap + 1),
            (self.inode_bitmap, self.inode_bitmap + 1),
            (self.inode_table, self.inode_table + sb.inode_table_blocks),
        ]
    }
}

/// Reads and checks every group descriptor, in group order.
fn read_descriptors(src: &dyn ReadAt, sb: &Superblock) -> Result<Vec<GroupDesc>, Ext4Error> {
    let mut block = vec![0u8; sb.block_size as usize];
    let mut descs = Vec::new();
    for nr in 0..sb.gdt_blocks {
        let at = sb.descriptor_block(nr);
        let first = nr.saturating_mul(sb.descs_per_block);
        if at >= sb.blocks {
            return Err(Ext4Error::Location { group: first, what: "descriptor block", block: at });
        }
        read(src, &mut block, sb.bytes(at))?;
        let last = first.saturating_add(sb.descs_per_block).min(sb.groups);
        for (group, raw) in (first..last).zip(block.chunks_exact(sb.desc_size)) {
            descs.push(GroupDesc::parse(raw, group, sb)?);
        }
    }
    if descs.len() != sb.groups as usize {
        return Err(Ext4Error::Inconsistent("descriptor blocks do not hold every group"));
    }
    Ok(descs)
}

/// Adds the allocated blocks of every group to `used`, in ascending order.
fn allocated(src: &dyn ReadAt, sb: &Superblock, descs: &[GroupDesc], used: &mut RangeSet) -> Result<(), Ext4Error> {
    // Every group's bitmaps and inode table are in use wherever they are:
    // what e2fsprogs marks for BLOCK_UNINIT groups, and what the bitmap of
    // an initialised group must already show.
    let mut metadata: Vec<(u64, u64)> = descs.iter().flat_map(|d| d.metadata(sb)).collect();
    metadata.sort_unstable();
    let mut metadata = metadata.into_iter().peekable();
    let mut bitmap = vec![0u8; sb.block_size as usize];
    let insert = |used: &mut RangeSet, start: u64, end: u64| used.insert(sb.bytes(start), sb.bytes(end));
    for (group, desc) in (0..sb.groups).zip(descs) {
        let (start, end) = (sb.group_start(group), sb.group_end(group));
        if desc.flags & BG_BLOCK_UNINIT != 0 && sb.checksum != Checksum::None {
            // No bitmap on disk: only the group's fixed metadata is in use
            // (the kernel's ext4_init_block_bitmap).
            let blocks = sb.base_meta_blocks(group);
            if blocks > end - start {
                return Err(Ext4Error::GroupOverflow { group, blocks });
            }
            insert(used, start, start + blocks);
        } else {
            read(src, &mut bitmap, sb.bytes(desc.block_bitmap))?;
            verify_bitmap(sb, group, desc, &bitmap)?;
            for_each_run(&bitmap, end - start, |a, b| insert(used, start + a, start + b));
        }
        while let Some((a, b)) = metadata.next_if(|&(a, _)| a < end) {
            insert(used, a, b);
        }
    }
    Ok(())
}

fn verify_bitmap(sb: &Superblock, group: u32, desc: &GroupDesc, bitmap: &[u8]) -> Result<(), Ext4Error> {
    let Checksum::Crc32c(seed) = sb.checksum else {
        return Ok(());
    };
    let covered = bitmap.get(..(sb.blocks_per_group / 8) as usize).unwrap_or(bitmap);
    let mut computed = crc32c(seed, covered);
    if sb.desc_size < DESC_BITMAP_CSUM_HI_END {
        computed &= 0xFFFF;
    }
    if desc.bitmap_checksum != computed {
        return Err(Ext4Error::BitmapChecksum { group, stored: desc.bitmap_checksum, computed });
    }
    Ok(())
}

/// Calls `emit(start, end)` for each run of set bits among the first
/// `nbits` bits of `bitmap` (bit `i` is bit `i % 8` of byte `i / 8`).
fn for_each_run(bitmap: &[u8], nbits: u64, mut emit: impl FnMut(u64, u64)) {
    let nbits = nbits.min(bitmap.len() as u64 / 8 * 64);
    let mut run = None;
    for (base, chunk) in (0..nbits).step_by(64).zip(bitmap.chunks_exact(8)) {
        let mut word = chunk.iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b));
        if nbits - base < 64 {
            word &= (1 << (nbits - base)) - 1;
        }
        let mut pos = 0;
        while pos < 64 {
            let rest = word >> pos;
            match run {
                None if rest == 0 => break,
                None => {
                    pos += rest.trailing_zeros();
                    run = Some(base + u64::from(pos));
                }
                Some(start) => {
                    pos += rest.trailing_ones();
                    if pos < 64 {
                        emit(start, base + u64::from(pos));
                        run = None;
                    }
                }
            }
        }
    }
    if let Some(start) = run {
        emit(start, nbits);
    }
}

fn read(src: &dyn ReadAt, buf: &mut [u8], offset: u64) -> Result<(), Ext4Error> {
    let len = buf.len();
    src.read_exact_at(buf, offset).map_err(|source| Ext4Error::Io { offset, len, source })
}

/// CRC32C as ext4 uses it: the caller's seed, no final inversion.
fn crc32c(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// The kernel's crc16 (polynomial 0x8005, reflected), as gdt_csum uses it.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { crc >> 1 ^ 0xA001 } else { crc >> 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests;
