//! Tests of the partition table decoder. util-linux `sfdisk` (Debian
//! package `fdisk`) makes the tables and is the oracle for what they hold;
//! `sgdisk` (package `gdisk`) verifies grown tables; `mkfs.vfat`
//! (`dosfstools`) and `mkfs.ext4` (`e2fsprogs`) make filesystems that must
//! not pass for tables.

mod damage;
mod grow;
mod mutation;
mod oracle;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::*;

const MIB: u64 = 1 << 20;

/// A tool from util-linux, gdisk, dosfstools or e2fsprogs, found on PATH
/// or in the sbin directories, which are not on a normal user's PATH.
fn tool(name: &str) -> Command {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists());
    match found {
        Some(path) => Command::new(path),
        None => Command::new(name),
    }
}

fn run(mut cmd: Command, stdin: &str) -> Output {
    let name = format!("{cmd:?}");
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| {
            panic!("{name}: {e} (the table tests need the Debian packages fdisk, gdisk, dosfstools and e2fsprogs)")
        });
    // A tool that fails early closes its stdin: its status says why.
    let _ = child.stdin.take().expect("stdin was piped").write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("wait for the tool");
    assert!(
        out.status.success(),
        "{name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A sparse file of `size` bytes.
fn disk(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    File::create(&path).and_then(|f| f.set_len(size)).expect("create disk image");
    path
}

/// Partitions `img` with an sfdisk script.
fn sfdisk(img: &Path, script: &str) {
    let mut cmd = tool("sfdisk");
    cmd.args(["--quiet", "--no-reread", "--no-tell-kernel"]).arg(img);
    run(cmd, script);
}

fn sfdisk_json(img: &Path) -> Value {
    let mut cmd = tool("sfdisk");
    cmd.arg("--json").arg(img);
    let out = run(cmd, "");
    serde_json::from_slice(&out.stdout).expect("sfdisk --json prints json")
}

/// Partitions `img` with an sfdisk script as a disk of 4096-byte sectors.
/// sfdisk 2.38 (Debian 12) has no `--sector-size`, so this goes through
/// fdisk's `I` (load an sfdisk script) command.
fn sfdisk_4k(img: &Path, script: &str) {
    let script_path = img.with_extension("sfdisk");
    std::fs::write(&script_path, script).expect("write the sfdisk script");
    let mut cmd = tool("fdisk");
    cmd.args(["--sector-size", "4096"]).arg(img);
    run(cmd, &format!("I\n{}\nw\n", script_path.display()));
}

/// What `sfdisk --json` would say about a disk of 4096-byte sectors: fdisk
/// dumps an sfdisk script (`O`), read into the same json shape.
fn sfdisk_json_4k(img: &Path) -> Value {
    let dump_path = img.with_extension("dump");
    let mut cmd = tool("fdisk");
    cmd.args(["--sector-size", "4096"]).arg(img);
    run(cmd, &format!("O\n{}\nq\n", dump_path.display()));
    let dump = std::fs::read_to_string(&dump_path).expect("read the fdisk dump");
    dump_to_json(&dump)
}

/// Converts an sfdisk script dump to the shape of `sfdisk --json`.
fn dump_to_json(dump: &str) -> Value {
    let mut table = serde_json::Map::new();
    let mut partitions = Vec::new();
    let number = |v: &str| v.trim().parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::from(v.trim()));
    for line in dump.lines().filter(|l| !l.trim().is_empty()) {
        if let Some((node, fields)) = line.split_once(" : ") {
            let mut p = serde_json::Map::new();
            p.insert("node".into(), node.trim().into());
            for field in split_fields(fields) {
                match field.split_once('=') {
                    Some((k, v)) if k == "start" || k == "size" => p.insert(k.into(), number(v)),
                    Some((k, v)) => p.insert(k.into(), v.trim_matches('"').into()),
                    None => p.insert(field.clone(), true.into()),
                };
            }
            partitions.push(Value::Object(p));
        } else if let Some((k, v)) = line.split_once(": ") {
            let key = match k {
                "label-id" => "id",
                "first-lba" => "firstlba",
                "last-lba" => "lastlba",
                "sector-size" => "sectorsize",
                other => other,
            };
            table.insert(key.into(), number(v));
        }
    }
    table.insert("partitions".into(), partitions.into());
    serde_json::json!({ "partitiontable": table })
}

