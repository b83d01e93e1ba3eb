//! The `rakor serve` flow: prepare the data directory and signing key, bind the HTTP listener
//! and the media socket, build the [`AppState`] every handler shares, print the start banner
//! once, serve until a signal, then drain (see [`crate::shutdown`]).

use crate::config::Config;
use crate::signing_key::{self, KeySource};
use crate::state::AppState;
use crate::{http, shutdown};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How `rakor serve` was invoked, to print a matching `rakor token` command.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The program as typed (argv[0]), e.g. `target/release/rakor`.
    pub program: String,
    /// `--config FILE`, if given.
    pub config_file: Option<PathBuf>,
}

/// Run the server until SIGINT/SIGTERM. An error means exit code 1.
pub async fn serve(config: Config, invocation: Invocation) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let data_dir = &config.server.data_dir;
    signing_key::ensure_data_dir(data_dir)?;
    let (key, key_source) = signing_key::load_or_create(&config)?;
    match &key_source {
        KeySource::Config => tracing::info!("token signing key: auth.signing_key"),
        KeySource::File { path, created } => {
            tracing::info!(path = %path.display(), created, "token signing key file");
            if signing_key::has_loose_permissions(path) {
                tracing::warn!(path = %path.display(), "the signing key file is readable by others; run: chmod 600 {}", path.display());
            }
        }
    }

    let tls = crate::tls::Tls::from_config(&config)
        .map_err(|e| anyhow::anyhow!("HTTPS (server.tls_cert_file / server.tls_key_file): {e}"))?;
    let fd_limit = crate::serve::raise_nofile_limit()
        .map_err(|e| tracing::warn!("cannot raise the open-file limit: {e}"))
        .ok();
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (is another rakor, or another program, using it?)",
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {listen}: {e}{hint}; choose another address with --listen or server.listen")
    })?;
    let http_addr = listener
        .local_addr()
        .context("reading the listener's address")?;

    let session = crate::storage::open_session_manager(&config).await?;
    let (room_events, room_events_rx) = tokio::sync::mpsc::unbounded_channel();
    let (_, public_port) = config.public_host_port(http_addr);
    let one_port_ice = config.media.ice_tcp && config.media.ice_tcp_on_http_port;
    let mut sfu_config = config.sfu_config();
    if one_port_ice {
        sfu_config.extra_tcp_port = Some(public_port);
    }
    let (sfu, sfu_thread) = rakor_sfu::Sfu::start_with_events(sfu_config, Some(room_events))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; choose another port with --media-port or media.port (0 = any free port)"
            )
        })?;
    let media_worker = tokio::task::spawn_blocking(move || sfu_thread.join().is_ok());
    let room_events_rx = crate::recording::split_events(config.recording.clone(), room_events_rx);
    crate::recording::spawn_retention(config.recording_dir(), config.recording.retention);
    tokio::spawn(crate::attendance::record_attendance(
        Arc::clone(&session),
        room_events_rx,
    ));

    let shutdown_token = CancellationToken::new();
    let (turn_service, turn_addr) =
        start_turn(&config, &sfu.media_addrs(), &shutdown_token).await?;
    let cluster = crate::cluster::Cluster::start(&config, http_addr, shutdown_token.clone())?;
    let signing_key = Arc::new(key);
    let cascade = match (&cluster, config.cluster.cascade) {
        (Some(c), true) => Some(crate::cascade::Cascade::new(
            c.node_id().to_owned(),
            config.cluster_signal_url(http_addr),
            Arc::clone(&signing_key),
            shutdown_token.clone(),
        )),
        _ => None,
    };
    // The legs re-resolve a room's owner through the cluster (they follow a new owner).
    if let (Some(c), Some(k)) = (&cluster, &cascade) {
        k.follow_owner(Arc::clone(c));
    }
    if let Some(c) = &cascade {
        c.attach_sfu(sfu.clone());
    }
    let state = AppState {
        cluster,
        cascade,
        config: Arc::clone(&config),
        signing_key,
        sfu: sfu.clone(),
        shutdown: shutdown_token,
        tracker: TaskTracker::new(),
        session: Arc::clone(&session),
        limits: Arc::new(crate::limits::SignalLimits::new(
            &config.limits,
            config.server.resume_grace,
        )),
        turn: turn_service
            .clone()
            .map(|s| s as crate::byte_stream::SharedTurnStreams),
        turn_service: turn_service.clone(),
    };
    shutdown::spawn_signal_listener(state.shutdown.clone());

    let app = http::router(state.clone());
    let mut serving = crate::serve::ServeSettings::new(&config, fd_limit);
    if let Some(tls) = &tls {
        crate::tls::spawn_reload_on_sighup(Arc::clone(&tls.cert), state.shutdown.clone());
    }
    serving.tls = tls;
    // TURN over TLS on the one port: decrypted TURN streams go to the TURN server.
    serving.turn = state.turn.clone();
    if one_port_ice {
        serving.ice_tcp = Some(crate::serve::IceTcpHandoff {
            sfu: sfu.clone(),
            candidate_port: public_port,
        });
    }
    let server = tokio::spawn(crate::serve::run(
        listener,
        app,
        serving,
        state.shutdown.clone(),
    ));

    let banner = Banner {
        config: &config,
        http_addr,
        public_port: one_port_ice.then_some(public_port),
        media_addr: sfu.media_addr(),
        media_workers: sfu.workers(),
        key_source: &key_source,
        invocation: &invocation,
        turn: turn_service
            .as_ref()
            .zip(turn_addr)
            .map(|(s, a)| (a, s.urls().to_vec())),
    };
    print_once(&banner.render());
    if session.operator_count().await.unwrap_or(1) == 0 {
        print_once(&first_operator_hint(&config, &invocation, http_addr));
    }
    tracing::info!(http = %http_addr, media = %sfu.media_addr(), "rakor {} ready", env!("CARGO_PKG_VERSION"));

    shutdown::run_until_stopped(state, server, media_worker).await
}

