//! The PXE services on their own, for `scripts/bench-pxe.sh`: our TFTP
//! server and our full-mode DHCP server, each run straight from the
//! `shoal-pxe` library until SIGTERM or SIGINT, then its counters printed
//! to stderr (so the benchmark can show what the server dropped).
//!
//! usage:
//!   shoal-pxe-bench tftp-serve --root DIR [--listen ADDR:PORT]
//!   shoal-pxe-bench dhcp-serve --server-ip IP --pool FIRST-LAST
//!                   [--netmask MASK] [--iface NAME] [--lease-file PATH]
//!
//! The DHCP server hands every MAC an address from the pool (its boot
//! policy knows no node), with the default rate limit and ports. Nothing
//! here measures: the clients (curl, atftp, tftp-hpa, Kea's perfdhcp) do.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shoal_pxe::dhcp::{self, DhcpServer, FullConfig, Mac, NodeBoot, PoolRange, ServerOptions};
use shoal_pxe::tftp::{Server, ServerConfig};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage:
  shoal-pxe-bench tftp-serve --root DIR [--listen ADDR:PORT]
  shoal-pxe-bench dhcp-serve --server-ip IP --pool FIRST-LAST [--netmask MASK] [--iface NAME] [--lease-file PATH]";

/// What to run, parsed and checked before any I/O.
#[derive(Debug)]
enum Action {
    Tftp(ServerConfig),
    Dhcp { config: dhcp::Config, options: ServerOptions },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let action = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("shoal-pxe-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal-pxe-bench: no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(action)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-pxe-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(action: Action) -> Result<(), String> {
    match action {
        Action::Tftp(config) => {
            let server = Server::bind(config).map_err(|e| e.to_string())?;
            let counters = server.counters();
            eprintln!("tftp-serve: listening on {}", server.local_addr());
            server.run(stop_signal()?).await;
            let fields = counters.snapshot().fields();
            let line: Vec<String> = fields.iter().filter(|(_, v)| *v > 0).map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!("tftp-serve: {}", line.join(" "));
        }
        Action::Dhcp { config, options } => {
            let nodes: HashMap<Mac, NodeBoot> = HashMap::new();
            let server = DhcpServer::bind(config, Arc::new(nodes), options).await.map_err(|e| error_chain(&e))?;
            let counters = server.counters();
            eprintln!("dhcp-serve: listening on {:?}", server.local_addr());
            server.run(stop_signal()?).await;
            let c = counters.snapshot();
            let drops: Vec<String> =
                c.drops().filter(|(_, n)| *n > 0).map(|(reason, n)| format!("{reason:?}={n}")).collect();
            eprintln!(
                "dhcp-serve: discover={} request={} offers={} acks={} naks={} dropped={} {}",
                c.discover,
                c.request,
                c.offers,
                c.acks,
                c.naks,
                c.dropped_total(),
                drops.join(" ")
            );
        }
    }
    Ok(())
}

/// Completes on the first SIGTERM or SIGINT.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("no SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("no SIGINT handler: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn parse(args: &[String]) -> Result<Action, String> {
    let (command, rest) = args.split_first().ok_or("no subcommand")?;
    let mut flags: HashMap<&str, &str> = HashMap::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flags.insert(flag.as_str(), value.as_str()).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }
    let mut take = |name: &str| flags.remove(name);
    let action = match command.as_str() {
        "tftp-serve" => {
            let mut config = ServerConfig::new(PathBuf::from(take("--root").ok_or("--root is required")?));
            if let Some(listen) = take("--listen") {
                config.listen = listen.parse::<SocketAddr>().map_err(|e| format!("--listen {listen}: {e}"))?;
            }
            Action::Tftp(config)
        }
        "dhcp-serve" => {
            let server_ip = ip(take("--server-ip").ok_or("--server-ip is required")?)?;
            let pool = take("--pool").ok_or("--pool is required")?;
            let (first, last) = pool.split_once('-').ok_or_else(|| format!("--pool {pool}: not FIRST-LAST"))?;
            let full = FullConfig {
                netmask: ip(take("--netmask").unwrap_or("255.255.0.0"))?,
                routers: vec![server_ip],
                dns: Vec::new(),
                domain: None,
                lease_time: Duration::from_secs(3600),
                pool: Some(PoolRange { first: ip(first)?, last: ip(last)? }),
            };
            let config = dhcp::Config::full(server_ip, full);
            config.validate().map_err(|e| e.to_string())?;
            let options = ServerOptions {
                interface: take("--iface").map(str::to_owned),
                lease_file: take("--lease-file").map(PathBuf::from),
                ..ServerOptions::default()
            };
            Action::Dhcp { config, options }
        }
        other => return Err(format!("unknown subcommand {other:?}")),
    };
    match flags.keys().next() {
        Some(unknown) => Err(format!("unknown flag {unknown}")),
        None => Ok(action),
    }
}

fn ip(s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn dhcp_serve_flags_become_a_full_mode_config_with_the_pool() {
        let a = parse(&args("dhcp-serve --server-ip 10.98.0.1 --pool 10.98.1.0-10.98.1.9 --iface veth-s")).unwrap();
        let Action::Dhcp { config, options } = a else { panic!("not dhcp: {a:?}") };
        let pool = PoolRange { first: Ipv4Addr::new(10, 98, 1, 0), last: Ipv4Addr::new(10, 98, 1, 9) };
        assert_eq!(config.pool(), Some(pool));
        assert_eq!(options.interface.as_deref(), Some("veth-s"));
        assert_eq!(options.lease_file, None);
    }

    #[test]
    fn tftp_serve_takes_root_and_listen_address() {
        let a = parse(&args("tftp-serve --root /srv/tftp --listen 10.98.0.1:6969")).unwrap();
        let Action::Tftp(config) = a else { panic!("not tftp: {a:?}") };
        assert_eq!(config.root, PathBuf::from("/srv/tftp"));
        assert_eq!(config.listen, "10.98.0.1:6969".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn unknown_repeated_missing_or_invalid_flags_are_refused() {
        for bad in [
            "",
            "serve",
            "tftp-serve",
            "tftp-serve --root /r --port 69",
            "tftp-serve --root /r --root /s",
            "tftp-serve --root",
            "dhcp-serve --server-ip 10.98.0.1",
            "dhcp-serve --server-ip 10.98.0.1 --pool 10.98.1.0",
            // The pool holds the server's own address.
            "dhcp-serve --server-ip 10.98.0.1 --pool 10.98.0.1-10.98.0.9",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} was accepted");
        }
    }
}