/// Splits `a=1, name="x, y", bootable` at the commas outside quotes.
fn split_fields(fields: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in fields.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

fn probe_file(img: &Path) -> Result<Option<Table>, TableError> {
    let file = File::open(img).expect("open disk image");
    let size = file.metadata().expect("stat disk image").len();
    probe(&file, size)
}

fn read_file(img: &Path) -> Vec<u8> {
    std::fs::read(img).expect("read disk image")
}

fn apply(img: &Path, writes: &[(u64, Vec<u8>)]) {
    let file = OpenOptions::new().write(true).open(img).expect("open disk image for writing");
    for (offset, bytes) in writes {
        file.write_all_at(bytes, *offset).expect("apply write");
    }
}

/// GPT attribute bits spelled as sfdisk spells them.
fn sfdisk_attrs(attributes: u64) -> String {
    let mut words = Vec::new();
    for (bit, name) in [(0, "RequiredPartition"), (1, "NoBlockIOProtocol"), (2, "LegacyBIOSBootable")] {
        if attributes & (1 << bit) != 0 {
            words.push(name.to_string());
        }
    }
    let guid_bits: Vec<String> =
        (48..64).filter(|bit| attributes & (1 << bit) != 0).map(|bit| bit.to_string()).collect();
    if !guid_bits.is_empty() {
        words.push(format!("GUID:{}", guid_bits.join(",")));
    }
    words.join(" ")
}

/// Asserts that `table` says what `sfdisk --json` says about the same disk.
fn assert_matches_sfdisk(table: &Table, json: &Value) {
    let pt = &json["partitiontable"];
    let ss = pt["sectorsize"].as_u64().expect("sectorsize");
    assert_eq!(u64::from(table.sector_size), ss, "sector size");
    match (table.kind, table.disk_id, &table.gpt) {
        (TableKind::Mbr, DiskId::Mbr(sig), None) => {
            assert_eq!(pt["label"], "dos");
            assert_eq!(pt["id"], format!("0x{sig:08x}"));
        }
        (TableKind::Gpt, DiskId::Gpt(guid), Some(layout)) => {
            assert_eq!(pt["label"], "gpt");
            assert_eq!(pt["id"], guid_string(&guid));
            assert_eq!(pt["firstlba"], layout.first_usable_lba);
            assert_eq!(pt["lastlba"], layout.last_usable_lba);
        }
        other => panic!("inconsistent table: {other:?}"),
    }
    let parts = pt["partitions"].as_array().map(Vec::as_slice).unwrap_or_default();
    assert_eq!(table.partitions.len(), parts.len(), "partition count: {:#?}", table.partitions);
    for (p, j) in table.partitions.iter().zip(parts) {
        let node = j["node"].as_str().expect("node");
        let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        assert_eq!(p.number.to_string(), node[node.len() - digits..], "number of {node}");
        assert_eq!(Some(p.start), j["start"].as_u64().map(|s| s * ss), "start of {node}");
        assert_eq!(Some(p.size), j["size"].as_u64().map(|s| s * ss), "size of {node}");
        assert_eq!(p.name, j["name"].as_str().unwrap_or(""), "name of {node}");
        match p.kind {
            PartKind::Mbr(t) => {
                assert_eq!(j["type"], format!("{t:x}"), "type of {node}");
                assert_eq!(p.bootable, j["bootable"].as_bool().unwrap_or(false), "boot flag of {node}");
                assert_eq!(p.extended, [0x05, 0x0F, 0x85].contains(&t));
                assert_eq!(p.guid, None);
            }
            PartKind::Gpt(t) => {
                assert_eq!(j["type"], guid_string(&t), "type of {node}");
                let guid = p.guid.expect("gpt partitions have a guid");
                assert_eq!(j["uuid"], guid_string(&guid), "uuid of {node}");
                assert_eq!(sfdisk_attrs(p.attributes), j["attrs"].as_str().unwrap_or(""), "attrs of {node}");
                assert_eq!(p.bootable, p.attributes & 4 != 0);
            }
        }
    }
}

/// Recomputes the entry array and header CRCs of both GPT copies of an
/// in-memory disk, so that deliberately bad fields get past the CRCs.
/// Copies whose fields point outside the disk are left alone.
fn fix_gpt_crcs(img: &mut [u8], ss: usize) {
    let last = img.len() / ss - 1;
    for at in [ss, last * ss] {
        let field = |img: &[u8], off: usize, len: usize| -> usize {
            let mut le = [0u8; 8];
            le[..len].copy_from_slice(&img[at + off..at + off + len]);
            usize::try_from(u64::from_le_bytes(le)).unwrap_or(usize::MAX)
        };
        let header_size = field(img, 12, 4);
        let entries = field(img, 72, 8).saturating_mul(ss);
        let len = field(img, 80, 4).saturating_mul(field(img, 84, 4));
        if let Some(array) = img.get(entries..entries.saturating_add(len)) {
            let crc = crc32fast::hash(array);
            img[at + 88..at + 92].copy_from_slice(&crc.to_le_bytes());
        }
        if header_size <= ss {
            img[at + 16..at + 20].fill(0);
            let crc = crc32fast::hash(&img[at..at + header_size]);
            img[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// A GPT made by sfdisk with three partitions, as an in-memory disk.
fn small_gpt(dir: &Path, size: u64, sector_size: u32) -> Vec<u8> {
    let img = disk(dir, "small-gpt.img", size);
    let script = "label: gpt\n\
                  size=1MiB, type=uefi, name=\"esp\"\n\
                  size=2MiB, type=linux, name=\"root\"\n\
                  type=swap, name=\"swap\"\n";
    match sector_size {
        4096 => sfdisk_4k(&img, script),
        _ => sfdisk(&img, script),
    }
    read_file(&img)
}

#[test]
fn guid_string_swaps_the_first_three_fields_like_sfdisk() {
    let raw = [0x67, 0x45, 0x23, 0x01, 0xAB, 0x89, 0xEF, 0xCD, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF];
    assert_eq!(guid_string(&raw), "01234567-89AB-CDEF-0123-456789ABCDEF");
}
