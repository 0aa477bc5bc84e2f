//! `shoal initramfs build`: arguments to a `shoal_initramfs::BuildConfig`,
//! the build, and its report.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;
use shoal_initramfs::{BuildConfig, ModuleName};
use shoal_proto::KeyId;

use crate::cli::InitramfsArgs;

pub fn build(a: &InitramfsArgs, as_json: bool) -> anyhow::Result<()> {
    let modules_dir = match (&a.modules_dir, &a.kernel_version) {
        (Some(dir), _) => dir.clone(),
        (None, Some(v)) => PathBuf::from("/lib/modules").join(v),
        // clap's "kernel" group requires one of the two.
        (None, None) => anyhow::bail!("--kernel-version or --modules-dir is required"),
    };
    let text = std::fs::read_to_string(&a.key).with_context(|| format!("reading {}", a.key.display()))?;
    let key: KeyId =
        text.trim().parse().map_err(|_| anyhow::anyhow!("{}: not a hex ed25519 public key", a.key.display()))?;
    let mut cfg = BuildConfig::new(modules_dir, a.agent.clone(), key);
    cfg.busybox = a.busybox.clone();
    for m in &a.module {
        let m = ModuleName::new(m);
        if !cfg.modules.contains(&m) {
            cfg.modules.push(m);
        }
    }
    let r = shoal_initramfs::build_to(&cfg, &a.out)?;
    if as_json {
        println!("{}", json!({"out": a.out, "report": r}));
        return Ok(());
    }
    println!(
        "wrote {}: {} bytes ({} uncompressed, {} entries); agent {} bytes; {} modules",
        a.out.display(),
        r.compressed_bytes,
        r.cpio_bytes,
        r.entries,
        r.agent_bytes,
        r.modules.len()
    );
    if !r.builtin.is_empty() {
        println!("built into the kernel: {}", r.builtin.join(" "));
    }
    if !r.absent.is_empty() {
        println!("not in this kernel: {}", r.absent.join(" "));
    }
    Ok(())
}
