//! `rakor bot`: one headless participant that joins, publishes the looped assets, subscribes to
//! everyone, and at the end prints (or returns) its [`Report`]. The CLI wiring lives in the
//! server binary; this module owns the behaviour.

use crate::client::{Client, ClientOptions};
use crate::error::ClientError;
use crate::stats::Report;
use rakor_proto::ServerMessage;
use std::net::IpAddr;
use std::time::Duration;

/// What `rakor bot` was asked to do.
#[derive(Debug, Clone)]
pub struct BotArgs {
    /// `ws://HOST:PORT/rtc`
    pub url: String,
    /// Access token (JWT).
    pub token: String,
    pub publish_audio: bool,
    pub publish_video: bool,
    /// Share a synthetic screen (slides; the room's presentation).
    pub publish_screen: bool,
    /// Publish the screen's sound too (source `screen_audio`).
    pub publish_screen_audio: bool,
    /// Stay this long, then leave; `None` = until Ctrl-C or the server ends the session.
    pub duration: Option<Duration>,
    /// Print the final report as JSON on stdout.
    pub report_json: bool,
    /// Local IP for ICE host candidates.
    pub bind_ip: IpAddr,
    /// CAs trusted for a `wss://` URL (see [`crate::ClientOptions::tls_roots`]).
    pub tls_roots: Option<std::sync::Arc<rustls::RootCertStore>>,
}

impl BotArgs {
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: token.into(),
            publish_audio: true,
            publish_video: true,
            publish_screen: false,
            publish_screen_audio: false,
            duration: None,
            report_json: false,
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            tls_roots: None,
        }
    }
}

enum Stop {
    Elapsed,
    Interrupted,
    ServerClosed,
}

/// Join, publish, stay, leave; return the final report (also printed as JSON if asked).
pub async fn run(args: BotArgs) -> Result<Report, ClientError> {
    let mut opts = ClientOptions::new(args.url.clone(), args.token.clone())
        .publish(args.publish_audio, args.publish_video)
        .screen(args.publish_screen)
        .screen_audio(args.publish_screen_audio)
        .bind_ip(args.bind_ip);
    opts.tls_roots = args.tls_roots.clone();
    opts.join_timeout = Duration::from_secs(15);
    let mut client = Client::connect(opts).await?;
    let me = client.participant_id().clone();
    tracing::info!(participant = %me, room = %client.joined().room, "bot joined");

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let stop = loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = until_deadline => break Stop::Elapsed,
            _ = tokio::signal::ctrl_c() => break Stop::Interrupted,
            ev = client.next_event() => match ev {
                None => break Stop::ServerClosed,
                Some(msg) => log_event(&msg),
            },
        }
    };
    let report = match stop {
        Stop::ServerClosed => {
            tracing::info!(reason = ?client.close_reason(), "server ended the session");
            client.leave().await
        }
        Stop::Elapsed | Stop::Interrupted => client.leave().await,
    };
    if args.report_json {
        println!("{}", report.to_json());
    } else {
        for (kind, s) in &report.sent {
            tracing::info!(kind = %kind, packets = s.packets, frames = s.frames, plis = s.plis_received, "sent");
        }
        for (id, r) in &report.received {
            tracing::info!(
                track = %id,
                source = r.source.map_or("", |s| s.as_str()),
                packets = r.packets,
                frames = r.frames,
                keyframes = r.keyframes,
                matches = r.payload_matches,
                mismatches = r.payload_mismatches,
                "received"
            );
        }
    }
    Ok(report)
}

fn log_event(msg: &ServerMessage) {
    match msg {
        ServerMessage::ParticipantJoined { participant } => {
            tracing::info!(participant = %participant.id, "participant joined");
        }
        ServerMessage::ParticipantLeft {
            participant_id,
            reason,
            ..
        } => {
            tracing::info!(participant = %participant_id, ?reason, "participant left");
        }
        ServerMessage::TrackPublished {
            participant_id,
            track,
        } => {
            tracing::info!(participant = %participant_id, track = %track.id, kind = ?track.kind, source = track.source().as_str(), "track published");
        }
        ServerMessage::Presentation { presentation, by } => match presentation {
            Some(p) => {
                tracing::info!(presenter = %p.participant_id, track = %p.track_id, "presentation")
            }
            None => tracing::info!(by = ?by.as_ref().map(|b| b.as_str()), "presentation ended"),
        },
        ServerMessage::PresentationStopped { reason, .. } => {
            tracing::info!(?reason, "our presentation was stopped");
        }
        ServerMessage::Error { code, message, .. } => {
            tracing::warn!(%code, %message, "server error");
        }
        ServerMessage::Leave { reason, .. } => tracing::info!(?reason, "server asked us to leave"),
        _ => tracing::debug!("server message"),
    }
}