/// Bind the TURN listener and start serving it when `turn.enabled`.
async fn start_turn(
    config: &Arc<Config>,
    media: &[SocketAddr],
    stop: &CancellationToken,
) -> anyhow::Result<(Option<Arc<crate::turn::TurnService>>, Option<SocketAddr>)> {
    if !config.turn.enabled {
        return Ok((None, None));
    }
    let listen = config.turn.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!("cannot listen for TURN on {listen}: {e}; choose another address with turn.listen (RAKOR_TURN_LISTEN) or set turn.enabled = false")
    })?;
    let addr = listener
        .local_addr()
        .context("reading the TURN listener's address")?;
    let secret = crate::turn::load_or_create_secret(config)?;
    let svc = Arc::new(crate::turn::TurnService::new(
        config,
        media,
        addr,
        secret,
        stop.clone(),
    )?);
    tokio::spawn(Arc::clone(&svc).run_listener(listener));
    tracing::info!(listen = %addr, urls = ?svc.urls(), "TURN server ready");
    Ok((Some(svc), Some(addr)))
}

/// Printed by `rakor serve` while no operator account exists.
pub fn first_operator_hint(config: &Config, invocation: &Invocation, http: SocketAddr) -> String {
    let cmd = rakor_command(
        invocation,
        config,
        &["operator", "add"],
        &["--username", "admin"],
    );
    format!(
        "No operator account yet. Create the first one (it asks for the password), then log in at\n\
         {}/console :\n  {cmd}\n\n",
        config.public_base_url(http),
    )
}

/// A `rakor` command line to print for the operator: the program as invoked, `subcommand`, the
/// same `--config` and `--data-dir` as this server, then `args` (already shell-quoted).
fn rakor_command(
    invocation: &Invocation,
    config: &Config,
    subcommand: &[&str],
    args: &[&str],
) -> String {
    let mut cmd = vec![shell_quote(&invocation.program)];
    cmd.extend(subcommand.iter().map(|s| (*s).to_owned()));
    if let Some(file) = &invocation.config_file {
        cmd.push("--config".into());
        cmd.push(shell_quote(&file.display().to_string()));
    }
    cmd.push("--data-dir".into());
    cmd.push(shell_quote(&config.server.data_dir.display().to_string()));
    cmd.extend(args.iter().map(|s| (*s).to_owned()));
    cmd.join(" ")
}

