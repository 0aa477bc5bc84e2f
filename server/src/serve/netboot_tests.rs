use clap::Parser;

use super::*;
use crate::cli::{Cli, Command};
use crate::serve::nodes::NodeTable;

fn netboot(args: &[&str]) -> Result<Netboot, NetbootError> {
    let mut all = vec!["shoal", "server"];
    all.extend_from_slice(args);
    let cli = Cli::try_parse_from(all).expect("arguments parse");
    let Command::Server(a) = cli.command else { panic!("not server") };
    Netboot::from_args(&a.boot, a.listen, Path::new("/data"))
}

const NODES: &str = r#"
[[node]]
name = "pc1"
mac = "52:54:00:00:00:01"
ip = "10.0.0.21"
boot = "reload debian12"
"#;

#[test]
fn boot_is_off_by_default() {
    let n = netboot(&[]).expect("valid");
    assert!(n.dhcp.is_none() && n.tftp.is_none() && n.boot.is_none());
    // A specific --listen address is enough for the scripts' URLs.
    let n = netboot(&["--listen", "10.0.0.1:8080"]).expect("valid");
    assert_eq!(n.boot.expect("boot settings").base.as_str(), "http://10.0.0.1:8080");
}

#[test]
fn full_dhcp_needs_an_address_and_builds_the_pxe_config() {
    assert!(matches!(netboot(&["--dhcp", "full"]), Err(NetbootError::NoServerIp)));
    let n = netboot(&["--dhcp", "full", "--server-ip", "10.0.0.1", "--pool", "10.0.0.100-10.0.0.150"]).expect("ok");
    let (cfg, opts) = n.dhcp.expect("dhcp");
    assert_eq!(
        cfg.pool(),
        Some(PoolRange { first: "10.0.0.100".parse().unwrap(), last: "10.0.0.150".parse().unwrap() })
    );
    assert_eq!(cfg.boot.files.get(&ClientArch::BIOS).map(String::as_str), Some("undionly.kpxe"));
    assert_eq!(cfg.boot.files.get(&ClientArch::EFI_X64).map(String::as_str), Some("ipxe.efi"));
    assert_eq!(cfg.boot.script_url, "http://{server}:4870/boot/{mac}.ipxe");
    assert_eq!(opts.lease_file, Some(PathBuf::from("/data/dhcp-leases")));
    let (listen, root) = n.tftp.expect("tftp runs with dhcp");
    assert_eq!(listen, SocketAddr::from(([0, 0, 0, 0], 69)));
    assert!(matches!(root, TftpRoot::Builtin { ref dir, .. } if dir == Path::new("/data/tftp")));
}

#[test]
fn bad_dhcp_settings_are_refused_before_anything_runs() {
    let refused = |args: &[&str]| netboot(args).expect_err("refused");
    assert!(matches!(
        refused(&["--dhcp", "proxy", "--server-ip", "10.0.0.1", "--pool", "10.0.0.5-10.0.0.9"]),
        NetbootError::NotFull
    ));
    assert!(matches!(
        refused(&["--dhcp", "full", "--server-ip", "10.0.0.1", "--pool", "10.0.0.5"]),
        NetbootError::Pool(_)
    ));
    let off_net = refused(&["--dhcp", "full", "--server-ip", "10.0.0.1", "--pool", "10.1.0.5-10.1.0.9"]);
    assert!(matches!(off_net, NetbootError::Dhcp(ConfigError::Pool(_))), "{off_net:?}");
    let mask = refused(&["--dhcp", "full", "--server-ip", "10.0.0.1", "--netmask", "255.0.255.0"]);
    assert!(matches!(mask, NetbootError::Dhcp(ConfigError::Netmask(_))));
    let arg = refused(&["--listen", "10.0.0.1:4870", "--agent-cmdline", "quiet ${evil}"]);
    assert!(matches!(arg, NetbootError::AgentArg(_)));
}

#[test]
fn nodes_are_checked_against_the_agent_and_the_subnet() {
    let nodes = NodeTable::parse(NODES).expect("valid");
    let no_agent = netboot(&["--dhcp", "full", "--server-ip", "10.0.0.1"]).expect("valid");
    assert!(matches!(no_agent.check_nodes(&nodes), Err(NetbootError::NeedsAgent(_))));
    let agent = ["--agent-kernel", "/k", "--agent-initrd", "/i"];
    let ok = netboot(&[&["--dhcp", "full", "--server-ip", "10.0.0.1"][..], &agent].concat()).expect("valid");
    ok.check_nodes(&nodes).expect("on the subnet");
    let other = netboot(&[&["--dhcp", "full", "--server-ip", "10.9.0.1"][..], &agent].concat()).expect("valid");
    assert!(matches!(other.check_nodes(&nodes), Err(NetbootError::OffSubnet { .. })));
    // Proxy mode hands out no address: any fixed address will do.
    let proxy = netboot(&[&["--dhcp", "proxy", "--server-ip", "10.9.0.1"][..], &agent].concat()).expect("valid");
    proxy.check_nodes(&nodes).expect("proxy");
}

#[test]
fn builtin_tftp_root_holds_the_configured_ipxe_binaries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (bios, efi) = (tmp.path().join("b.kpxe"), tmp.path().join("e.efi"));
    fs::write(&bios, b"bios").expect("write");
    fs::write(&efi, b"efi").expect("write");
    let root = tmp.path().join("root");
    let n = Netboot {
        tftp: Some((SocketAddr::from(([127, 0, 0, 1], 0)), TftpRoot::Builtin { dir: root.clone(), bios, efi })),
        ..netboot(&[]).expect("valid")
    };
    let cfg = n.tftp_config().expect("filled").expect("tftp");
    assert_eq!(cfg.root, root);
    assert_eq!(fs::read(root.join("undionly.kpxe")).expect("read"), b"bios");
    assert_eq!(fs::read(root.join("ipxe.efi")).expect("read"), b"efi");
    let missing = Netboot {
        tftp: Some((
            SocketAddr::from(([127, 0, 0, 1], 0)),
            TftpRoot::Builtin { dir: root, bios: tmp.path().join("nope"), efi: tmp.path().join("e.efi") },
        )),
        ..netboot(&[]).expect("valid")
    };
    assert!(matches!(missing.tftp_config(), Err(NetbootError::TftpRoot { .. })));
}
