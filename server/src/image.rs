//! The offline image commands: capture, deploy, verify, info, list,
//! import, export, delete, gc. Each parses nothing itself (see `cli`),
//! calls the disk library and the store, and reports in text or JSON.

use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use serde_json::json;
use shoal_agent::capture::{capture, Progress};
use shoal_agent::deploy::{deploy, precheck, ChunkSource, FreePolicy};
use shoal_agent::device::Device;
use shoal_agent::place::{place, Target};
use shoal_agent::{check, plan};
use shoal_proto::chunk;
use shoal_proto::manifest::{ImageKind, Manifest, SignedManifest, TableKind};
use shoal_proto::ImageId;

use crate::cli::{self, Cli, Command, ImageCommand};
use crate::progress::with_bar;
use crate::store::{Store, StoredImage};

/// How a command failed, for the exit code.
pub enum Failure {
    /// An image or target did not verify (exit 3).
    Verify(anyhow::Error),
    /// Arguments or configuration files that make no sense (exit 2).
    Usage(anyhow::Error),
    /// Anything else (exit 1).
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.into())
    }
}

type Result<T> = std::result::Result<T, Failure>;

pub fn run(cli: &Cli) -> Result<()> {
    let cmd = match &cli.command {
        Command::Image(cmd) => cmd,
        Command::Server(a) => return serve(cli, a),
        Command::Initramfs(cli::InitramfsCommand::Build(a)) => return Ok(crate::initramfs::build(a, cli.json)?),
        Command::Project(_) | Command::Token(_) | Command::Node(_) | Command::Job(_) | Command::Status => {
            return Ok(crate::client::run(cli)?)
        }
        Command::Key => {
            let store = Store::open(&cli.data_dir)
                .with_context(|| format!("opening the store at {}", cli.data_dir.display()))?;
            println!("{}", store.keys().public());
            return Ok(());
        }
    };
    let out = Out { json: cli.json, quiet: cli.quiet || cli.json };
    let store =
        || Store::open(&cli.data_dir).with_context(|| format!("opening the store at {}", cli.data_dir.display()));
    match cmd {
        ImageCommand::Capture(a) => {
            let store = store()?;
            capture_into(&store, &a.src, &a.partition, &a.os, &a.describe, &a.tuning, &out)?;
            Ok(())
        }
        ImageCommand::Build(a) => crate::build::run(&store()?, a, &out),
        ImageCommand::Customize(a) => crate::customize::run(&store()?, a, &out),
        ImageCommand::Deploy(a) => deploy_cmd(&store()?, a, &out),
        ImageCommand::Verify(a) => verify_cmd(&store()?, a, &out),
        ImageCommand::Info(a) => info_cmd(&store()?, &a.image, &out),
        ImageCommand::List => list_cmd(&store()?, &out),
        ImageCommand::Import(a) => import_cmd(&store()?, a, &out),
        ImageCommand::Export(a) => export_cmd(&store()?, a, &out),
        ImageCommand::Create(a) => Ok(crate::client::image_create(cli, a)?),
        ImageCommand::Snapshot(a) => Ok(crate::client::image_snapshot(cli, a)?),
        ImageCommand::Share(a) => Ok(crate::client::image_share(cli, a, true)?),
        ImageCommand::Unshare(a) => Ok(crate::client::image_share(cli, a, false)?),
        ImageCommand::Delete(a) if cli.url.is_some() => Ok(crate::client::image_delete(cli, &a.image)?),
        ImageCommand::Delete(a) => {
            let store = store()?;
            let img = store.resolve(&a.image)?;
            store.delete(&img)?;
            if let Err(e) = crate::catalog::forget_in(store.root(), &img.manifest.id) {
                out.warn(&format!("deleted, but still in the catalog: {}", chain(&e)));
            }
            out.done(
                json!({"deleted": img.manifest.id, "name": img.manifest.name}),
                format!(
                    "deleted {} ({}:{}); run `shoal image gc` to free its chunks",
                    img.manifest.id, img.manifest.name, img.manifest.version
                ),
            );
            Ok(())
        }
        ImageCommand::Gc(a) => {
            let stats = store()?.gc(a.dry_run)?;
            let verb = if a.dry_run { "would remove" } else { "removed" };
            out.done(
                serde_json::to_value(&stats)?,
                format!(
                    "{verb} {} chunks ({}) and {} leftovers; kept {} chunks used by {} images",
                    stats.chunks_removed,
                    human(stats.bytes_removed),
                    stats.tmp_removed,
                    stats.chunks_kept,
                    stats.images
                ),
            );
            Ok(())
        }
    }
}

