//! `shoal-agent firstboot`: first-boot configuration for images without
//! cloud-init, in the manner of Eucalyptus's rc.local. It runs in the
//! installed OS (not as PID 1), early in boot, on the system at `--root`.
//!
//! Order: ask the metadata service for the instance-id (retrying while
//! the service cannot be reached; after the last try the node boots on
//! with one clear log line); if `/var/lib/shoal/firstboot/instance-id`
//! already holds it, stop (first boot ran for this instance); else fetch
//! the rest ([`fetch`]), then: set the hostname, install root's SSH keys,
//! set root's initial password hash in /etc/shadow (the service hands it
//! out once), regenerate the SSH host keys, mount the ephemeral disk,
//! write /etc/image-id, run user-data if it is a script, and last record
//! the instance-id. The file edits are pure functions in [`edit`].
//!
//! Not here: cloud-config user-data (that is cloud-init's) and network
//! configuration (the node already has its address from DHCP).

pub mod edit;
pub mod fetch;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use fetch::{FetchError, Metadata};

/// Where first boot keeps its state, under the root.
pub const STATE_DIR: &str = "var/lib/shoal/firstboot";

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct FirstbootConfig {
    pub root: PathBuf,
    pub url: String,
    /// Tries before giving up on the metadata service.
    pub attempts: u32,
    pub retry_delay: Duration,
    pub timeout: Duration,
    /// The account whose password and keys are set.
    pub user: String,
}

/// How a first boot went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Configured for this instance.
    Configured { instance_id: String, user_data_status: Option<i32> },
    /// First boot had already run for this instance.
    AlreadyDone { instance_id: String },
    /// The metadata service could not be reached; nothing was changed.
    Unreachable { attempts: u32, last: String },
}

/// Why first boot failed after reaching the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirstbootError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Edit(#[from] edit::EditError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FirstbootError + '_ {
    move |source| FirstbootError::Io { path: path.to_owned(), source }
}

/// Logs a line the way the console and journal show it.
fn log(msg: &str) {
    eprintln!("shoal-firstboot: {msg}");
}

