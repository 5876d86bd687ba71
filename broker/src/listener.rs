//! Accepting connections with a limit: each accepted connection holds a slot until it
//! closes, and one that arrives while every slot is taken is closed at once (and
//! counted in a warning) rather than served, so a flood of connections cannot exhaust
//! the node's file descriptors or memory.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long to wait after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How often refused connections are reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// An accepted connection holding one of its listener's slots.
#[derive(Debug)]
pub struct Limited {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Limited {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Counts refused connections and reports them at most every [`REPORT_EVERY`].
#[derive(Debug)]
struct Refusals {
    port: &'static str,
    limit: usize,
    count: AtomicU64,
    last_report: Mutex<Option<Instant>>,
}

impl Refusals {
    fn refused(&self, peer: std::net::SocketAddr) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_report.lock();
        if last.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                port = self.port,
                limit = self.limit,
                %peer,
                refused_so_far = count,
                "closing a new connection: the port already serves its limit of connections \
                 (raise it in the config if the clients are legitimate)"
            );
        }
    }
}

/// The connections `listener` accepts, at most `limit` open at once; `port` names the
/// listener in warnings.
pub fn limited(
    listener: TcpListener,
    limit: usize,
    port: &'static str,
) -> impl Stream<Item = io::Result<Limited>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(limit));
    let refusals = Arc::new(Refusals { port, limit, count: AtomicU64::new(0), last_report: Mutex::new(None) });
    futures::stream::unfold(listener, move |listener| {
        let (slots, refusals) = (slots.clone(), refusals.clone());
        async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait rather than spin.
                        tracing::warn!(port, error = %e, "cannot accept a connection; trying again in 100 ms");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let _ = stream.set_nodelay(true);
                        return Some((Ok(Limited { stream, _slot: slot }), listener));
                    }
                    Err(_) => {
                        refusals.refused(peer);
                        drop(stream);
                    }
                }
            }
        }
    })
}