fn serve(cli: &Cli, a: &cli::ServerArgs) -> Result<()> {
    use crate::serve::{netboot, nodes};
    let netboot =
        netboot::Netboot::from_args(&a.boot, a.listen, &cli.data_dir).map_err(|e| Failure::Usage(e.into()))?;
    // Without a nodes file, network boot reads the control plane's catalog.
    let catalog: Option<std::sync::Arc<dyn nodes::NodeCatalog>> = match &netboot.nodes {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| netboot::NetbootError::NodesRead { path: path.clone(), source })?;
            let table = nodes::NodeTable::parse(&text)
                .map_err(|source| netboot::NetbootError::Nodes { path: path.clone(), source })
                .map_err(|e| Failure::Usage(e.into()))?;
            netboot.check_nodes(&table).map_err(|e| Failure::Usage(e.into()))?;
            Some(std::sync::Arc::new(table))
        }
        None => None,
    };
    let store =
        Store::open(&cli.data_dir).with_context(|| format!("opening the store at {}", cli.data_dir.display()))?;
    let mut sessions = crate::serve::default_session_config();
    sessions.iface = a.mcast_iface;
    sessions.group_base = a.group_base;
    sessions.port = a.mcast_port;
    sessions.ttl = a.ttl;
    sessions.max_rate = a.rate_mbit * 1_000_000 / 8;
    sessions.idle = std::time::Duration::from_secs(a.idle_secs);
    let j = &a.jobs;
    let secs = std::time::Duration::from_secs;
    let runner = crate::jobs::RunnerConfig {
        timeouts: crate::jobs::plan::Timeouts {
            agent: secs(j.agent_timeout_secs),
            power_retries: j.power_retries,
            heartbeat: secs(j.heartbeat_timeout_secs),
            first_boot: secs(j.first_boot_timeout_secs),
            reboot_after: secs(j.reboot_after_secs),
        },
        power: crate::power::PowerSettings {
            timeout: secs(j.power_timeout_secs),
            ipmi_password_file: j.ipmi_password_file.clone(),
            ipmi_user: j.ipmi_user.clone(),
            ipmi_cipher: j.ipmi_cipher,
            redfish_credentials: j.redfish_credentials.clone(),
        },
        tick: secs(1),
    };
    let webhook = match &j.webhook {
        Some(u) if !u.starts_with("http://") => {
            return Err(Failure::Usage(anyhow::anyhow!("--webhook {u:?}: only http:// URLs are supported")))
        }
        Some(u) => Some(crate::jobs::webhook::WebhookConfig::new(u.clone())),
        None => None,
    };
    let config = crate::serve::ServerConfig {
        listen: a.listen,
        sessions,
        netboot,
        runner,
        first_boot_wait: j.first_boot_wait,
        webhook,
        metadata_listen: a.metadata_listen,
        metadata_zone: a.metadata_zone.clone(),
    };
    crate::serve::run(store, config, catalog)?;
    Ok(())
}

/// Where results go: JSON on stdout, or text.
pub(crate) struct Out {
    json: bool,
    quiet: bool,
}

impl Out {
    fn done(&self, value: serde_json::Value, text: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }

    fn warn(&self, w: &str) {
        eprintln!("warning: {w}");
    }
}

