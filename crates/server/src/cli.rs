//! The command line (clap derive): `rakor serve`, `rakor token`, `rakor check-config`,
//! `rakor operator`, and with the `tools` feature (on by default) `rakor bot`, `rakor soak`, `rakor loadtest` (see
//! [`crate::tools`]). Exit codes: 0 = success, 1 = runtime failure (e.g. a port in use), 2 =
//! usage or config error.

use crate::app::{self, Invocation};
use crate::config::{self, CliOverrides, Config};
use crate::signing_key::{self, KeySource};
use crate::token::{self, Claims};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rakor_proto::Role;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Rakor: a WebRTC video-conference server (SFU) for a command room's coordination meetings.
#[derive(Debug, Parser)]
#[command(name = "rakor", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP + WebSocket signalling and the UDP media port.
    Serve(ServeArgs),
    /// Mint an access token; prints the token, then the join link.
    Token(TokenArgs),
    /// Print the effective configuration (secrets redacted) and its problems on this host:
    /// addresses that are not local, certificate trouble, ports in use. Exit 1 on a problem.
    CheckConfig(ServeArgs),
    /// Run one headless participant and print a report of what it sent and received.
    #[cfg(feature = "tools")]
    Bot(crate::tools::bot::BotArgs),
    /// Soak test a running server: a host plus N bots joining and leaving in a loop.
    #[cfg(feature = "tools")]
    Soak(crate::tools::soak::SoakArgs),
    /// Load test a server on this machine: P publishers and S subscribers in one room for a
    /// fixed time, then a summary (packets, loss, join times, server CPU and memory).
    #[cfg(feature = "tools")]
    Loadtest(crate::tools::loadtest::LoadtestArgs),
    /// Manage operator accounts of the console (`rakor operator add --username U`).
    #[command(subcommand)]
    Operator(crate::operator_cli::OperatorCommand),
}

/// Where the configuration comes from (shared by `serve` and `token`).
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML config file (see config/rakor.toml). Without it: built-in defaults.
    #[arg(long, value_name = "FILE", env = "RAKOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// HTTP + WebSocket address, IP:PORT (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// UDP media port, 0 = any free port (overrides media.port).
    #[arg(long, value_name = "PORT")]
    pub media_port: Option<u16>,
    /// IP the media socket binds to, e.g. 0.0.0.0 (overrides media.bind_ip).
    #[arg(long, value_name = "IP")]
    pub media_bind_ip: Option<IpAddr>,
    /// IP to advertise in ICE candidates (LAN or public IP); repeat for several
    /// (overrides media.advertise_ips).
    #[arg(long = "advertise-ip", value_name = "IP")]
    pub advertise_ips: Vec<IpAddr>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Room the token admits to.
    #[arg(long)]
    pub room: String,
    /// Identity of the participant (unique in the room; a second join replaces the first).
    #[arg(long)]
    pub identity: String,
    /// Display name shown to the others [default: the identity].
    #[arg(long)]
    pub name: Option<String>,
    /// What the participant may do.
    #[arg(long, value_enum, default_value_t = RoleArg::Participant)]
    pub role: RoleArg,
    /// Lifetime, e.g. 30m, 2h [default: auth.default_ttl]; at most auth.max_ttl.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub ttl: Option<Duration>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `--role` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Host,
    Participant,
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Host => Role::Host,
            RoleArg::Participant => Role::Participant,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token_cmd(args),
        Command::CheckConfig(args) => check_config(args),
        #[cfg(feature = "tools")]
        Command::Bot(args) => crate::tools::bot::main(args),
        #[cfg(feature = "tools")]
        Command::Soak(args) => crate::tools::soak::main(args),
        #[cfg(feature = "tools")]
        Command::Loadtest(args) => crate::tools::loadtest::main(args),
        Command::Operator(cmd) => crate::operator_cli::run(cmd),
    }
}

