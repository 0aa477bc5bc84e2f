//! The image manifest: what an image is, where its chunks go, and who
//! vouches for it.
//!
//! A manifest has one canonical binary encoding ([`Manifest::encode`]),
//! decoded strictly from untrusted bytes ([`Manifest::decode`]); serde is for
//! showing it (`shoal image info --json`), never for trusting it. A signed
//! manifest ([`SignedManifest`]) is those bytes, the signer's ed25519 public
//! key and a signature over a domain-separated copy of them.
//!
//! Offsets and sizes are `u64` bytes throughout: there is no 2 TiB limit.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::chunk::{check_extents, Extent, MAX_CHUNK_BYTES, MAX_EXTENTS, WINDOW_SIZE};
use crate::codec::{DecodeError, Reader, Writer};
use crate::id::{ChunkHash, ImageId, KeyId, RawHash};

const MAGIC: &[u8; 8] = b"SHOALIMG";
const FORMAT: u16 = 1;
const SIGNING_CONTEXT: &[u8] = b"shoal manifest v1\0";

const MAX_TEXT: u32 = 4096;
const MAX_DESCRIPTION: u32 = 64 * 1024;
const MAX_PARTITIONS: u32 = 4096;
const MAX_SEGMENTS: u32 = 256;
const MAX_ZERO_RANGES: u32 = 1 << 24;
/// The largest encoded manifest we accept: room for a fully allocated
/// 64 TiB disk with fragmented windows.
pub const MAX_MANIFEST_BYTES: usize = 1 << 30;

/// What an image holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageKind {
    /// A whole disk, partition table included.
    WholeDisk,
    /// One partition's content.
    Partition,
    /// Several partitions of one disk, without the rest of it.
    Combo,
}

/// The partition table scheme of the source disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
}

/// A partition's type, as the table stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartType {
    Mbr(u8),
    /// The type GUID's 16 bytes as stored on disk.
    Gpt([u8; 16]),
}

/// What capture found on a partition and how it chose what to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Swap,
    /// An MBR extended partition: a container of logical partitions.
    Extended,
    /// Anything else: captured by zero-run detection.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The number Linux gives it (1-based; MBR logicals from 5).
    pub number: u32,
    /// Byte offset from the start of the disk.
    pub start: u64,
    pub size: u64,
    pub ptype: PartType,
    /// GPT unique partition GUID, as stored on disk.
    pub guid: Option<[u8; 16]>,
    pub name: String,
    pub bootable: bool,
    pub fs: FsKind,
    pub fs_label: String,
    /// The operating system on the partition (the OSID), if known.
    pub os: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// MBR disk signature (4 bytes) or GPT disk GUID (16 bytes).
    pub disk_id: Vec<u8>,
    pub partitions: Vec<Partition>,
}

/// One window's chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Window index within the segment: the chunk covers bytes
    /// `[window * WINDOW_SIZE, (window + 1) * WINDOW_SIZE)`.
    pub window: u64,
    pub hash: ChunkHash,
    pub raw_hash: RawHash,
    /// Encoded (compressed) size in bytes.
    pub csize: u32,
    /// Raw bytes the chunk writes: the extents' total.
    pub rsize: u32,
    pub extents: Vec<Extent>,
}

/// A byte range `[start, start + len)` within a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub start: u64,
    pub len: u64,
}

/// A contiguous region the image restores: the whole disk or one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// `None` for the whole disk, else the partition number.
    pub partition: Option<u32>,
    /// Size of the region on the source, in bytes.
    pub size: u64,
    /// The filesystem capture found on the region itself (for a disk
    /// without a partition table that holds a bare filesystem); `Unknown`
    /// for a partitioned disk, whose filesystems are in the table.
    pub fs: FsKind,
    /// Chunks in strictly increasing window order.
    pub chunks: Vec<ChunkRef>,
    /// Ranges that were zero on the source where capture could not tell
    /// free space from data (zero-run detection): deploy must leave them
    /// zero whatever its free-space policy. Sorted, disjoint, non-adjacent.
    pub zero: Vec<ByteRange>,
}