pub(crate) fn threads(n: Option<usize>) -> usize {
    n.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Applies `--os [N=]NAME` to the plan's partition table.
fn set_os(plan: &mut plan::Plan, partitions: &[u32], os: &[String]) -> Result<()> {
    for spec in os {
        let (n, name) = match spec.split_once('=') {
            Some((n, name)) => {
                let n = n.parse::<u32>().map_err(|_| anyhow!("--os {spec}: N must be a partition number"))?;
                (n, name)
            }
            None if partitions.len() == 1 => (partitions[0], spec.as_str()),
            None => return Err(anyhow!("--os {spec}: say which partition, as --os N={spec}").into()),
        };
        let table = plan.table.as_mut().ok_or_else(|| anyhow!("--os: the source has no partition table"))?;
        let p = table.partitions.iter_mut().find(|p| p.number == n).ok_or_else(|| anyhow!("--os: no partition {n}"))?;
        p.os = Some(name.to_string());
    }
    Ok(())
}

pub(crate) fn capture_into(
    store: &Store,
    src: &Path,
    partitions: &[u32],
    os: &[String],
    d: &cli::Describe,
    t: &cli::Tuning,
    out: &Out,
) -> Result<ImageId> {
    let dev = Device::open(src)?;
    dev.advise_sequential();
    let mut plan =
        plan::plan(&dev, partitions).with_context(|| format!("planning the capture of {}", src.display()))?;
    set_os(&mut plan, partitions, os)?;
    for w in &plan.warnings {
        out.warn(w);
    }
    let base = match &d.base {
        Some(b) => Some(store.resolve(b).context("--base")?.manifest.id),
        None => None,
    };
    let txn = store.begin()?;
    let progress = Progress::default();
    let (segments, stats) = with_bar("capture", out.quiet, &progress, || {
        capture(&dev, &plan, &txn, t.level, threads(t.threads), &progress)
    })
    .with_context(|| format!("capturing {}", src.display()))?;
    let mut idb = [0u8; 16];
    getrandom::fill(&mut idb).map_err(|e| anyhow!("random image id: {e}"))?;
    let id = ImageId(idb);
    let m = Manifest {
        id,
        name: d.name.clone(),
        version: d.version.clone(),
        arch: d.arch.clone(),
        stamp: d.stamp.clone(),
        created: now(),
        description: d.description.clone(),
        author: d.author.clone(),
        base,
        kind: plan.kind,
        source_size: plan.source_size,
        sector_size: plan.sector_size,
        window_size: shoal_proto::WINDOW_SIZE,
        table: plan.table.clone(),
        segments,
        expires: None,
    };
    // The decoder's invariants are the format's: a manifest we would not
    // accept back must never be stored.
    Manifest::decode(&m.encode()).context("internal error: the new manifest does not decode")?;
    let signed = SignedManifest::sign(&m, store.keys().signing());
    txn.commit(&signed, &id)?;
    if let Err(e) = crate::catalog::record_in(store.root(), &m) {
        out.warn(&format!("stored, but not recorded in the catalog: {}", chain(&e)));
    }
    let secs = stats.elapsed.as_secs_f64().max(1e-9);
    out.done(
        json!({
            "id": id, "name": m.name, "version": m.version, "kind": m.kind,
            "source_size": m.source_size, "stats": stats, "warnings": plan.warnings,
        }),
        format!(
            "captured {} as {}:{} ({:?})\n  source {}; read {}, restores {}\n  {} chunks, {} stored ({} new in {} chunks)\n  {:.2} s, {}/s read",
            src.display(),
            m.name,
            m.version,
            id,
            human(m.source_size),
            human(stats.read_bytes),
            human(stats.raw_bytes),
            stats.chunks,
            human(stats.chunk_bytes),
            human(stats.new_bytes),
            stats.new_chunks,
            secs,
            human((stats.read_bytes as f64 / secs) as u64),
        )
        .replace(&format!("{id:?}"), &id.to_string()),
    );
    Ok(id)
}

pub(crate) fn check_expiry(img: &StoredImage) -> Result<()> {
    if let Some(exp) = img.manifest.expires {
        if now() > exp {
            return Err(Failure::Verify(anyhow!("image {} expired at unix time {exp}", img.manifest.id)));
        }
    }
    Ok(())
}

/// Opens DEST for writing, creating a file of the image's size if there
/// is nothing there.
pub(crate) fn open_dest(m: &Manifest, dest: &Path, partition: Option<u32>) -> Result<(Device, bool)> {
    if dest.exists() {
        return Ok((Device::open_rw(dest)?, false));
    }
    let Some(size) = shoal_agent::place::image_size(m, partition) else {
        return Err(Failure::Other(anyhow!(
            "{} does not exist, and a multi-partition image needs a partitioned disk",
            dest.display()
        )));
    };
    Ok((Device::create(dest, size)?, true))
}

fn free_policy(f: cli::Free) -> FreePolicy {
    match f {
        cli::Free::Leave => FreePolicy::Leave,
        cli::Free::Zero => FreePolicy::Zero,
        cli::Free::Discard => FreePolicy::Discard,
    }
}

fn deploy_cmd(store: &Store, a: &cli::DeployArgs, out: &Out) -> Result<()> {
    let img = store.resolve(&a.image).map_err(|e| classify(e.into()))?;
    check_expiry(&img)?;
    let m = &img.manifest;
    let (dest, created) = open_dest(m, &a.dest, a.partition)?;
    let result = deploy_onto(store, m, &dest, a.partition, free_policy(a.free), threads(a.threads), out);
    if result.is_err() && created {
        // A file we made and could not fill is of no use to anyone.
        let _ = std::fs::remove_file(&a.dest);
    }
    let (stats, grown) = result?;
    out.done(
        json!({"id": m.id, "name": m.name, "dest": a.dest, "stats": stats, "gpt_grown": grown}),
        format!(
            "deployed {}:{} ({}) to {}\n  wrote {} in {} chunks, zeroed {}, free space {} ({:?})\n  {:.2} s, {}/s",
            m.name,
            m.version,
            m.id,
            a.dest.display(),
            human(stats.written_bytes),
            stats.chunks,
            human(stats.zeroed_bytes),
            human(stats.free_bytes),
            a.free,
            stats.elapsed.as_secs_f64(),
            human((stats.written_bytes as f64 / stats.elapsed.as_secs_f64().max(1e-9)) as u64),
        ) + if grown { "\n  GPT moved to the end of the larger target" } else { "" },
    );
    Ok(())
}

/// Deploys and finishes the target: a GPT grown to a larger disk, the
/// kernel told to reread the table.
pub(crate) fn deploy_onto(
    src: &dyn ChunkSource,
    m: &Manifest,
    dest: &Device,
    partition: Option<u32>,
    free: FreePolicy,
    workers: usize,
    out: &Out,
) -> Result<(shoal_agent::deploy::DeployStats, bool)> {
    let new_table = shoal_agent::blank::table_to_create(m, dest, partition)?;
    let targets = place(m, dest, partition)?;
    precheck(m, &targets, src, workers).map_err(|e| Failure::Verify(e.into()))?;
    if let Some(writes) = new_table {
        for (off, bytes) in &writes {
            dest.write_all_at(bytes, *off)?;
        }
        dest.sync()?;
        if let Err(e) = dest.reread_partitions() {
            out.warn(&format!("the kernel did not reread the new partition table: {e}"));
        }
        out.warn("the target disk had no partition table: the image's was created");
    }
    let progress = Progress::default();
    let stats = with_bar("deploy", out.quiet, &progress, || deploy(m, &targets, src, dest, free, workers, &progress))
        .map_err(|e| match e {
        shoal_agent::deploy::DeployError::Chunk(_) => Failure::Verify(e.into()),
        e => Failure::Other(e.into()),
    })?;
    let (grown, warning) = shoal_agent::deploy::finish(m, dest, partition)?;
    if let Some(w) = warning {
        out.warn(&w);
    }
    Ok((stats, grown))
}

fn classify(e: anyhow::Error) -> Failure {
    match e.downcast_ref::<crate::store::StoreError>() {
        Some(crate::store::StoreError::Manifest { .. }) => Failure::Verify(e),
        _ => Failure::Other(e),
    }
}

fn verify_cmd(store: &Store, a: &cli::VerifyArgs, out: &Out) -> Result<()> {
    let img = store.resolve(&a.image).map_err(|e| classify(e.into()))?;
    let m = &img.manifest;
    check_expiry(&img)?;
    let problems = Mutex::new(Vec::<String>::new());
    let progress = Progress::default();
    let all: Vec<_> = m.chunks().map(|(_, c)| c).collect();
    progress.total.store(all.iter().map(|c| u64::from(c.rsize)).sum(), Ordering::Relaxed);
    let next = AtomicUsize::new(0);
    with_bar("verify", out.quiet, &progress, || {
        std::thread::scope(|s| {
            for _ in 0..threads(a.threads) {
                s.spawn(|| {
                    let Ok(mut z) = zstd::bulk::Decompressor::new() else { return };
                    loop {
                        let Some(c) = all.get(next.fetch_add(1, Ordering::Relaxed)) else { return };
                        let res = store
                            .read_chunk(&c.hash)
                            .map_err(|e| chain(&e))
                            .and_then(|b| chunk::verify(b, &c.hash, &c.raw_hash, &c.extents).map_err(|e| chain(&e)))
                            .and_then(|v| v.decompress(&mut z, Vec::new()).map_err(|e| chain(&e)));
                        if let Err(e) = res {
                            problems
                                .lock()
                                .expect("invariant: no thread panics holding it")
                                .push(format!("window {}: {e}", c.window));
                        }
                        progress.add(u64::from(c.rsize));
                    }
                });
            }
        })
    });
    let mut problems = problems.into_inner().expect("invariant: no thread panicked holding it");
    let mut target_ok = None;
    if let Some(t) = &a.target {
        let dest = Device::open(t)?;
        let targets: Vec<Target> = place(m, &dest, a.partition)?;
        // Deploy rewrites the protective MBR and primary GPT header of a
        // larger disk (the GPT is grown): those bytes may differ.
        let mut ignore = shoal_agent::ranges::RangeSet::new();
        let whole = m.kind == ImageKind::WholeDisk && a.partition.is_none();
        if whole && dest.size() > m.source_size && m.table.as_ref().is_some_and(|t| t.kind == TableKind::Gpt) {
            ignore.insert(0, 2 * u64::from(m.sector_size));
        }
        let progress = Progress::default();
        let mism = with_bar("compare", out.quiet, &progress, || {
            check::compare(m, &targets, &dest, &ignore, store, &progress)
        })?;
        target_ok = Some(mism.is_empty());
        for x in mism.iter().take(20) {
            problems.push(format!("{}: {} at byte {} (+{})", t.display(), x.what, x.offset, x.len));
        }
        if mism.len() > 20 {
            problems.push(format!("{}: {} more differences", t.display(), mism.len() - 20));
        }
    }
    out.done(
        json!({"id": m.id, "name": m.name, "chunks": all.len(), "signer": img.signer, "ok": problems.is_empty(),
               "target_matches": target_ok, "problems": problems}),
        if problems.is_empty() {
            format!(
                "{}:{} ({}): signature by {} good, {} chunks good{}",
                m.name,
                m.version,
                m.id,
                &img.signer.to_hex()[..16],
                all.len(),
                if target_ok == Some(true) {
                    format!(
                        ", {} holds the image",
                        a.target.as_ref().map_or(String::new(), |t| t.display().to_string())
                    )
                } else {
                    String::new()
                }
            )
        } else {
            problems.join("\n")
        },
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Verify(anyhow!("{} problems in {}:{}", problems.len(), m.name, m.version)))
    }
}

