//! `probe-client`: one headless participant as its own process, for the fault tests (it runs
//! inside a network namespace with `ip netns exec`, and can be SIGKILLed). It joins, publishes
//! what it is told, and writes one JSON object per line on stdout:
//! `{"t_ms":N,"joined":"PA_…"}` once, `{"t_ms":N,"event":<server message>}` for every server
//! message, `{"t_ms":N,"report":<rakor_client::Report>}` every 500 ms, `{"t_ms":N,"closed":"…"}`
//! when the session ends. `t_ms` is Unix time in milliseconds (comparable across processes).
//!
//! Usage: probe-client URL TOKEN BIND_IP [audio] [video] [simulcast] [relay] [no-tcp]
//! (`relay`: TURN candidates only; `no-tcp`: no ICE over TCP; `RAKOR_CA_FILE=ca.pem`: trust
//! that CA for a `wss://` URL.)

use rakor_client::{Client, ClientOptions};
use std::time::Duration;

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn line(key: &str, value: serde_json::Value) {
    use std::io::Write as _;
    let v = serde_json::json!({ "t_ms": now_ms() as u64, key: value });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(token), Some(ip)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: probe-client URL TOKEN BIND_IP [audio] [video] [simulcast]");
        return std::process::ExitCode::from(2);
    };
    let Ok(ip) = ip.parse() else {
        eprintln!("bad BIND_IP {ip}");
        return std::process::ExitCode::from(2);
    };
    let audio = args.iter().skip(4).any(|a| a == "audio");
    let video = args.iter().skip(4).any(|a| a == "video");
    let simulcast = args.iter().skip(4).any(|a| a == "simulcast");
    let mut opts = ClientOptions::new(url.clone(), token.clone())
        .publish(audio, video)
        .simulcast(simulcast)
        .bind_ip(ip);
    opts.join_timeout = Duration::from_secs(20);
    // A `wss://` URL signed by a private CA: trust the PEM file named by RAKOR_CA_FILE.
    if let Some(ca) = std::env::var_os("RAKOR_CA_FILE") {
        match rakor_client::tls::roots_with_ca_file(std::path::Path::new(&ca)) {
            Ok(roots) => opts.tls_roots = Some(roots),
            Err(e) => {
                line("closed", serde_json::json!(format!("join failed: {e}")));
                return std::process::ExitCode::from(1);
            }
        }
    }
    opts.relay_only = args.iter().skip(4).any(|a| a == "relay");
    if args.iter().skip(4).any(|a| a == "no-tcp") {
        opts.ice_tcp = false;
    }
    let mut client = match Client::connect(opts).await {
        Ok(c) => c,
        Err(e) => {
            line("closed", serde_json::json!(format!("join failed: {e}")));
            return std::process::ExitCode::from(1);
        }
    };
    line(
        "joined",
        serde_json::json!(client.participant_id().as_str()),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let r = client.stats();
                line("report", serde_json::to_value(&r).unwrap_or_default());
            }
            ev = client.next_event() => match ev {
                Some(m) => line("event", serde_json::to_value(&m).unwrap_or_default()),
                None => {
                    line("closed", serde_json::json!(format!("{:?}", client.close_reason())));
                    return std::process::ExitCode::SUCCESS;
                }
            }
        }
    }
}