impl Segment {
    pub fn raw_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.rsize)).sum()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.csize)).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: ImageId,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Free-form build stamp (a build number or VCS revision).
    pub stamp: String,
    /// Unix seconds.
    pub created: u64,
    pub description: String,
    pub author: String,
    /// The image this one was derived from.
    pub base: Option<ImageId>,
    pub kind: ImageKind,
    /// Size of the source disk (or partition, for a partition image).
    pub source_size: u64,
    pub sector_size: u32,
    pub window_size: u64,
    pub table: Option<PartitionTable>,
    pub segments: Vec<Segment>,
    /// Unix seconds after which loaders refuse the image.
    pub expires: Option<u64>,
}

impl Manifest {
    pub fn raw_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::raw_bytes).sum()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::stored_bytes).sum()
    }

    pub fn chunk_count(&self) -> usize {
        self.segments.iter().map(|s| s.chunks.len()).sum()
    }

    /// Every chunk reference, segment by segment.
    pub fn chunks(&self) -> impl Iterator<Item = (&Segment, &ChunkRef)> {
        self.segments.iter().flat_map(|s| s.chunks.iter().map(move |c| (s, c)))
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC);
        w.u16(FORMAT);
        w.raw(&self.id.0);
        for s in [&self.name, &self.version, &self.arch, &self.stamp] {
            w.str(s);
        }
        w.u64(self.created);
        w.str(&self.description);
        w.str(&self.author);
        w.option(self.base.as_ref(), |w, b| w.raw(&b.0));
        w.u8(match self.kind {
            ImageKind::WholeDisk => 0,
            ImageKind::Partition => 1,
            ImageKind::Combo => 2,
        });
        w.u64(self.source_size);
        w.u32(self.sector_size);
        w.u64(self.window_size);
        w.option(self.table.as_ref(), encode_table);
        w.count(self.segments.len());
        for s in &self.segments {
            encode_segment(&mut w, s);
        }
        w.option(self.expires.as_ref(), |w, e| w.u64(*e));
        w.into_bytes()
    }

    /// Decodes untrusted bytes, checking every bound and invariant.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(DecodeError::TooLong {
                what: "manifest",
                len: bytes.len() as u64,
                max: MAX_MANIFEST_BYTES as u64,
            });
        }
        let mut r = Reader::new(bytes);
        if r.take(8, "manifest magic")? != MAGIC || r.u16("manifest format")? != FORMAT {
            return Err(DecodeError::BadMagic("manifest"));
        }
        let id = ImageId(r.array("image id")?);
        let name = r.str(MAX_TEXT, "name")?;
        let version = r.str(MAX_TEXT, "version")?;
        let arch = r.str(MAX_TEXT, "arch")?;
        let stamp = r.str(MAX_TEXT, "stamp")?;
        let created = r.u64("created")?;
        let description = r.str(MAX_DESCRIPTION, "description")?;
        let author = r.str(MAX_TEXT, "author")?;
        let base = if r.option("base")? { Some(ImageId(r.array("base")?)) } else { None };
        let kind = match r.u8("kind")? {
            0 => ImageKind::WholeDisk,
            1 => ImageKind::Partition,
            2 => ImageKind::Combo,
            _ => return Err(DecodeError::Invalid("kind")),
        };
        let source_size = r.u64("source size")?;
        let sector_size = r.u32("sector size")?;
        if !(512..=65536).contains(&sector_size) || !sector_size.is_power_of_two() {
            return Err(DecodeError::Invalid("sector size"));
        }
        let window_size = r.u64("window size")?;
        if window_size != WINDOW_SIZE {
            return Err(DecodeError::Invalid("window size"));
        }
        let table = if r.option("table")? { Some(decode_table(&mut r, source_size)?) } else { None };
        let n = r.count(MAX_SEGMENTS, 14, "segments")?;
        let mut segments = Vec::with_capacity(n);
        for _ in 0..n {
            segments.push(decode_segment(&mut r)?);
        }
        let expires = if r.option("expires")? { Some(r.u64("expires")?) } else { None };
        r.finish("manifest")?;
        let m = Manifest {
            id,
            name,
            version,
            arch,
            stamp,
            created,
            description,
            author,
            base,
            kind,
            source_size,
            sector_size,
            window_size,
            table,
            segments,
            expires,
        };
        m.check_segments()?;
        Ok(m)
    }

    /// Cross-field invariants: segments agree with the kind and the table.
    fn check_segments(&self) -> Result<(), DecodeError> {
        match self.kind {
            ImageKind::WholeDisk => {
                if self.segments.len() != 1 || self.segments[0].partition.is_some() {
                    return Err(DecodeError::Invalid("whole-disk image: needs exactly one disk segment"));
                }
                if self.segments[0].size != self.source_size {
                    return Err(DecodeError::Invalid("whole-disk image: segment size differs from the source"));
                }
            }
            ImageKind::Partition | ImageKind::Combo => {
                if self.segments.is_empty() || (self.kind == ImageKind::Partition && self.segments.len() != 1) {
                    return Err(DecodeError::Invalid("partition image: wrong number of segments"));
                }
                let mut seen = Vec::new();
                for s in &self.segments {
                    let n =
                        s.partition.ok_or(DecodeError::Invalid("partition image: a segment without a partition"))?;
                    if seen.contains(&n) {
                        return Err(DecodeError::Invalid("partition image: a partition appears twice"));
                    }
                    seen.push(n);
                    if let Some(t) = &self.table {
                        let p =
                            t.partitions.iter().find(|p| p.number == n).ok_or(DecodeError::Invalid(
                                "partition image: segment for a partition not in the table",
                            ))?;
                        if p.size != s.size {
                            return Err(DecodeError::Invalid(
                                "partition image: segment size differs from the partition",
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn encode_table(w: &mut Writer, t: &PartitionTable) {
    w.u8(match t.kind {
        TableKind::Mbr => 0,
        TableKind::Gpt => 1,
    });
    w.bytes(&t.disk_id);
    w.count(t.partitions.len());
    for p in &t.partitions {
        w.u32(p.number);
        w.u64(p.start);
        w.u64(p.size);
        match p.ptype {
            PartType::Mbr(b) => {
                w.u8(0);
                w.u8(b);
            }
            PartType::Gpt(g) => {
                w.u8(1);
                w.raw(&g);
            }
        }
        w.option(p.guid.as_ref(), |w, g| w.raw(g));
        w.str(&p.name);
        w.bool(p.bootable);
        w.u8(fs_code(p.fs));
        w.str(&p.fs_label);
        w.option(p.os.as_ref(), |w, s| w.str(s));
    }
}

fn fs_code(fs: FsKind) -> u8 {
    match fs {
        FsKind::Unknown => 0,
        FsKind::Ext2 => 1,
        FsKind::Ext3 => 2,
        FsKind::Ext4 => 3,
        FsKind::Swap => 4,
        FsKind::Extended => 5,
    }
}

fn decode_fs(r: &mut Reader<'_>) -> Result<FsKind, DecodeError> {
    Ok(match r.u8("filesystem")? {
        0 => FsKind::Unknown,
        1 => FsKind::Ext2,
        2 => FsKind::Ext3,
        3 => FsKind::Ext4,
        4 => FsKind::Swap,
        5 => FsKind::Extended,
        _ => return Err(DecodeError::Invalid("filesystem")),
    })
}

fn decode_table(r: &mut Reader<'_>, disk: u64) -> Result<PartitionTable, DecodeError> {
    let kind = match r.u8("table kind")? {
        0 => TableKind::Mbr,
        1 => TableKind::Gpt,
        _ => return Err(DecodeError::Invalid("table kind")),
    };
    let disk_id = r.bytes(16, "disk id")?.to_vec();
    let want = if kind == TableKind::Mbr { 4 } else { 16 };
    if disk_id.len() != want {
        return Err(DecodeError::Invalid("disk id length"));
    }
    let n = r.count(MAX_PARTITIONS, 30, "partitions")?;
    let mut partitions: Vec<Partition> = Vec::with_capacity(n);
    for _ in 0..n {
        let number = r.u32("partition number")?;
        let start = r.u64("partition start")?;
        let size = r.u64("partition size")?;
        let end = start.checked_add(size).ok_or(DecodeError::Invalid("partition end"))?;
        if number == 0 || size == 0 || end > disk {
            return Err(DecodeError::Invalid("partition bounds"));
        }
        if partitions.last().is_some_and(|p| p.number >= number) {
            return Err(DecodeError::Invalid("partition numbers: not increasing"));
        }
        let ptype = match r.u8("partition type tag")? {
            0 => PartType::Mbr(r.u8("mbr type")?),
            1 => PartType::Gpt(r.array("gpt type")?),
            _ => return Err(DecodeError::Invalid("partition type tag")),
        };
        let guid = if r.option("partition guid")? { Some(r.array("partition guid")?) } else { None };
        let name = r.str(MAX_TEXT, "partition name")?;
        let bootable = r.bool("bootable")?;
        let fs = decode_fs(r)?;
        let fs_label = r.str(MAX_TEXT, "filesystem label")?;
        let os = if r.option("os")? { Some(r.str(MAX_TEXT, "os")?) } else { None };
        partitions.push(Partition { number, start, size, ptype, guid, name, bootable, fs, fs_label, os });
    }
    Ok(PartitionTable { kind, disk_id, partitions })
}

fn encode_segment(w: &mut Writer, s: &Segment) {
    w.option(s.partition.as_ref(), |w, p| w.u32(*p));
    w.u64(s.size);
    w.u8(fs_code(s.fs));
    w.count(s.chunks.len());
    for c in &s.chunks {
        w.u64(c.window);
        w.raw(&c.hash.0);
        w.raw(&c.raw_hash.0);
        w.u32(c.csize);
        w.u32(c.rsize);
        w.count(c.extents.len());
        for e in &c.extents {
            w.u32(e.offset);
            w.u32(e.len);
        }
    }
    w.count(s.zero.len());
    for z in &s.zero {
        w.u64(z.start);
        w.u64(z.len);
    }
}

fn decode_segment(r: &mut Reader<'_>) -> Result<Segment, DecodeError> {
    let partition = if r.option("segment partition")? { Some(r.u32("segment partition")?) } else { None };
    let size = r.u64("segment size")?;
    let fs = decode_fs(r)?;
    let windows = size.div_ceil(WINDOW_SIZE);
    let max_chunks = u32::try_from(windows).unwrap_or(u32::MAX);
    let n = r.count(max_chunks, 84, "chunks")?;
    let mut chunks: Vec<ChunkRef> = Vec::with_capacity(n);
    for _ in 0..n {
        let window = r.u64("chunk window")?;
        if window >= windows || chunks.last().is_some_and(|c| c.window >= window) {
            return Err(DecodeError::Invalid("chunk window: out of order or past the segment"));
        }
        let hash = ChunkHash(r.array("chunk hash")?);
        let raw_hash = RawHash(r.array("chunk raw hash")?);
        let csize = r.u32("chunk size")?;
        let rsize = r.u32("chunk raw size")?;
        let ne = r.count(MAX_EXTENTS, 8, "chunk extents")?;
        let mut extents = Vec::with_capacity(ne);
        for _ in 0..ne {
            extents.push(Extent { offset: r.u32("extent offset")?, len: r.u32("extent length")? });
        }
        if check_extents(&extents)? != rsize || csize as usize > MAX_CHUNK_BYTES || csize == 0 {
            return Err(DecodeError::Invalid("chunk sizes"));
        }
        // The last window may be partial: its extents must end inside the segment.
        let last_end = extents.last().map_or(0, |e| e.end());
        if window * WINDOW_SIZE + last_end > size {
            return Err(DecodeError::Invalid("chunk extents: past the segment"));
        }
        chunks.push(ChunkRef { window, hash, raw_hash, csize, rsize, extents });
    }
    let nz = r.count(MAX_ZERO_RANGES, 16, "zero ranges")?;
    let mut zero: Vec<ByteRange> = Vec::with_capacity(nz);
    for _ in 0..nz {
        let start = r.u64("zero start")?;
        let len = r.u64("zero length")?;
        let end = start.checked_add(len).ok_or(DecodeError::Invalid("zero range"))?;
        if len == 0 || end > size || zero.last().is_some_and(|z| z.start + z.len >= start) {
            return Err(DecodeError::Invalid("zero ranges: empty, unsorted, adjacent or past the segment"));
        }
        zero.push(ByteRange { start, len });
    }
    Ok(Segment { partition, size, fs, chunks, zero })
}

/// Why a signed manifest was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// the envelope or the manifest inside it is malformed
    #[error("malformed manifest")]
    Decode(#[from] DecodeError),
    /// the signer's key is not one we trust
    #[error("manifest signed by untrusted key {0}")]
    UntrustedKey(KeyId),
    /// the signature does not match the manifest and key
    #[error("manifest signature is invalid")]
    BadSignature,
}

/// A manifest as it is stored and sent: canonical bytes, signer, signature.
#[derive(Clone, Debug)]
pub struct SignedManifest {
    bytes: Vec<u8>,
    signer: KeyId,
    signature: [u8; 64],
}

/// A manifest whose signature checked out against a trusted key.
#[derive(Clone, Debug)]
pub struct VerifiedManifest {
    pub manifest: Manifest,
    pub signer: KeyId,
}

impl SignedManifest {
    pub fn sign(manifest: &Manifest, key: &SigningKey) -> SignedManifest {
        let bytes = manifest.encode();
        let signature = key.sign(&signing_input(&bytes)).to_bytes();
        SignedManifest { bytes, signer: KeyId(key.verifying_key().to_bytes()), signature }
    }

    pub fn signer(&self) -> KeyId {
        self.signer
    }

    /// The envelope: manifest length, manifest, signer key, signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&self.bytes);
        w.raw(&self.signer.0);
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// Splits an envelope from untrusted bytes; checks nothing else yet.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedManifest, DecodeError> {
        let mut r = Reader::new(bytes);
        let max = u32::try_from(MAX_MANIFEST_BYTES).unwrap_or(u32::MAX);
        let body = r.bytes(max, "signed manifest")?.to_vec();
        let signer = KeyId(r.array("signer")?);
        let signature = r.array("signature")?;
        r.finish("signed manifest")?;
        Ok(SignedManifest { bytes: body, signer, signature })
    }

    /// Checks the signature against the trusted keys, then decodes.
    pub fn verify(&self, trusted: &[KeyId]) -> Result<VerifiedManifest, SignatureError> {
        if !trusted.contains(&self.signer) {
            return Err(SignatureError::UntrustedKey(self.signer));
        }
        let key = VerifyingKey::from_bytes(&self.signer.0).map_err(|_| SignatureError::BadSignature)?;
        let sig = Signature::from_bytes(&self.signature);
        key.verify_strict(&signing_input(&self.bytes), &sig).map_err(|_| SignatureError::BadSignature)?;
        let manifest = Manifest::decode(&self.bytes)?;
        Ok(VerifiedManifest { manifest, signer: self.signer })
    }

    /// Decodes without checking the signature: for `shoal image info` on a
    /// manifest whose signature failed, so the operator can see what it is.
    pub fn decode_unverified(&self) -> Result<Manifest, DecodeError> {
        Manifest::decode(&self.bytes)
    }
}

fn signing_input(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIGNING_CONTEXT.len() + bytes.len());
    v.extend_from_slice(SIGNING_CONTEXT);
    v.extend_from_slice(bytes);
    v
}

#[cfg(test)]
mod tests;