fn print_once(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The start banner: plain text on stdout, printed once.
struct Banner<'a> {
    config: &'a Config,
    http_addr: SocketAddr,
    /// The public port of the HTTP(S) listener when it takes ICE-TCP too.
    public_port: Option<u16>,
    media_addr: SocketAddr,
    /// Media workers: ports `media_addr.port()` and the next ones (a fixed `media.port`),
    /// or OS-picked ones (port 0; see the log line of each worker).
    media_workers: usize,
    key_source: &'a KeySource,
    invocation: &'a Invocation,
    /// The TURN listener and the URLs clients get, when enabled.
    turn: Option<(SocketAddr, Vec<String>)>,
}

impl Banner<'_> {
    fn render(&self) -> String {
        let c = self.config;
        let base = c.public_base_url(self.http_addr);
        // http:// → ws://, https:// → wss://
        let ws_addr = base.replacen("http", "ws", 1);
        let advertised: Vec<String> = c
            .effective_advertise_ips()
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        let data_dir = display_dir(&c.server.data_dir);
        let key_line = match self.key_source {
            KeySource::Config => {
                "auth.signing_key (from the config file or RAKOR_AUTH_SIGNING_KEY)".to_owned()
            }
            KeySource::File {
                path,
                created: true,
            } => format!("{} (new)", path.display()),
            KeySource::File {
                path,
                created: false,
            } => path.display().to_string(),
        };
        let cmd = rakor_command(
            self.invocation,
            c,
            &["token"],
            &[
                "--room",
                "rakor-demo",
                "--identity",
                "command-room",
                "--name",
                "'Command Room'",
                "--role",
                "host",
            ],
        );
        let env_note = if matches!(self.key_source, KeySource::Config) {
            "\n  (run it with the same config file / RAKOR_AUTH_SIGNING_KEY as this server)"
        } else {
            ""
        };
        let tls = c.server.tls_enabled();
        let listener_line = if tls {
            format!(
                "  HTTPS + WSS       https://{}  (signalling {ws_addr}/rtc, health {base}/healthz)\n\
                 \x20                   certificate {} (reloaded on SIGHUP)\n",
                self.http_addr,
                c.server.tls_cert_file.display()
            )
        } else {
            format!(
                "  HTTP + WebSocket  http://{}  (signalling {ws_addr}/rtc, health {base}/healthz)\n",
                self.http_addr
            )
        };
        let one_port_line = match self.public_port {
            Some(port) => format!(
                "  Media (ICE-TCP)   also on the {} port, advertised as port {port}\n",
                if tls { "HTTPS" } else { "HTTP" }
            ),
            None => String::new(),
        };
        let warning = if !tls && !self.http_addr.ip().to_canonical().is_loopback() {
            format!(
                "\nWARNING: plain HTTP on {addr}. Browsers on other machines will REFUSE the camera \
                 and microphone\n\
                 \x20 on http:// pages (only localhost is exempt). Set server.tls_cert_file and \
                 server.tls_key_file\n\
                 \x20 (RAKOR_SERVER_TLS_CERT_FILE / RAKOR_SERVER_TLS_KEY_FILE) to serve HTTPS \
                 here, or put a TLS\n\
                 \x20 reverse proxy in front and set server.public_url to its https:// address \
                 (docs/operations.md).\n",
                addr = self.http_addr
            )
        } else {
            String::new()
        };
        format!(
            "\nRakor {version} is running.\n\
             {listener_line}\
             \x20 Media (UDP)       {media}  advertised in ICE as {adv}\n\
             {tcp_line}{one_port_line}\
             {turn_line}\
             \x20 Data directory    {data_dir}\n\
             \x20 Signing key       {key_line}\n\
             \n\
             Mint an access token (first line: the token, second line: the join link):\n\
             \x20 {cmd}{env_note}\n\
             Join links look like: {base}/join?token=<TOKEN>\n\
             Stop with Ctrl-C or SIGTERM.\n{warning}\n",
            version = env!("CARGO_PKG_VERSION"),
            media = if self.media_workers > 1 {
                format!(
                    "{} (+{} more: one per media worker, {})",
                    self.media_addr,
                    self.media_workers - 1,
                    if c.media.port == 0 {
                        "ports picked by the OS".to_owned()
                    } else {
                        format!(
                            "ports {}-{}",
                            self.media_addr.port(),
                            usize::from(self.media_addr.port()) + self.media_workers - 1
                        )
                    }
                )
            } else {
                self.media_addr.to_string()
            },
            adv = advertised.join(", "),
            tcp_line = if c.media.ice_tcp {
                format!(
                    "  Media (ICE-TCP)   {}  same port number over TCP, for sites without UDP\n",
                    self.media_addr
                )
            } else {
                String::new()
            },
            turn_line = match &self.turn {
                Some((addr, urls)) => format!(
                    "  TURN (TCP)        {addr}  offered as {}, relays only to the media port\n",
                    urls.join(", ")
                ),
                None => String::new(),
            },
        )
    }
}

