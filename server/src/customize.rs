//! `shoal image customize NAME`: installs `shoal-agent firstboot` into an
//! image, for images without cloud-init.
//!
//! 1. the image deployed to a sparse scratch file in the store (removed at
//!    the end, or by `gc` after a crash);
//! 2. its root filesystem found: the first ext2/3/4 partition (or the
//!    whole file, for a partition image) that holds `/etc`, mounted with
//!    `shoal_agent::mount` (loop device, nosuid, nodev);
//! 3. the agent binary copied to `/usr/local/sbin/shoal-agent`, and a hook
//!    that runs `shoal-agent firstboot` early at boot: a systemd unit
//!    (`shoal-firstboot.service`, ordered before sshd and the gettys so a
//!    console login sees the initial password) or a line in
//!    `/etc/rc.local`;
//! 4. the disk captured back into the store as a new version of the image
//!    (base: the original) with the ordinary capture.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{anyhow, Context};
use shoal_agent::device::Device;
use shoal_agent::mount::Mounted;

use crate::cli::{CustomizeArgs, Describe, Hook};
use crate::image::{capture_into, check_expiry, deploy_onto, open_dest, threads, Failure, Out, Scratch};
use crate::store::Store;

/// Where the agent goes in the image.
pub const AGENT_PATH: &str = "usr/local/sbin/shoal-agent";
/// The systemd unit's name.
pub const UNIT: &str = "shoal-firstboot.service";

/// The systemd unit that runs first boot against `url`.
pub fn unit(url: &str) -> String {
    format!(
        "[Unit]\n\
         Description=Shoal first-boot configuration (hostname, SSH keys, initial password, user-data)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         Before=ssh.service sshd.service getty.target serial-getty@ttyS0.service systemd-user-sessions.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart=/{AGENT_PATH} firstboot --url {url}\n\
         StandardOutput=journal+console\n\
         StandardError=journal+console\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// `/etc/rc.local` with the first-boot line, before a final `exit 0` if
/// there is one; unchanged if the line is there already.
pub fn rc_local_with(old: &str, url: &str) -> String {
    let line = format!("/{AGENT_PATH} firstboot --url {url}");
    if old.lines().any(|l| l.trim() == line) {
        return old.to_string();
    }
    let mut lines: Vec<&str> = if old.is_empty() { vec!["#!/bin/sh"] } else { old.lines().collect() };
    let at = lines.iter().rposition(|l| l.trim() == "exit 0").unwrap_or(lines.len());
    lines.insert(at, &line);
    lines.join("\n") + "\n"
}

/// A metadata URL goes into a unit file and a shell script: only plain
/// `http://host[:port][/path]` is taken.
fn check_url(url: &str) -> anyhow::Result<()> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("--url {url:?}: expected http://HOST[:PORT]"))?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".:-_/[]".contains(&b)) {
        return Err(anyhow!("--url {url:?}: only letters, digits and . : - _ / [ ] may follow http://"));
    }
    Ok(())
}

pub(crate) fn run(store: &Store, a: &CustomizeArgs, out: &Out) -> Result<(), Failure> {
    check_url(&a.url).map_err(Failure::Usage)?;
    let agent = fs::read(&a.agent).with_context(|| format!("reading the agent {}", a.agent.display()))?;
    let img = store.resolve(&a.image).map_err(|e| Failure::Other(e.into()))?;
    check_expiry(&img)?;
    let m = &img.manifest;
    let disk = Scratch(store.scratch(&format!("customize-{}.raw", std::process::id())));
    let (dest, _) = open_dest(m, &disk.0, None)?;
    deploy_onto(store, m, &dest, None, shoal_agent::deploy::FreePolicy::Leave, threads(None), out)?;
    drop(dest);
    install(&disk.0, &agent, a.hook, &a.url)?;
    let describe = Describe {
        name: m.name.clone(),
        version: a.version.clone().unwrap_or_else(|| format!("{}+firstboot", m.version)),
        description: if m.description.is_empty() {
            "with shoal-agent firstboot".into()
        } else {
            format!("{} (with shoal-agent firstboot)", m.description)
        },
        arch: m.arch.clone(),
        stamp: m.stamp.clone(),
        author: m.author.clone(),
        base: Some(m.id.to_hex()),
    };
    capture_into(store, &disk.0, &[], &[], &describe, &a.tuning, out)?;
    Ok(())
}

/// Steps 2 and 3 on the deployed disk file.
fn install(disk: &Path, agent: &[u8], hook: Hook, url: &str) -> anyhow::Result<()> {
    let parent = disk.parent().ok_or_else(|| anyhow!("{}: no parent directory", disk.display()))?;
    let regions: Vec<(u64, u64)> = {
        let dev = Device::open(disk)?;
        match shoal_agent::table::probe(&dev, dev.size())? {
            Some(t) => t.partitions.iter().map(|p| (p.start, p.size)).collect(),
            None => vec![(0, dev.size())],
        }
    };
    for (start, size) in regions {
        // Partitions that are not ext, or not a root, are passed over.
        let Ok(m) = Mounted::ext(disk, start, size, parent) else { continue };
        if !m.dir().join("etc").is_dir() {
            m.unmount().context("unmounting a partition that is not the root")?;
            continue;
        }
        let root = m.dir().to_path_buf();
        write(&root.join(AGENT_PATH), agent, 0o755)?;
        match hook {
            Hook::Systemd => {
                let units = root.join("etc/systemd/system");
                write(&units.join(UNIT), unit(url).as_bytes(), 0o644)?;
                let wants = units.join("multi-user.target.wants");
                fs::create_dir_all(&wants).context("creating multi-user.target.wants")?;
                let link = wants.join(UNIT);
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(format!("/etc/systemd/system/{UNIT}"), &link)
                    .context("enabling the unit")?;
            }
            Hook::RcLocal => {
                let rc = root.join("etc/rc.local");
                let old = fs::read_to_string(&rc).unwrap_or_default();
                write(&rc, rc_local_with(&old, url).as_bytes(), 0o755)?;
            }
        }
        m.unmount().context("unmounting the root filesystem")?;
        return Ok(());
    }
    Err(anyhow!("no ext2/3/4 filesystem with an /etc in the image"))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // A symlink planted in the image must not redirect the write.
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(path).with_context(|| format!("removing the symlink {}", path.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rc_local_line_goes_before_exit_and_only_once() {
        let url = "http://169.254.169.254";
        let once = rc_local_with("#!/bin/sh -e\necho hi\nexit 0\n", url);
        assert_eq!(once, format!("#!/bin/sh -e\necho hi\n/{AGENT_PATH} firstboot --url {url}\nexit 0\n"));
        assert_eq!(rc_local_with(&once, url), once);
        assert!(rc_local_with("", url).starts_with("#!/bin/sh\n/usr/local/sbin/shoal-agent firstboot"));
    }

    #[test]
    fn urls_that_could_break_the_unit_or_script_are_refused() {
        assert!(check_url("http://169.254.169.254").is_ok() && check_url("http://10.0.0.1:4870/").is_ok());
        for bad in ["https://x", "http://", "http://a b", "http://x;reboot", "http://x\nExecStart=/bin/sh", "ftp://x"] {
            assert!(check_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_unit_runs_before_logins_are_possible() {
        let u = unit("http://169.254.169.254");
        assert!(u.contains("ExecStart=/usr/local/sbin/shoal-agent firstboot --url http://169.254.169.254\n"));
        assert!(u.contains("Before=ssh.service") && u.contains("getty.target"));
    }
}
