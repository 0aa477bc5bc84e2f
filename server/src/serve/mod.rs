//! `shoal server`: the daemon. It serves images to nodes (the HTTP API in
//! [`http`], the multicast sessions in [`session`]) and boots them from
//! the network: [`netboot`] turns the command line into DHCP and TFTP
//! settings, [`nodes`] holds the registered nodes, [`boot`] renders each
//! node's iPXE script and issues agent tokens ([`token`]); [`upload`]
//! takes the images agents capture. Beside them run the job runner and
//! the webhook (`crate::jobs`).

pub mod boot;
pub mod catalog_nodes;
pub mod http;
pub mod netboot;
pub mod nodes;
pub mod pxe_metrics;
pub mod session;
pub mod token;
pub mod upload;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_pxe::dhcp::{BootPolicy, DhcpServer};
use tokio::sync::watch;

use crate::store::Store;

/// The daemon's validated configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub sessions: session::SessionConfig,
    pub netboot: netboot::Netboot,
    /// A listener of its own for the metadata service (it is always on
    /// `listen` too).
    pub metadata_listen: Option<SocketAddr>,
    pub metadata_zone: String,
    pub runner: crate::jobs::RunnerConfig,
    /// Whether reloads wait for the first-boot check-in by default.
    pub first_boot_wait: bool,
    pub webhook: Option<crate::jobs::webhook::WebhookConfig>,
}

/// Runs until SIGINT or SIGTERM. `nodes` holds the registered nodes of a
/// nodes file, already checked with [`netboot::Netboot::check_nodes`];
/// without one, network boot reads the control plane's catalog.
pub fn run(store: Store, config: ServerConfig, nodes: Option<Arc<dyn nodes::NodeCatalog>>) -> anyhow::Result<()> {
    let store = Arc::new(store);
    let sessions = session::Sessions::new(Arc::clone(&store), config.sessions.clone());
    let mut control = crate::api::control_state(Arc::clone(&store)).context("opening the catalog")?;
    control.first_boot_wait = config.first_boot_wait;
    sessions.register_metrics(&control.metrics);
    let catalog = nodes.unwrap_or_else(|| Arc::new(catalog_nodes::CatalogNodes::new(Arc::clone(&control.catalog))));
    let netboot = config.netboot;
    let boot = netboot.boot.clone().map(|s| Arc::new(boot::BootService::new(catalog, s)));
    let tftp_config = netboot.tftp_config()?;
    let app = http::App { store, sessions, boot: boot.clone(), files: Arc::new(netboot.files.clone()) };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let (stop, stopped) = watch::channel(false);
        let until_stopped = || {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        if let (Some((cfg, opts)), Some(boot)) = (netboot.dhcp, &boot) {
            let policy: Arc<dyn BootPolicy> = boot.clone();
            let dhcp = DhcpServer::bind(cfg, policy, opts).await.context("starting dhcp")?;
            pxe_metrics::dhcp(&control.metrics, dhcp.counters());
            tasks.spawn(dhcp.run(until_stopped()));
        }
        if let Some(cfg) = tftp_config {
            let tftp = shoal_pxe::tftp::Server::bind(cfg).context("starting tftp")?;
            pxe_metrics::tftp(&control.metrics, tftp.counters());
            tasks.spawn(tftp.run(until_stopped()));
        }
        let metadata = crate::metadata::router(crate::metadata::MetadataState {
            catalog: Arc::clone(&control.catalog),
            zone: config.metadata_zone.clone(),
        });
        if let Some(addr) = config.metadata_listen {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metadata service on {addr}"))?;
            tracing::info!(listen = %addr, "metadata service ready");
            let svc = metadata.clone().into_make_service_with_connect_info::<SocketAddr>();
            let stop_md = until_stopped();
            tasks.spawn(async move {
                if let Err(e) = axum::serve(l, svc).with_graceful_shutdown(stop_md).await {
                    tracing::error!("metadata service: {e}");
                }
            });
        }
        let runner = crate::jobs::Runner::new(Arc::clone(&control.catalog), config.runner, &control.metrics);
        tasks.spawn(runner.run(until_stopped()));
        if let Some(w) = config.webhook {
            tasks.spawn(crate::jobs::webhook::run(
                Arc::clone(&control.catalog),
                w,
                Arc::clone(&control.metrics),
                until_stopped(),
            ));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        tracing::info!(listen = %config.listen, group_base = %config.sessions.group_base,
            port = config.sessions.port, "shoal server ready");
        let routes = http::router(app).merge(crate::api::router(control)).merge(metadata);
        let served = axum::serve(listener, routes.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown().await;
                let _ = stop.send(true);
            })
            .await
            .context("serving HTTP");
        while tasks.join_next().await.is_some() {}
        served
    })
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Defaults: all interfaces on port 4870 for HTTP, groups from
/// 239.192.77.0 on UDP port 4871, 100 MB/s, sessions end after 60 s idle.
pub fn default_session_config() -> session::SessionConfig {
    session::SessionConfig {
        group_base: Ipv4Addr::new(239, 192, 77, 0),
        port: 4871,
        iface: Ipv4Addr::UNSPECIFIED,
        ttl: 1,
        max_rate: 100_000_000,
        idle: Duration::from_secs(60),
    }
}
