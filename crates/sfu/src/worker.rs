//! The media worker (being written).
use crate::handle::Command;
use crate::{SfuConfig, SfuError};
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;

pub(crate) fn spawn(
    config: SfuConfig,
    rx: mpsc::Receiver<Command>,
) -> Result<(SocketAddr, std::thread::JoinHandle<()>), SfuError> {
    let sock = UdpSocket::bind(config.bind).map_err(|source| SfuError::Bind { addr: config.bind, source })?;
    let addr = sock.local_addr()?;
    let join = std::thread::Builder::new().name("rakor-media".into()).spawn(move || {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Join { reply, .. } => {
                    let _ = reply.send(Err(SfuError::WorkerGone));
                }
                Command::Stats { reply } => {
                    let _ = reply.send(Default::default());
                }
                Command::Shutdown { reply } => {
                    let _ = reply.send(());
                    break;
                }
                _ => {}
            }
        }
        drop(sock);
    })?;
    Ok((addr, join))
}
