//! What makes a node reload: SIGHUP, and a periodic check of the files' times and sizes.

use std::time::Duration;

use crate::zones::{ReloadSummary, Zones};

/// Reloads changed datasets on SIGHUP and every `check_interval` (if any), until cancelled.
///
/// # Cancel safety
///
/// Cancel-safe between reloads; a reload in progress runs to its end on a blocking thread and
/// is swapped in or not as a whole.
pub async fn watch(zones: Zones, check_interval: Option<Duration>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reloads only by timer");
            None
        }
    };
    let mut timer = check_interval.map(|every| {
        let mut timer = tokio::time::interval(every);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer
    });
    loop {
        let tick = async {
            match timer.as_mut() {
                Some(timer) => timer.tick().await,
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            Some(()) = async { hangup.as_mut()?.recv().await } => "sighup",
            _ = tick => "timer",
        };
        let zones = zones.clone();
        let summary = tokio::task::spawn_blocking(move || zones.reload_changed())
            .await
            .unwrap_or_default();
        log_reload(trigger, summary);
    }
}

fn log_reload(trigger: &str, summary: ReloadSummary) {
    if summary.reloaded > 0 || summary.failed > 0 {
        tracing::info!(
            trigger,
            reloaded = summary.reloaded,
            failed = summary.failed,
            "zones reloaded"
        );
    } else {
        tracing::debug!(trigger, "no dataset changed");
    }
}
