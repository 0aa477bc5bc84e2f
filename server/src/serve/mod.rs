//! `shoal server`: the daemon. Today it serves images to nodes: the HTTP
//! API in [`http`] and the multicast sessions in [`session`].

pub mod http;
pub mod session;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::store::Store;

/// The daemon's validated configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub sessions: session::SessionConfig,
}

/// Runs until SIGINT or SIGTERM.
pub fn run(store: Store, config: ServerConfig) -> anyhow::Result<()> {
    let store = Arc::new(store);
    let sessions = session::Sessions::new(Arc::clone(&store), config.sessions.clone());
    let control = crate::api::control_state(Arc::clone(&store)).context("opening the catalog")?;
    let app = http::App { store, sessions };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        tracing::info!(listen = %config.listen, group_base = %config.sessions.group_base,
            port = config.sessions.port, "shoal server ready");
        axum::serve(listener, http::router(app).merge(crate::api::router(control)))
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving HTTP")
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
