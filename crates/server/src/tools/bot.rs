//! `rakor bot`: one headless participant (`rakor_client::bot`) from the command line — join,
//! publish synthetic audio and video, stay, leave, and report what it sent and received.

use crate::cli::{init_tracing, run_to_exit};
use clap::{Args, ValueEnum};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

/// `rakor bot` flags.
#[derive(Debug, Args)]
pub struct BotArgs {
    /// Signalling WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7880/rtc")]
    pub url: String,
    /// Access token (from `rakor token`).
    #[arg(long)]
    pub token: String,
    /// What to publish, comma-separated: audio, video, screen (a synthetic presentation:
    /// 1280x720 slides changing every 3 s at 2 fps, source `screen`), screen_audio (the
    /// presentation's sound, a looped Opus tone, source `screen_audio`; with screen), or none
    /// (receive only).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "audio,video")]
    pub publish: Vec<MediaKind>,
    /// How long to stay in the room, e.g. 10s, 2m [default: until Ctrl-C or the server ends
    /// the session].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Print the final report on stdout in this format (without it: a summary in the log).
    #[arg(long, value_enum)]
    pub report: Option<ReportFormat>,
    /// Local IP for the bot's ICE candidates.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
    /// Trust this PEM CA certificate (besides the system's) for a `wss://` --url, e.g. a
    /// private CA or a self-signed server certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// `--publish` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MediaKind {
    Audio,
    Video,
    /// A synthetic screen share (the room's presentation).
    Screen,
    /// The screen share's sound (needs `screen`: the server takes it only from the presenter).
    #[value(name = "screen_audio", alias = "screen-audio")]
    ScreenAudio,
    /// Publish nothing.
    None,
}

/// `--report` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Json,
}

/// `rakor bot`: exit 0 when the bot ran and left, 1 on a failure.
pub fn main(args: BotArgs) -> ExitCode {
    init_tracing("warn,rakor_client=info");
    run_to_exit(run_bot(args))
}

/// Adapter between `rakor bot`'s flags and the headless client (`rakor_client::bot`), which
/// owns the behaviour: join, publish, stay, leave, report (JSON on stdout with `--report json`).
async fn run_bot(args: BotArgs) -> anyhow::Result<()> {
    let mut bot = rakor_client::bot::BotArgs::new(args.url, args.token);
    bot.publish_audio = args.publish.contains(&MediaKind::Audio);
    bot.publish_video = args.publish.contains(&MediaKind::Video);
    bot.publish_screen = args.publish.contains(&MediaKind::Screen);
    bot.publish_screen_audio = args.publish.contains(&MediaKind::ScreenAudio);
    if bot.publish_screen_audio && !bot.publish_screen {
        anyhow::bail!(
            "--publish screen_audio needs screen too (the server takes a screen's sound only \
             from the presenter)"
        );
    }
    if args.publish.contains(&MediaKind::None) && args.publish.len() > 1 {
        anyhow::bail!("--publish none cannot be combined with audio, video or screen");
    }
    bot.duration = args.duration;
    bot.report_json = args.report == Some(ReportFormat::Json);
    bot.bind_ip = args.bind_ip;
    if let Some(path) = &args.ca_file {
        bot.tls_roots = Some(rakor_client::tls::roots_with_ca_file(path)?);
    }
    rakor_client::bot::run(bot).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    #[test]
    fn parses_the_bot_command_line() {
        let cli = Cli::try_parse_from([
            "rakor",
            "bot",
            "--url",
            "ws://127.0.0.1:7880/rtc",
            "--token",
            "T",
            "--publish",
            "audio,video",
            "--duration",
            "10s",
            "--report",
            "json",
        ])
        .unwrap();
        let Command::Bot(b) = cli.command else {
            panic!("bot")
        };
        assert_eq!(b.publish, vec![MediaKind::Audio, MediaKind::Video]);
        assert_eq!(b.duration, Some(Duration::from_secs(10)));
        let cli = Cli::try_parse_from(["rakor", "bot", "--token", "T"]).unwrap();
        let Command::Bot(b) = cli.command else {
            panic!("bot")
        };
        assert_eq!(
            b.publish,
            vec![MediaKind::Audio, MediaKind::Video],
            "publishes both by default"
        );
        assert_eq!(b.duration, None);
        let cli =
            Cli::try_parse_from(["rakor", "bot", "--token", "T", "--publish", "screen"]).unwrap();
        let Command::Bot(sa) = Cli::try_parse_from([
            "rakor",
            "bot",
            "--token",
            "T",
            "--publish",
            "screen,screen_audio",
        ])
        .unwrap()
        .command
        else {
            panic!("bot")
        };
        assert_eq!(sa.publish, vec![MediaKind::Screen, MediaKind::ScreenAudio]);
        let Command::Bot(b) = cli.command else {
            panic!("bot")
        };
        assert_eq!(b.publish, vec![MediaKind::Screen]);
    }
}