pub(crate) fn load_config(args: &ConfigArgs, overrides: CliOverrides) -> Result<Config, ExitCode> {
    let overrides = CliOverrides {
        data_dir: args.data_dir.clone(),
        ..overrides
    };
    config::env_vars()
        .and_then(|env| config::load(args.config.as_deref(), &env, &overrides))
        .map_err(|e| {
            eprintln!("config error: {e}");
            ExitCode::from(2)
        })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

/// Run `task` on a fresh runtime to its end: exit 0 when it succeeded, 1 (with the error on
/// stderr) when it failed or the runtime could not start.
pub(crate) fn run_to_exit(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(task);
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr. `RUST_LOG`, when set and valid, wins over `default_filter`.
pub(crate) fn init_tracing(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            eprintln!("warning: ignoring RUST_LOG ({e}); using \"{default_filter}\"");
            EnvFilter::new(default_filter)
        }
        None => EnvFilter::new(default_filter),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn serve_overrides(args: &ServeArgs) -> CliOverrides {
    CliOverrides {
        listen: args.listen,
        media_port: args.media_port,
        media_bind_ip: args.media_bind_ip,
        advertise_ips: args.advertise_ips.clone(),
        data_dir: None,
    }
}

/// `rakor check-config`: 0 = no problem, 1 = problems found, 2 = the config is refused.
fn check_config(args: ServeArgs) -> ExitCode {
    let config = match load_config(&args.config, serve_overrides(&args)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (text, failed) = crate::check_config::report(&config);
    print!("{text}");
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = serve_overrides(&args);
    let config = match load_config(&args.config, overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_tracing(&config.server.log);
    let invocation = Invocation {
        program: std::env::args()
            .next()
            .unwrap_or_else(|| "rakor".to_owned()),
        config_file: args.config.config.clone(),
    };
    run_to_exit(app::serve(config, invocation))
}

fn token_cmd(args: TokenArgs) -> ExitCode {
    let config = match load_config(&args.config, CliOverrides::default()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let ttl = args.ttl.unwrap_or(config.auth.default_ttl);
    if ttl.as_secs() == 0 {
        eprintln!("error: --ttl must be at least 1s");
        return ExitCode::from(2);
    }
    if ttl > config.auth.max_ttl {
        eprintln!(
            "error: --ttl {} exceeds auth.max_ttl ({})",
            short_duration(ttl),
            short_duration(config.auth.max_ttl)
        );
        return ExitCode::from(2);
    }
    let (key, source) = match signing_key::load_or_create(&config) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let KeySource::File { path, created } = &source {
        if *created {
            eprintln!(
                "created a new signing key in {} (rakor serve will use it)",
                path.display()
            );
        }
        if signing_key::has_loose_permissions(path) {
            eprintln!(
                "warning: {} is readable by others; run: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    let name = args.name.as_deref().unwrap_or(&args.identity);
    let claims = Claims::new(&args.room, &args.identity, name, args.role.into(), ttl);
    match token::mint(&key, &claims) {
        Ok(t) => {
            let text = format!(
                "{t}\n{}/join?token={t}\n",
                config.public_base_url(config.server.listen)
            );
            write_stdout(&text)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Write to stdout without panicking; a closed pipe (e.g. `rakor token ... | head -1`) is fine.
fn write_stdout(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

/// `48h`, `90m`, `45s` rather than humantime's `2days`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        humantime::format_duration(d).to_string()
    } else if s.rem_euclid(3600) == 0 {
        format!("{}h", s / 3600)
    } else if s.rem_euclid(60) == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_commands() {
        let cli = Cli::try_parse_from([
            "rakor",
            "serve",
            "--listen",
            "0.0.0.0:8080",
            "--media-port",
            "0",
            "--data-dir",
            "/tmp/x",
            "--advertise-ip",
            "192.168.1.10",
            "--advertise-ip",
            "10.0.0.2",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert_eq!(s.listen, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(s.media_port, Some(0));
        assert_eq!(s.advertise_ips.len(), 2);

        let cli = Cli::try_parse_from([
            "rakor",
            "token",
            "--room",
            "r",
            "--identity",
            "i",
            "--name",
            "Command Room",
            "--role",
            "host",
            "--ttl",
            "90m",
        ])
        .unwrap();
        let Command::Token(t) = cli.command else {
            panic!("token")
        };
        assert_eq!(t.role, RoleArg::Host);
        assert_eq!(t.ttl, Some(Duration::from_secs(5400)));

        assert!(Cli::try_parse_from(["rakor", "serve", "--media-port", "70000"]).is_err());
        assert!(Cli::try_parse_from([
            "rakor",
            "token",
            "--room",
            "r",
            "--identity",
            "i",
            "--role",
            "admin"
        ])
        .is_err());
    }
}
