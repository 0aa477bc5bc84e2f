//! Where an image's segments land on a target: the checks that run before
//! a deploy writes anything.
//!
//! A whole-disk image goes to a disk at least as large (and, for GPT, with
//! the same sector size). A partition image goes to a partition at least as
//! large, named by `--partition N` on a disk with a table or given directly
//! as the target (a partition device or a file without a table). On a
//! blank whole disk, partition N is where the image's own table puts it,
//! once [`crate::blank`] has created that table. One partition can be
//! taken from a whole-disk or combo image the same way.

use shoal_proto::manifest::{ImageKind, Manifest, TableKind};

use crate::device::Device;
use crate::table;

/// One segment's bytes `[src_start, src_end)` written at `dest_start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub segment: usize,
    pub src_start: u64,
    pub src_end: u64,
    pub dest_start: u64,
}

impl Target {
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.src_end && end > self.src_start
    }

    /// Where segment offset `s` lands on the target (for `s` in range).
    pub fn dest_offset(&self, s: u64) -> u64 {
        s - self.src_start + self.dest_start
    }

    /// The target `(offset, len)` of the part of `[start, end)` this target
    /// covers; empty if none.
    pub fn map(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        let (s, e) = (start.max(self.src_start), end.min(self.src_end));
        (s < e).then(|| (self.dest_offset(s), e - s))
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// the target is too small for what the image restores
    #[error("{what} is {have} bytes but the image needs {need}")]
    TooSmall { what: String, have: u64, need: u64 },
    /// GPT images need the same logical sector size on the target
    #[error("the image has a {image}-byte-sector GPT but the target has {target}-byte sectors")]
    SectorSize { image: u32, target: u32 },
    /// the image has no such partition
    #[error("the image has no partition {0}")]
    NoImagePartition(u32),
    /// the target's partition table has no such partition
    #[error("the target has no partition {0}")]
    NoTargetPartition(u32),
    /// a combo image needs a partitioned target
    #[error("a multi-partition image needs a target with a partition table holding partitions {0:?}")]
    NeedsTable(Vec<u32>),
    /// a partition load onto a whole disk without a table that cannot get one
    #[error("the target disk has no partition table, so there is no partition {partition}: {why}")]
    BlankDisk { partition: u32, why: String },
    #[error("target partition table")]
    Table(#[from] table::TableError),
}

/// Decides where each segment goes, checking sizes before anything is
/// written.
pub fn place(m: &Manifest, dest: &Device, partition: Option<u32>) -> Result<Vec<Target>, PlaceError> {
    let dest_size = dest.size();
    let dest_table = || table::probe(dest, dest_size);
    // Where partition `n` of the target is, and how big: the target itself
    // when it has no table.
    let dest_part = |n: u32| -> Result<(u64, u64, String), PlaceError> {
        match dest_table()? {
            Some(t) => {
                let p = t.partitions.iter().find(|p| p.number == n && !p.extended);
                let p = p.ok_or(PlaceError::NoTargetPartition(n))?;
                Ok((p.start, p.size, format!("target partition {n}")))
            }
            // A blank whole disk: the image's table will be created.
            None if dest.is_whole_disk() => {
                let (start, size) = crate::blank::image_partition(m, n).ok_or_else(|| PlaceError::BlankDisk {
                    partition: n,
                    why: "the image carries no partition table to create".into(),
                })?;
                Ok((start, size, format!("partition {n} of the image's table")))
            }
            None => Ok((0, dest_size, "the target".to_string())),
        }
    };
    let fits = |what: String, have: u64, need: u64| {
        if have < need {
            Err(PlaceError::TooSmall { what, have, need })
        } else {
            Ok(())
        }
    };
    match (m.kind, partition) {
        (ImageKind::WholeDisk, None) => {
            fits("the target".into(), dest_size, m.source_size)?;
            if let Some(t) = &m.table {
                if t.kind == TableKind::Gpt && dest.is_block_device() && dest.sector_size() != m.sector_size {
                    return Err(PlaceError::SectorSize { image: m.sector_size, target: dest.sector_size() });
                }
            }
            Ok(vec![Target { segment: 0, src_start: 0, src_end: m.source_size, dest_start: 0 }])
        }
        (ImageKind::WholeDisk, Some(n)) => {
            let p = m
                .table
                .as_ref()
                .and_then(|t| t.partitions.iter().find(|p| p.number == n))
                .ok_or(PlaceError::NoImagePartition(n))?;
            let (start, size, what) = dest_part(n)?;
            fits(what, size, p.size)?;
            Ok(vec![Target { segment: 0, src_start: p.start, src_end: p.start + p.size, dest_start: start }])
        }
        (_, None) if m.segments.len() == 1 => {
            let seg = &m.segments[0];
            fits("the target".into(), dest_size, seg.size)?;
            Ok(vec![Target { segment: 0, src_start: 0, src_end: seg.size, dest_start: 0 }])
        }
        (_, None) => {
            let wanted: Vec<u32> = m.segments.iter().filter_map(|s| s.partition).collect();
            let t = dest_table()?.ok_or_else(|| PlaceError::NeedsTable(wanted.clone()))?;
            let mut out = Vec::new();
            for (i, seg) in m.segments.iter().enumerate() {
                let n = seg.partition.unwrap_or(0);
                let p = t.partitions.iter().find(|p| p.number == n && !p.extended);
                let p = p.ok_or(PlaceError::NoTargetPartition(n))?;
                fits(format!("target partition {n}"), p.size, seg.size)?;
                out.push(Target { segment: i, src_start: 0, src_end: seg.size, dest_start: p.start });
            }
            Ok(out)
        }
        (_, Some(n)) => {
            // One partition of a partition or combo image: the segment for
            // partition n, or the only segment.
            let i = m
                .segments
                .iter()
                .position(|s| s.partition == Some(n))
                .or((m.segments.len() == 1).then_some(0))
                .ok_or(PlaceError::NoImagePartition(n))?;
            let seg = &m.segments[i];
            let (start, size, what) = dest_part(n)?;
            fits(what, size, seg.size)?;
            Ok(vec![Target { segment: i, src_start: 0, src_end: seg.size, dest_start: start }])
        }
    }
}

/// The size of the file that holds what `place` would write from `m` (for
/// a target that does not exist yet): the disk, the partition asked for,
/// or the only segment. `None` for a multi-partition image, which needs a
/// partitioned disk.
pub fn image_size(m: &Manifest, partition: Option<u32>) -> Option<u64> {
    match (m.kind, partition) {
        (ImageKind::WholeDisk, None) => Some(m.source_size),
        (ImageKind::WholeDisk, Some(n)) => {
            m.table.as_ref().and_then(|t| t.partitions.iter().find(|p| p.number == n)).map(|p| p.size)
        }
        (_, Some(n)) => m.segments.iter().find(|s| s.partition == Some(n)).or(m.segments.first()).map(|s| s.size),
        (_, None) if m.segments.len() == 1 => Some(m.segments[0].size),
        (_, None) => None,
    }
}
