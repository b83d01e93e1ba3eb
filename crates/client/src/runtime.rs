//! The `webrtc` crate's tokio runtime with one change: every UDP socket it wraps (the peer
//! connection's host sockets, which its TURN client shares) gets a large receive and send
//! buffer ([`SOCKET_BUFFER`]).
//!
//! Why: over TURN/TCP and TURN/TLS the local bridge ([`crate::turn_tcp`]) hands the peer
//! connection's socket everything a stream read returned at once — after a scheduling delay,
//! dozens of datagrams in one burst. With the Linux default (~208 KiB, ~90 datagrams) a
//! subscriber receiving 19 streams overflowed it (part of the 46.8 % loss at 20 sites over
//! TURN/TLS, docs/benchmarks.md). The kernel caps the size at `net.core.rmem_max`/`wmem_max`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

/// Receive and send buffer asked for each peer-connection UDP socket.
pub const SOCKET_BUFFER: usize = 2 << 20;

/// [`TokioRuntime`] with large UDP socket buffers.
#[derive(Debug)]
pub struct BufferedTokioRuntime;

impl Runtime for BufferedTokioRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        set_buffers(&socket, SOCKET_BUFFER);
        TokioRuntime.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        TokioRuntime.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        TokioRuntime.resolve_host(host)
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio (large UDP buffers)"
    }
}

/// Ask for `bytes` of receive and send buffer on `socket` (best effort: the kernel caps it,
/// and a refusal only leaves the default).
pub fn set_buffers(socket: &impl std::os::fd::AsFd, bytes: usize) {
    let s = socket2::SockRef::from(socket);
    if let Err(e) = s
        .set_recv_buffer_size(bytes)
        .and_then(|()| s.set_send_buffer_size(bytes))
    {
        tracing::debug!(error = %e, "cannot size a UDP socket's buffers");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn wrapped_udp_sockets_get_larger_buffers() {
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let default = socket2::SockRef::from(&plain).recv_buffer_size().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let probe = sock.try_clone().unwrap();
        let _wrapped = BufferedTokioRuntime.wrap_udp_socket(sock).unwrap();
        let now = socket2::SockRef::from(&probe).recv_buffer_size().unwrap();
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        // Linux doubles the asked size (bookkeeping) and caps the ask at rmem_max.
        if cap > default {
            assert!(
                now > default,
                "buffer {now} not larger than the default {default}"
            );
        }
    }
}