fn info_cmd(store: &Store, what: &str, out: &Out) -> Result<()> {
    let img = store.resolve(what).map_err(|e| classify(e.into()))?;
    let m = &img.manifest;
    if out.json {
        println!("{}", json!({"manifest": m, "signer": img.signer, "path": img.path}));
        return Ok(());
    }
    let mut s = format!(
        "id          {}\nname        {}:{}\narch        {}\nkind        {:?}\ncreated     {}\nauthor      {}\nstamp       {}\ndescription {}\nbase        {}\nsource      {} ({} bytes, {}-byte sectors)\nrestores    {}\nstored      {} in {} chunks\nsigner      {}\n",
        m.id,
        m.name,
        m.version,
        m.arch,
        m.kind,
        time_string(m.created),
        m.author,
        m.stamp,
        m.description,
        m.base.map_or("-".into(), |b| b.to_string()),
        human(m.source_size),
        m.source_size,
        m.sector_size,
        human(m.raw_bytes()),
        human(m.stored_bytes()),
        m.chunk_count(),
        img.signer,
    );
    if let Some(t) = &m.table {
        s += &format!("table       {:?}\n", t.kind);
        for p in &t.partitions {
            s += &format!(
                "  {:>3}  start {:>12}  size {:>10}  {:<8} {}{}\n",
                p.number,
                p.start,
                human(p.size),
                format!("{:?}", p.fs).to_lowercase(),
                p.fs_label,
                p.os.as_ref().map_or(String::new(), |o| format!(" ({o})"))
            );
        }
    }
    for seg in &m.segments {
        let what = seg.partition.map_or("disk".to_string(), |p| format!("partition {p}"));
        s += &format!(
            "segment     {what}: {} ({:?}), {} chunks, restores {}, {} zero ranges\n",
            human(seg.size),
            seg.fs,
            seg.chunks.len(),
            human(seg.raw_bytes()),
            seg.zero.len()
        );
    }
    print!("{s}");
    Ok(())
}

