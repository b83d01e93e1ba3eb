//! Stopping the server: SIGINT/SIGTERM cancel the one [`CancellationToken`], then
//! [`run_until_stopped`] drains in order, each step bounded so the process exits within
//! `server.shutdown_grace` plus about a second:
//!
//! 1. the HTTP listener stops accepting (axum's graceful shutdown watches the token), and
//!    signalling refuses new joins; rooms in progress get up to `server.drain_timeout` to end
//!    on their own (the step ends as soon as no participant is left);
//! 2. `sfu.shutdown()`: every participant is sent `leave {reason: "server_shutdown"}` and all
//!    peer connections and the media socket are closed;
//! 3. the signalling tasks (tracked by the [`TaskTracker`]) get the rest of the grace period to
//!    flush those messages and close their WebSockets;
//! 4. the HTTP server task and the media worker thread are awaited briefly.
//!
//! A second signal during the drain exits at once (code 130).

use crate::state::AppState;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_util::sync::CancellationToken;

/// How long steps 4 may take after the grace period.
const FINAL_WAIT: Duration = Duration::from_secs(1);

/// Cancel `token` on the first SIGINT or SIGTERM; exit the process on the second.
pub fn spawn_signal_listener(token: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut signals = Signals::new();
        tokio::select! {
            name = signals.recv() => {
                tracing::info!(signal = name, "shutting down: stop accepting, tell participants, drain");
                token.cancel();
            }
            () = token.cancelled() => {}
        }
        let name = signals.recv().await;
        eprintln!("rakor: second {name}, exiting now without draining");
        std::process::exit(130);
    })
}

/// SIGINT (Ctrl-C) and SIGTERM as one stream.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        let term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the server");
                None
            }
        };
        Self { term }
    }

    async fn recv(&mut self) -> &'static str {
        let term = async {
            match self.term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot listen for Ctrl-C");
                    std::future::pending::<()>().await;
                }
                "SIGINT"
            }
            () = term => "SIGTERM",
        }
    }
}

/// Step 1: wait up to `server.drain_timeout` for the last participant to leave.
async fn drain_rooms(state: &AppState) {
    let limit = state.config.server.drain_timeout;
    if limit.is_zero() {
        return;
    }
    let deadline = Instant::now() + limit;
    let mut logged = false;
    loop {
        let left = match timeout_at(deadline, state.sfu.stats()).await {
            Ok(Ok(s)) => s.participants,
            _ => return,
        };
        if left == 0 {
            tracing::info!("all rooms ended");
            return;
        }
        if !logged {
            tracing::info!(
                participants = left,
                ?limit,
                "draining: waiting for rooms to end; new joins are refused"
            );
            logged = true;
        }
        if Instant::now() + Duration::from_millis(250) >= deadline {
            tracing::info!(
                participants = left,
                "drain timeout; ending the remaining rooms"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Wait until the shutdown token is cancelled (or the HTTP server or media worker stops on
/// its own), then drain. `Ok` means a clean, requested shutdown; an unexpected stop of the
/// server or the worker is an error (exit code 1).
pub async fn run_until_stopped(
    state: AppState,
    mut server: JoinHandle<std::io::Result<()>>,
    mut media_worker: JoinHandle<bool>,
) -> anyhow::Result<()> {
    let mut failure: Option<String> = None;
    let mut server_done = false;
    let mut worker_done = false;
    tokio::select! {
        // First: after a signal the HTTP server also completes (graceful shutdown), and that
        // is not a failure.
        biased;
        () = state.shutdown.cancelled() => {}
        r = &mut server => {
            server_done = true;
            failure = Some(match r {
                Ok(Ok(())) => "the HTTP server stopped unexpectedly".to_owned(),
                Ok(Err(e)) => format!("the HTTP server failed: {e}"),
                Err(e) => format!("the HTTP server task failed: {e}"),
            });
        }
        r = &mut media_worker => {
            worker_done = true;
            failure = Some(match r {
                Ok(true) => "the media worker stopped unexpectedly".to_owned(),
                _ => "the media worker crashed".to_owned(),
            });
        }
    }
    if let Some(f) = &failure {
        tracing::error!("{f}; shutting down");
    }
    state.shutdown.cancel();
    if failure.is_none() {
        drain_rooms(&state).await;
    }

    let grace = state.config.server.shutdown_grace;
    let deadline = Instant::now() + grace;
    if timeout_at(deadline, state.sfu.shutdown()).await.is_err() {
        tracing::warn!(?grace, "the media worker did not confirm shutdown in time");
    }
    state.tracker.close();
    if timeout_at(deadline, state.tracker.wait()).await.is_err() {
        tracing::warn!(
            open = state.tracker.len(),
            ?grace,
            "signalling connections still open after the grace period"
        );
    }
    if !server_done && timeout(FINAL_WAIT, &mut server).await.is_err() {
        tracing::warn!("HTTP connections still open; closing them");
        server.abort();
    }
    if !worker_done && timeout(FINAL_WAIT, &mut media_worker).await.is_err() {
        tracing::warn!("the media worker thread did not exit in time");
    }
    match failure {
        Some(f) => Err(anyhow::anyhow!(f)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}
