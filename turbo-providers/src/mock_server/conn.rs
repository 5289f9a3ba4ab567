//! Connection faults, played at the socket: the listener wraps every
//! accepted stream in a [`FaultIo`], and the handler asks for a fault on its
//! connection through the [`ConnFaults`] it gets as connect info. The next
//! answer written on that connection is then reset, truncated, held, trickled
//! or stalled. Playing faults here (rather than in the response body) makes
//! them byte-exact: a reset sends no byte, a truncated body has its real
//! `Content-Length` header.
//!
//! State: a requested fault is one atomic per connection (written by the
//! handler, taken by the connection's writer: HTTP/1 serves one request at a
//! time per connection, so the next write is that request's answer). The
//! playing fault's state lives in the [`FaultIo`] alone. [`ActiveFaults`]
//! counts the faults being played (hang, trickle, stall) and wakes waiters
//! when one starts or ends; no lock is held anywhere here.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Sleep;

use super::faults::{FaultKind, TrickleShape};

const NO_FAULT: u8 = 0;

/// Faults being played right now, with a wake-up when one starts or ends.
#[derive(Debug, Default)]
pub(super) struct ActiveFaults {
    count: AtomicU64,
    changed: Notify,
}

impl ActiveFaults {
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `done` holds, re-checking whenever a fault starts or ends.
    pub(super) async fn wait_until(&self, mut done: impl FnMut() -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done() {
                return;
            }
            changed.await;
        }
    }
}

struct ActiveGuard(Arc<ActiveFaults>);

impl ActiveGuard {
    fn enter(active: &Arc<ActiveFaults>) -> Self {
        active.count.fetch_add(1, Ordering::Relaxed);
        active.changed.notify_waiters();
        Self(Arc::clone(active))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
        self.0.changed.notify_waiters();
    }
}

/// The handler's side of a connection: ask for a fault on its next answer.
#[derive(Debug, Clone, Default)]
pub(super) struct ConnFaults(Arc<AtomicU8>);

impl ConnFaults {
    pub(super) fn request(&self, kind: FaultKind) {
        let code = FaultKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(NO_FAULT, |index| index as u8 + 1);
        self.0.store(code, Ordering::Release);
    }

    fn take(&self) -> Option<FaultKind> {
        match self.0.swap(NO_FAULT, Ordering::Acquire) {
            NO_FAULT => None,
            code => FaultKind::ALL.get(usize::from(code - 1)).copied(),
        }
    }
}

/// Connections accepted so far and open now (a client's connection pool
/// size is what a server pays for per client). Counted when the listener
/// accepts and when the connection is dropped; no lock.
#[derive(Debug, Default)]
pub(super) struct ConnectionCounts {
    opened: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
}

