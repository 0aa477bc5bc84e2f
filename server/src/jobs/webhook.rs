//! The webhook (`shoal server --webhook URL`): one JSON document POSTed
//! per job event, where the seeds sent e-mail.
//!
//! A follower task reads the catalog's job history after the last row it
//! saw (starting from the newest row at start-up: history from before is
//! not sent again) into a bounded queue; a sender thread POSTs each
//! event, retrying with back-off. When the queue is full the oldest
//! events are dropped and counted, so a dead webhook costs memory up to
//! the bound and never slows a job: nothing in a job waits for it.
//!
//! The document: `{"id", "job", "at", "node", "state", "message"}`, `node`
//! null for the job's own events, `id` increasing.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::catalog::execution::JobEventRow;
use crate::catalog::Catalog;
use crate::metrics::{Counter, Registry};

/// How the webhook is called.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: String,
    /// Events held while the webhook lags; the oldest go first.
    pub queue: usize,
    /// Tries per event.
    pub tries: u32,
    /// The wait after the first failure, doubled after each.
    pub backoff: Duration,
    /// Per request.
    pub timeout: Duration,
    /// How often the history is read.
    pub poll: Duration,
}

impl WebhookConfig {
    pub fn new(url: String) -> WebhookConfig {
        WebhookConfig {
            url,
            queue: 10_000,
            tries: 5,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
        }
    }
}

struct Queue {
    events: Mutex<(VecDeque<JobEventRow>, bool)>,
    ready: Condvar,
}

struct Counters {
    sent: Counter,
    failed: Counter,
    dropped: Counter,
}

/// Follows `catalog`'s job history and posts it to the webhook until
/// `stop` completes.
pub async fn run(catalog: Arc<Catalog>, config: WebhookConfig, metrics: Arc<Registry>, stop: impl Future<Output = ()>) {
    let counters = Arc::new(Counters {
        sent: metrics.counter("shoal_webhook_sent_total", "Job events the webhook accepted"),
        failed: metrics.counter("shoal_webhook_failed_total", "Job events given up on after every try"),
        dropped: metrics.counter("shoal_webhook_dropped_total", "Job events dropped from a full webhook queue"),
    });
    let queue = Arc::new(Queue { events: Mutex::new((VecDeque::new(), false)), ready: Condvar::new() });
    let sender = {
        let (queue, config, counters) = (Arc::clone(&queue), config.clone(), Arc::clone(&counters));
        std::thread::spawn(move || send_loop(&queue, &config, &counters))
    };
    let cat = Arc::clone(&catalog);
    let mut last =
        tokio::task::spawn_blocking(move || cat.last_job_event()).await.ok().and_then(Result::ok).unwrap_or(0);
    tracing::info!(url = %config.url, after = last, "webhook: following job events");
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(config.poll);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let cat = Arc::clone(&catalog);
        let rows = match tokio::task::spawn_blocking(move || cat.job_events_after(last, 1000)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!("webhook: reading job events: {e}");
                continue;
            }
            Err(_) => continue,
        };
        if let Some(r) = rows.last() {
            last = r.id;
        }
        if !rows.is_empty() {
            let mut q = queue.events.lock().unwrap_or_else(|p| p.into_inner());
            for r in rows {
                if q.0.len() >= config.queue {
                    q.0.pop_front();
                    counters.dropped.inc();
                }
                q.0.push_back(r);
            }
            queue.ready.notify_one();
        }
    }
    queue.events.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
    queue.ready.notify_one();
    // The sender gives up its current event's retries at shutdown only by
    // running out of them; do not wait for it.
    drop(sender);
}

fn send_loop(queue: &Queue, config: &WebhookConfig, counters: &Counters) {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(config.timeout)).build().into();
    loop {
        let event = {
            let mut q = queue.events.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(e) = q.0.pop_front() {
                    break e;
                }
                if q.1 {
                    return;
                }
                q = queue.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let body = match serde_json::to_string(&event) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("webhook: encoding event {}: {e}", event.id);
                continue;
            }
        };
        let mut wait = config.backoff;
        let mut ok = false;
        for attempt in 1..=config.tries {
            match agent.post(&config.url).header("Content-Type", "application/json").send(&body) {
                Ok(r) if r.status().is_success() => {
                    ok = true;
                    break;
                }
                Ok(r) => tracing::debug!(attempt, status = r.status().as_u16(), "webhook refused event {}", event.id),
                Err(e) => tracing::debug!(attempt, "webhook: event {}: {e}", event.id),
            }
            if attempt < config.tries {
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
        }
        if ok {
            counters.sent.inc();
        } else {
            counters.failed.inc();
            tracing::warn!(url = %config.url, "webhook: gave up on job {} event {} after {} tries", event.job, event.id, config.tries);
        }
    }
}
