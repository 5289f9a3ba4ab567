//! Ctrl-C and SIGTERM: the first asks for a graceful stop, the second exits
//! at once.

use std::future::Future;
use std::io;

use tokio::sync::oneshot;

/// Exit status of a run stopped by a signal (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// Starts listening; the returned future completes on the first Ctrl-C or
/// SIGTERM. A second one ends the process at once with status 130: whatever
/// was written stays valid, since every result line is written whole.
pub fn listen() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let (first_sender, first) = oneshot::channel::<()>();
    let mut next = Signals::new()?;
    tokio::spawn(async move {
        next.recv().await;
        let _ = first_sender.send(());
        next.recv().await;
        eprintln!("turbo-run: interrupted again: exiting at once");
        std::process::exit(i32::from(INTERRUPTED));
    });
    Ok(async move {
        // An error means the listener is gone with the runtime: stop too.
        let _ = first.await;
    })
}

#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> io::Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