impl ConnectionCounts {
    /// (accepted since start or the last reset, open now, most open at once).
    pub(super) fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.opened.load(Ordering::Relaxed),
            self.open.load(Ordering::Relaxed),
            self.max_open.load(Ordering::Relaxed),
        )
    }

    /// Starts counting afresh from the connections open now.
    pub(super) fn reset(&self) {
        self.opened.store(0, Ordering::Relaxed);
        self.max_open
            .store(self.open.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Held by a connection for its lifetime.
struct OpenConnection(Arc<ConnectionCounts>);

impl OpenConnection {
    fn open(counts: &Arc<ConnectionCounts>) -> Self {
        counts.opened.fetch_add(1, Ordering::Relaxed);
        let now = counts.open.fetch_add(1, Ordering::Relaxed) + 1;
        counts.max_open.fetch_max(now, Ordering::Relaxed);
        Self(Arc::clone(counts))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every wrapped connection shares.
#[derive(Debug, Clone)]
pub(super) struct ConnEnv {
    pub(super) trickle: TrickleShape,
    pub(super) active: Arc<ActiveFaults>,
    pub(super) connections: Arc<ConnectionCounts>,
    /// Becomes `true` when the server stops: held connections are reset.
    pub(super) halt: watch::Sender<bool>,
}

/// The server's listener: a TCP listener whose streams can play faults.
pub(super) struct FaultListener {
    inner: TcpListener,
    env: ConnEnv,
}

impl FaultListener {
    pub(super) fn new(inner: TcpListener, env: ConnEnv) -> Self {
        Self { inner, env }
    }
}

impl Listener for FaultListener {
    type Io = FaultIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a mock-server connection");
        }
        let io = FaultIo {
            stream,
            faults: ConnFaults::default(),
            _open: OpenConnection::open(&self.env.connections),
            env: self.env.clone(),
            playing: None,
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, FaultListener>> for ConnFaults {
    fn connect_info(stream: IncomingStream<'_, FaultListener>) -> Self {
        stream.io().faults.clone()
    }
}

/// A fault being played on the answer now being written.
struct Playing {
    kind: FaultKind,
    /// The answer's head so far, until its blank line.
    head: Vec<u8>,
    /// `Content-Length` of the body, once the head is complete.
    body_len: Option<usize>,
    body_sent: usize,
    gap: Option<Pin<Box<Sleep>>>,
    halted: Pin<Box<dyn Future<Output = ()> + Send>>,
    _active: Option<ActiveGuard>,
}

/// An accepted stream that plays the faults its handler asks for.
pub(super) struct FaultIo {
    stream: TcpStream,
    faults: ConnFaults,
    _open: OpenConnection,
    env: ConnEnv,
    playing: Option<Playing>,
}

fn content_length(head: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the mock server dropped the answer",
    )
}

impl FaultIo {
    fn start(&mut self, kind: FaultKind) -> io::Result<()> {
        if kind == FaultKind::Reset {
            // An abortive close: the client reads RST, not a clean end.
            self.stream.set_zero_linger()?;
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "reset injected by the mock server",
            ));
        }
        let mut halt = self.env.halt.subscribe();
        let holds = matches!(
            kind,
            FaultKind::Hang | FaultKind::Trickle | FaultKind::Stall
        );
        self.playing = Some(Playing {
            kind,
            head: Vec::new(),
            body_len: None,
            body_sent: 0,
            gap: None,
            halted: Box::pin(async move {
                let _ = halt.wait_for(|halted| *halted).await;
            }),
            _active: holds.then(|| ActiveGuard::enter(&self.env.active)),
        });
        Ok(())
    }

    /// Pending until the client goes away (an error then) or data arrives.
    fn poll_client_gone(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        match self.stream.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(gone())),
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            // The client sent more (a pipelined request): it is still there.
            Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_faulty(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let Some(playing) = self.playing.as_mut() else {
            return Pin::new(&mut self.stream).poll_write(cx, buf);
        };
        if playing.halted.as_mut().poll(cx).is_ready() {
            let _ = self.stream.set_zero_linger();
            return Poll::Ready(Err(gone()));
        }
        if playing.kind == FaultKind::Hang {
            return self.poll_client_gone(cx);
        }
        if playing.body_len.is_none() {
            // The head goes out whole; find where it ends.
            let carried = playing.head.len().min(3);
            let mut window = playing.head[playing.head.len() - carried..].to_vec();
            window.extend_from_slice(buf);
            let end = window
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(buf.len(), |at| at + 4 - carried);
            let written = ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[..end]))?;
            playing.head.extend_from_slice(&buf[..written]);
            if playing.head.windows(4).any(|w| w == b"\r\n\r\n") {
                let body_len = content_length(&playing.head).unwrap_or(0);
                playing.body_len = Some(body_len);
                if playing.kind == FaultKind::Trickle && body_len == 0 {
                    self.playing = None;
                }
            }
            return Poll::Ready(Ok(written));
        }
        let body_len = playing.body_len.unwrap_or(0);
        let allowed = match playing.kind {
            FaultKind::Truncate | FaultKind::Stall => body_len / 2,
            _ => body_len,
        };
        if playing.body_sent >= allowed {
            return match playing.kind {
                FaultKind::Truncate => Poll::Ready(Err(gone())),
                FaultKind::Stall => self.poll_client_gone(cx),
                _ => {
                    self.playing = None;
                    Pin::new(&mut self.stream).poll_write(cx, buf)
                }
            };
        }
        let mut chunk = allowed - playing.body_sent;
        if playing.kind == FaultKind::Trickle {
            if let Some(gap) = playing.gap.as_mut() {
                if gap.as_mut().poll(cx).is_pending() {
                    return self.poll_client_gone(cx);
                }
                playing.gap = None;
            }
            chunk = chunk.min(self.env.trickle.chunk_bytes.get());
        }
        let end = chunk.min(buf.len());
        let written = ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[..end]))?;
        playing.body_sent += written;
        if playing.kind == FaultKind::Trickle {
            if playing.body_sent < allowed {
                playing.gap = Some(Box::pin(tokio::time::sleep(self.env.trickle.gap)));
            } else {
                // The trickled answer is complete: the connection is free again.
                self.playing = None;
            }
        }
        Poll::Ready(Ok(written))
    }
}

impl AsyncRead for FaultIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.playing.is_none()
            && let Some(kind) = this.faults.take()
        {
            this.start(kind)?;
        }
        this.poll_write_faulty(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.playing.is_none()
            && let Some(kind) = this.faults.take()
        {
            this.start(kind)?;
        }
        if this.playing.is_none() {
            return Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|buf| !buf.is_empty())
            .map_or(&[][..], |buf| &**buf);
        this.poll_write_faulty(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_length_is_read_from_the_head() {
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(content_length(head), Some(42));
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    #[test]
    fn a_requested_fault_is_taken_once() {
        let faults = ConnFaults::default();
        assert_eq!(faults.take(), None);
        for kind in FaultKind::ALL {
            faults.request(kind);
            assert_eq!(faults.take(), Some(kind));
            assert_eq!(faults.take(), None);
        }
    }
}