fn list_cmd(store: &Store, out: &Out) -> Result<()> {
    let (images, bad) = store.list()?;
    for e in &bad {
        out.warn(&chain(e));
    }
    if out.json {
        let v: Vec<_> = images
            .iter()
            .map(|i| {
                let m = &i.manifest;
                json!({"id": m.id, "name": m.name, "version": m.version, "kind": m.kind, "arch": m.arch,
                       "created": m.created, "source_size": m.source_size, "raw_bytes": m.raw_bytes(),
                       "stored_bytes": m.stored_bytes(), "chunks": m.chunk_count()})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    println!("{:<16} {:<24} {:<8} {:<10} {:>9} {:>9}  CREATED", "ID", "NAME", "VERSION", "KIND", "SIZE", "STORED");
    for i in &images {
        let m = &i.manifest;
        println!(
            "{:<16} {:<24} {:<8} {:<10} {:>9} {:>9}  {}",
            &m.id.to_hex()[..16],
            m.name,
            m.version,
            format!("{:?}", m.kind).to_lowercase(),
            human(m.source_size),
            human(m.stored_bytes()),
            time_string(m.created)
        );
    }
    Ok(())
}

fn import_cmd(store: &Store, a: &cli::ImportArgs, out: &Out) -> Result<()> {
    let format = qemu_format(&a.file)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => {
            a.file.file_stem().map(|s| s.to_string_lossy().into_owned()).ok_or_else(|| anyhow!("--name is needed"))?
        }
    };
    let describe = cli::Describe {
        name,
        version: a.version.clone(),
        description: a.description.clone(),
        arch: std::env::consts::ARCH.into(),
        stamp: String::new(),
        author: std::env::var("USER").unwrap_or_default(),
        base: None,
    };
    if format == "raw" {
        capture_into(store, &a.file, &[], &[], &describe, &a.tuning, out)?;
        return Ok(());
    }
    // Other formats: convert to a sparse raw file in the store's scratch
    // space (gc removes it if we die), capture that, remove it.
    let scratch = Scratch(store.scratch(&format!("import-{}.raw", std::process::id())));
    run_tool(Proc::new("qemu-img").args(["convert", "-q", "-O", "raw", "-S", "4k"]).arg(&a.file).arg(&scratch.0))?;
    capture_into(store, &scratch.0, &[], &[], &describe, &a.tuning, out)?;
    Ok(())
}

/// A file removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn qemu_format(file: &Path) -> Result<String> {
    let o = Proc::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(file)
        .output()
        .context("running qemu-img (install qemu-utils)")?;
    if !o.status.success() {
        return Err(Failure::Other(anyhow!(
            "qemu-img cannot read {}: {}",
            file.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("qemu-img info output")?;
    Ok(v["format"].as_str().unwrap_or("raw").to_string())
}

pub(crate) fn run_tool(cmd: &mut Proc) -> Result<()> {
    let o = cmd.output().with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !o.status.success() {
        return Err(Failure::Other(anyhow!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

fn export_cmd(store: &Store, a: &cli::ExportArgs, out: &Out) -> Result<()> {
    let img = store.resolve(&a.image).map_err(|e| classify(e.into()))?;
    check_expiry(&img)?;
    let m = &img.manifest;
    if m.segments.len() != 1 {
        return Err(Failure::Other(anyhow!(
            "a multi-partition image has no single file form: deploy it onto a partitioned disk instead"
        )));
    }
    if a.file.exists() {
        return Err(Failure::Other(anyhow!("{} exists; export writes a new file", a.file.display())));
    }
    let raw_path = match a.format {
        cli::ExportFormat::Raw => a.file.clone(),
        cli::ExportFormat::Qcow2 => store.scratch(&format!("export-{}.raw", std::process::id())),
    };
    let cleanup = Scratch(raw_path.clone());
    let dest = Device::create(&raw_path, m.segments[0].size)?;
    let (stats, _) = deploy_onto(store, m, &dest, None, FreePolicy::Leave, threads(None), out)?;
    if a.format == cli::ExportFormat::Qcow2 {
        run_tool(
            Proc::new("qemu-img").args(["convert", "-q", "-f", "raw", "-O", "qcow2"]).arg(&raw_path).arg(&a.file),
        )?;
    } else {
        std::mem::forget(cleanup);
    }
    out.done(
        json!({"id": m.id, "file": a.file, "format": format!("{:?}", a.format).to_lowercase(), "stats": stats}),
        format!(
            "exported {}:{} to {} ({:?}, {} of data)",
            m.name,
            m.version,
            a.file.display(),
            a.format,
            human(stats.written_bytes)
        ),
    );
    Ok(())
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

fn time_string(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Bytes in binary units.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
