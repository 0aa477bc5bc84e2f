//! Deciding what a capture reads: the partition table, then each
//! partition's allocation map, then zero-run detection for the rest.
//!
//! The plan divides every segment (the whole disk, or each partition asked
//! for) into three kinds of bytes, relative to the segment's start:
//! - `data`: read and stored as they are (table sectors, blocks a known
//!   filesystem has allocated, a swap header);
//! - `detect`: read, with all-zero blocks left out of the chunks and
//!   recorded as must-zero (gaps between partitions, unknown filesystems,
//!   a damaged ext superblock, the tail of a partition past its filesystem);
//! - everything else: free space of a known filesystem, never read and
//!   not restored (deploy's `--free` policy decides what happens to it).
//!
//! Holes of a sparse source file inside `detect` ranges go straight to
//! `zero` without being read.

use shoal_proto::manifest::{
    FsKind, ImageKind, PartType, Partition as MPartition, PartitionTable, TableKind as MTableKind,
};

use crate::device::Device;
use crate::ext4::{self, ExtKind};
use crate::ranges::RangeSet;
use crate::source::{ReadAt, Slice};
use crate::swap;
use crate::table::{self, DiskId, PartKind, Table, TableKind};

/// What one segment of the image is made of.
#[derive(Debug)]
pub struct SegmentPlan {
    /// `None` for the whole disk.
    pub partition: Option<u32>,
    /// Where the segment starts on the source.
    pub offset: u64,
    pub size: u64,
    pub fs: FsKind,
    pub data: RangeSet,
    pub detect: RangeSet,
    /// Known to be zero without reading (holes of a sparse source).
    pub zero: RangeSet,
}

impl SegmentPlan {
    /// Bytes the capture will read.
    pub fn read_bytes(&self) -> u64 {
        self.data.total() + self.detect.total()
    }
}

#[derive(Debug)]
pub struct Plan {
    pub kind: ImageKind,
    pub source_size: u64,
    pub sector_size: u32,
    pub table: Option<PartitionTable>,
    pub segments: Vec<SegmentPlan>,
    /// Things the operator should know, such as a damaged filesystem that
    /// was captured by zero detection instead of its allocation map.
    pub warnings: Vec<String>,
}