/// Runs first boot. Unreachable service is an [`Outcome`], not an error:
/// the node must boot anyway.
pub fn run(cfg: &FirstbootConfig) -> Result<Outcome, FirstbootError> {
    let mut last = String::new();
    let mut reached = None;
    for attempt in 1..=cfg.attempts.max(1) {
        match fetch::Client::connect(&cfg.url, cfg.timeout).and_then(|c| c.instance_id().map(|id| (c, id))) {
            Ok(ok) => {
                reached = Some(ok);
                break;
            }
            Err(e @ FetchError::Transport { .. }) => {
                last = e.to_string();
                log(&format!("metadata service not reachable (attempt {attempt} of {}): {e}", cfg.attempts));
                if attempt < cfg.attempts {
                    std::thread::sleep(cfg.retry_delay);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let Some((client, instance_id)) = reached else {
        log(&format!(
            "giving up on the metadata service at {} after {} attempts; booting without first-boot configuration",
            cfg.url, cfg.attempts
        ));
        return Ok(Outcome::Unreachable { attempts: cfg.attempts, last });
    };
    let stamp = cfg.root.join(STATE_DIR).join("instance-id");
    if fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == instance_id) {
        log(&format!("already configured for instance {instance_id}"));
        return Ok(Outcome::AlreadyDone { instance_id });
    }
    log(&format!("configuring instance {instance_id}"));
    let md = client.metadata(instance_id.clone())?;
    let hash = client.initial_password_hash()?;
    let status = apply(cfg, &md, hash.as_deref())?;
    write_file(&stamp, format!("{instance_id}\n").as_bytes(), 0o644)?;
    log(&format!("instance {instance_id} configured"));
    Ok(Outcome::Configured { instance_id, user_data_status: status })
}

/// Makes the changes; answers user-data's exit status if it ran.
fn apply(cfg: &FirstbootConfig, md: &Metadata, hash: Option<&str>) -> Result<Option<i32>, FirstbootError> {
    let root = &cfg.root;
    let live = root == Path::new("/");
    if let Some(h) = &md.hostname {
        write_file(&root.join("etc/hostname"), format!("{h}\n").as_bytes(), 0o644)?;
        let hosts = root.join("etc/hosts");
        let old = fs::read_to_string(&hosts).unwrap_or_default();
        write_file(&hosts, edit::hosts_with(&old, h).as_bytes(), 0o644)?;
        if live {
            command(Command::new("hostname").arg(h), "setting the hostname");
        }
        log(&format!("hostname {h}"));
    }
    let home = if cfg.user == "root" { root.join("root") } else { root.join("home").join(&cfg.user) };
    if md.ssh_keys.is_empty() {
        log("no SSH keys in the metadata; authorized_keys left as it is");
    } else {
        let dir = home.join(".ssh");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
        let ak = dir.join("authorized_keys");
        let old = fs::read_to_string(&ak).unwrap_or_default();
        write_file(&ak, edit::authorized_keys_with(&old, &md.ssh_keys).as_bytes(), 0o600)?;
        log(&format!("{} SSH keys for {}", md.ssh_keys.len(), cfg.user));
    }
    match hash {
        Some(h) => {
            let shadow = root.join("etc/shadow");
            let old = fs::read_to_string(&shadow).map_err(io(&shadow))?;
            let mode = fs::metadata(&shadow).map_err(io(&shadow))?.permissions().mode() & 0o7777;
            let today = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
            write_file(&shadow, edit::shadow_with_hash(&old, &cfg.user, h, today)?.as_bytes(), mode)?;
            log(&format!("initial password set for {}", cfg.user));
        }
        None => log("no initial password for this instance (none, or handed out already)"),
    }
    regenerate_host_keys(root)?;
    if let Some(dev) = &md.ephemeral_disk {
        let fstab = root.join("etc/fstab");
        let old = fs::read_to_string(&fstab).unwrap_or_default();
        write_file(&fstab, edit::fstab_with(&old, dev).as_bytes(), 0o644)?;
        if live {
            mount_ephemeral(dev);
        }
    }
    let mut image = format!("instance_id={}\n", md.instance_id);
    if let Some(i) = &md.image_id {
        image = format!("image_id={i}\n{image}");
    }
    write_file(&root.join("etc/image-id"), image.as_bytes(), 0o644)?;
    run_user_data(root, md.user_data.as_deref())
}

fn regenerate_host_keys(root: &Path) -> Result<(), FirstbootError> {
    let ssh = root.join("etc/ssh");
    let Ok(entries) = fs::read_dir(&ssh) else {
        log("no /etc/ssh: no SSH host keys to regenerate");
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(e.path()).map_err(io(&e.path()))?;
        }
    }
    let mut c = Command::new("ssh-keygen");
    c.arg("-A");
    if root != Path::new("/") {
        c.arg("-f").arg(root);
    }
    if command(&mut c, "regenerating SSH host keys") {
        log("SSH host keys regenerated");
    }
    Ok(())
}

fn mount_ephemeral(dev: &str) {
    let has_fs =
        Command::new("blkid").args(["-o", "value", "-s", "TYPE", dev]).output().is_ok_and(|o| !o.stdout.is_empty());
    if !has_fs && !command(Command::new("mkfs.ext4").args(["-q", dev]), "making a filesystem on the ephemeral disk") {
        return;
    }
    let _ = fs::create_dir_all("/mnt");
    if command(Command::new("mount").arg("/mnt"), "mounting the ephemeral disk") {
        log(&format!("ephemeral disk {dev} mounted at /mnt"));
    }
}

fn run_user_data(root: &Path, ud: Option<&[u8]>) -> Result<Option<i32>, FirstbootError> {
    let Some(ud) = ud else {
        log("no user-data");
        return Ok(None);
    };
    if !edit::is_script(ud) {
        log("user-data is not a script (no #!); not run");
        return Ok(None);
    }
    let rel = format!("{STATE_DIR}/user-data");
    let path = root.join(&rel);
    write_file(&path, ud, 0o700)?;
    let logfile = root.join("var/log/shoal-firstboot-user-data.log");
    let out = fs::File::create(&logfile).map_err(io(&logfile))?;
    let err = out.try_clone().map_err(io(&logfile))?;
    let mut c = if root == Path::new("/") {
        Command::new(&path)
    } else {
        let mut c = Command::new("chroot");
        c.arg(root).arg(format!("/{rel}"));
        c
    };
    let status = c.stdout(out).stderr(err).status().map_err(io(&path))?;
    let code = status.code().unwrap_or(-1);
    log(&format!("user-data script exited with status {code} (output in /var/log/shoal-firstboot-user-data.log)"));
    Ok(Some(code))
}

/// Runs a helper; a failure is logged, not fatal.
fn command(c: &mut Command, what: &str) -> bool {
    match c.status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            log(&format!("{what} failed: {s}"));
            false
        }
        Err(e) => {
            log(&format!("{what} failed: {:?}: {e}", c.get_program()));
            false
        }
    }
}

/// Replaces `path` with `bytes` (temporary file, fsync, rename).
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FirstbootError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("shoal-tmp");
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    // Keep the owner of what it replaces (/etc/shadow is root:shadow).
    if let Ok(old) = fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid())).map_err(io(&tmp))?;
    }
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}
