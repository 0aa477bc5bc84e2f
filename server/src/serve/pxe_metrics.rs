//! The DHCP and TFTP servers' own counters (atomics in `shoal_pxe`), read
//! into `/metrics` at each scrape: DHCP messages by kind, replies by kind
//! and drops by reason; every TFTP counter as `shoal_tftp_NAME_total`.

use std::sync::Arc;

use shoal_pxe::dhcp::{Counters as DhcpCounters, DropReason};
use shoal_pxe::tftp::Counters as TftpCounters;

use crate::metrics::Registry;

pub fn dhcp(r: &Registry, c: Arc<DhcpCounters>) {
    let c2 = Arc::clone(&c);
    r.counted("shoal_dhcp_messages_total", "DHCP messages received, by kind", move || {
        let s = c2.snapshot();
        [
            ("discover", s.discover),
            ("request", s.request),
            ("decline", s.decline),
            ("release", s.release),
            ("inform", s.inform),
        ]
        .into_iter()
        .map(|(k, v)| (vec![("kind", k.to_string())], v as f64))
        .collect()
    });
    let c2 = Arc::clone(&c);
    r.counted("shoal_dhcp_replies_total", "DHCP replies sent, by kind", move || {
        let s = c2.snapshot();
        [("offer", s.offers), ("ack", s.acks), ("nak", s.naks)]
            .into_iter()
            .map(|(k, v)| (vec![("kind", k.to_string())], v as f64))
            .collect()
    });
    r.counted("shoal_dhcp_dropped_total", "DHCP packets dropped, by reason", move || {
        let s = c.snapshot();
        DropReason::ALL.iter().map(|&d| (vec![("reason", d.as_str().to_string())], s.dropped(d) as f64)).collect()
    });
}

pub fn tftp(r: &Registry, c: Arc<TftpCounters>) {
    for (field, _) in c.snapshot().fields() {
        let c = Arc::clone(&c);
        r.counted(&format!("shoal_tftp_{field}_total"), &format!("TFTP {}", field.replace('_', " ")), move || {
            let v = c.snapshot().fields().into_iter().find(|(f, _)| *f == field).map_or(0, |(_, v)| v);
            vec![(Vec::new(), v as f64)]
        });
    }
}