fn display_dir(dir: &Path) -> String {
    match std::path::absolute(dir) {
        Ok(abs) if abs != dir => format!("{} ({})", dir.display(), abs.display()),
        _ => dir.display().to_string(),
    }
}

/// Quote for a POSIX shell when needed.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("./rakor-data"), "./rakor-data");
        assert_eq!(shell_quote("my dir"), "'my dir'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn first_operator_hint_names_the_same_config_and_data_dir() {
        let config = Config::default();
        let invocation = Invocation {
            program: "target/release/rakor".into(),
            config_file: Some(PathBuf::from("my rakor.toml")),
        };
        let text = first_operator_hint(&config, &invocation, "127.0.0.1:7880".parse().unwrap());
        assert!(
            text.contains(
                "target/release/rakor operator add --config 'my rakor.toml' --data-dir ./rakor-data \
                 --username admin"
            ),
            "{text}"
        );
        assert!(text.contains("http://127.0.0.1:7880/console"), "{text}");
    }

    #[test]
    fn banner_warns_about_the_camera_on_plain_http_off_loopback() {
        let invocation = Invocation {
            program: "rakor".into(),
            config_file: None,
        };
        let key_source = KeySource::Config;
        let render = |config: &Config, addr: &str| {
            Banner {
                config,
                http_addr: addr.parse().unwrap(),
                public_port: None,
                media_addr: "127.0.0.1:7882".parse().unwrap(),
                media_workers: 1,
                key_source: &key_source,
                invocation: &invocation,
                turn: None,
            }
            .render()
        };
        let plain = Config::default();
        let text = render(&plain, "0.0.0.0:7880");
        assert!(text.contains("REFUSE the camera"), "{text}");
        assert!(text.contains("server.tls_cert_file"), "{text}");
        assert!(!render(&plain, "127.0.0.1:7880").contains("REFUSE"));
        let mut tls = Config::default();
        tls.server.tls_cert_file = "/etc/rakor/cert.pem".into();
        tls.server.tls_key_file = "/etc/rakor/key.pem".into();
        let text = render(&tls, "0.0.0.0:443");
        assert!(!text.contains("REFUSE"), "{text}");
        assert!(
            text.contains("HTTPS + WSS       https://0.0.0.0:443"),
            "{text}"
        );
        assert!(text.contains("wss://127.0.0.1:443/rtc"), "{text}");
    }

    #[test]
    fn banner_has_addresses_and_a_token_command() {
        let config = Config::default();
        let invocation = Invocation {
            program: "target/release/rakor".into(),
            config_file: None,
        };
        let key_source = KeySource::File {
            path: PathBuf::from("./rakor-data/signing.key"),
            created: true,
        };
        let text = Banner {
            config: &config,
            http_addr: "127.0.0.1:7880".parse().unwrap(),
            public_port: Some(7880),
            media_addr: "127.0.0.1:7882".parse().unwrap(),
            media_workers: 1,
            key_source: &key_source,
            invocation: &invocation,
            turn: None,
        }
        .render();
        assert!(text.contains("http://127.0.0.1:7880"), "{text}");
        assert!(text.contains("ws://127.0.0.1:7880/rtc"), "{text}");
        assert!(
            text.contains("127.0.0.1:7882  advertised in ICE as 127.0.0.1"),
            "{text}"
        );
        assert!(text.contains(
            "target/release/rakor token --data-dir ./rakor-data --room rakor-demo --identity command-room \
             --name 'Command Room' --role host"
        ));
        assert!(
            text.contains("http://127.0.0.1:7880/join?token=<TOKEN>"),
            "{text}"
        );
    }
}