/// Why a capture cannot be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// the source's partition table is unreadable and partitions were asked for
    #[error("partition table")]
    Table(#[from] table::TableError),
    /// a partition was asked for but the disk has no partition table
    #[error("{0}: no partition table, so there is no partition {1}")]
    NoTable(String, u32),
    /// the partition table has no such partition
    #[error("partition {0} does not exist")]
    NoPartition(u32),
    /// an MBR extended partition holds no filesystem of its own
    #[error("partition {0} is an extended partition: capture its logical partitions instead")]
    Extended(u32),
    /// the source is empty
    #[error("{0}: empty source")]
    Empty(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What a filesystem probe found on one region.
struct Region {
    fs: FsKind,
    label: String,
    /// The operating system it holds, from its os-release file.
    os: Option<String>,
    /// Bytes the region's filesystem accounts for (used or free), from its
    /// start; bytes past this are zero-detected.
    covered: u64,
    used: RangeSet,
}

/// Probes `[offset, offset + len)` of `dev` for a filesystem.
fn probe_region(dev: &Device, offset: u64, len: u64, what: &str, warnings: &mut Vec<String>) -> Region {
    let slice = Slice::new(dev as &dyn ReadAt, offset, len);
    match ext4::probe(&slice, len) {
        Ok(Some(info)) => {
            let fs = match info.kind {
                ExtKind::Ext2 => FsKind::Ext2,
                ExtKind::Ext3 => FsKind::Ext3,
                ExtKind::Ext4 => FsKind::Ext4,
            };
            let os = ext4::os_release(&slice, len);
            return Region { fs, label: info.label, os, covered: info.size, used: info.used };
        }
        Ok(None) => {}
        Err(e) => {
            warnings
                .push(format!("{what}: looks like ext2/3/4 but cannot be read ({e}); capturing it by zero detection"));
            return Region { fs: FsKind::Unknown, label: String::new(), os: None, covered: 0, used: RangeSet::new() };
        }
    }
    if let Some(sw) = swap::probe(&slice, len) {
        return Region { fs: FsKind::Swap, label: sw.label, os: None, covered: len, used: sw.used };
    }
    Region { fs: FsKind::Unknown, label: String::new(), os: None, covered: 0, used: RangeSet::new() }
}

/// Plans a capture of the whole disk (`partitions` empty) or of the
/// partitions named.
pub fn plan(dev: &Device, partitions: &[u32]) -> Result<Plan, PlanError> {
    let size = dev.size();
    let name = dev.path().display().to_string();
    if size == 0 {
        return Err(PlanError::Empty(name));
    }
    let mut warnings = Vec::new();
    let table = match table::probe(dev, size) {
        Ok(t) => t,
        Err(e) if partitions.is_empty() => {
            warnings.push(format!("partition table unreadable ({e}); capturing the whole disk by zero detection"));
            None
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(t) = &table {
        if let Some(g) = &t.gpt {
            if !g.other_copy_valid {
                warnings.push("one copy of the GPT is damaged; the good copy was used".to_string());
            }
        }
    }
    let sector_size = table.as_ref().map_or(dev.sector_size(), |t| t.sector_size);

    // Probe each partition once; both plan shapes need the results.
    let mut regions = Vec::new();
    let mut mparts = Vec::new();
    if let Some(t) = &table {
        for p in &t.partitions {
            let region = if p.extended {
                Region { fs: FsKind::Extended, label: String::new(), os: None, covered: 0, used: RangeSet::new() }
            } else {
                probe_region(dev, p.start, p.size, &format!("partition {}", p.number), &mut warnings)
            };
            mparts.push(manifest_partition(p, &region));
            regions.push(region);
        }
    }
    let mtable = table.as_ref().map(|t| manifest_table(t, mparts));

    let mut segments = Vec::new();
    let kind;
    if partitions.is_empty() {
        kind = ImageKind::WholeDisk;
        let mut data = RangeSet::new();
        let mut accounted = RangeSet::new();
        let mut fs = FsKind::Unknown;
        match &table {
            Some(t) => {
                data.insert_shifted(&t.metadata, 0);
                accounted.insert_shifted(&t.metadata, 0);
                for (p, r) in t.partitions.iter().zip(&regions) {
                    data.insert_shifted(&r.used, p.start);
                    accounted.insert(p.start, p.start + r.covered.min(p.size));
                }
            }
            None => {
                let r = probe_region(dev, 0, size, "disk", &mut warnings);
                fs = r.fs;
                data.insert_shifted(&r.used, 0);
                accounted.insert(0, r.covered.min(size));
            }
        }
        segments.push(segment(dev, None, 0, size, fs, data, &accounted)?);
    } else {
        kind = if partitions.len() == 1 { ImageKind::Partition } else { ImageKind::Combo };
        let t = table.as_ref().ok_or_else(|| PlanError::NoTable(name.clone(), partitions[0]))?;
        let mut wanted = partitions.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        for n in wanted {
            let i = t.partitions.iter().position(|p| p.number == n).ok_or(PlanError::NoPartition(n))?;
            let (p, r) = (&t.partitions[i], &regions[i]);
            if p.extended {
                return Err(PlanError::Extended(n));
            }
            let mut accounted = RangeSet::new();
            accounted.insert(0, r.covered.min(p.size));
            segments.push(segment(dev, Some(n), p.start, p.size, r.fs, r.used.clone(), &accounted)?);
        }
    }
    Ok(Plan { kind, source_size: size, sector_size, table: mtable, segments, warnings })
}

/// Builds a segment: `data` is read as is; whatever `accounted` leaves out
/// is zero-detected, except the holes of a sparse source, which are zero.
fn segment(
    dev: &Device,
    partition: Option<u32>,
    offset: u64,
    size: u64,
    fs: FsKind,
    mut data: RangeSet,
    accounted: &RangeSet,
) -> Result<SegmentPlan, PlanError> {
    // Clip anything a probe reported past the segment.
    let clipped: RangeSet = data.clip(0, size).map(|r| (r.start, r.end)).collect();
    data = clipped;
    let present = dev.data_ranges(offset, offset + size)?;
    let mut detect = RangeSet::new();
    let mut zero = RangeSet::new();
    for gap in accounted.gaps(0, size) {
        for r in data.gaps(gap.start, gap.end) {
            let mut at = r.start;
            for d in present.clip(offset + r.start, offset + r.end) {
                let (ds, de) = (d.start - offset, d.end - offset);
                zero.insert(at, ds);
                detect.insert(ds, de);
                at = de;
            }
            zero.insert(at, r.end);
        }
    }
    Ok(SegmentPlan { partition, offset, size, fs, data, detect, zero })
}

fn manifest_partition(p: &table::Partition, r: &Region) -> MPartition {
    MPartition {
        number: p.number,
        start: p.start,
        size: p.size,
        ptype: match p.kind {
            PartKind::Mbr(b) => PartType::Mbr(b),
            PartKind::Gpt(g) => PartType::Gpt(g),
        },
        guid: p.guid,
        name: p.name.clone(),
        bootable: p.bootable,
        fs: r.fs,
        fs_label: r.label.clone(),
        os: r.os.clone(),
    }
}

fn manifest_table(t: &Table, partitions: Vec<MPartition>) -> PartitionTable {
    PartitionTable {
        kind: match t.kind {
            TableKind::Mbr => MTableKind::Mbr,
            TableKind::Gpt => MTableKind::Gpt,
        },
        disk_id: match t.disk_id {
            DiskId::Mbr(sig) => sig.to_le_bytes().to_vec(),
            DiskId::Gpt(g) => g.to_vec(),
        },
        partitions,
    }
}
