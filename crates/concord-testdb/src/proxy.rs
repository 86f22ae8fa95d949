//! A TCP proxy in front of PostgreSQL for one coordinator instance, so a
//! test can cut that instance off the database while others keep it.
//!
//! Severed, the proxy closes every connection it carries and holds new ones
//! open without forwarding a byte: to the instance the database looks gone
//! (connections break, new ones hang in the start-up handshake), as behind a
//! network partition. Restored, it forwards again; connections accepted
//! while severed are closed then, so the instance reconnects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The proxy; stops with its token.
pub struct Proxy {
    pub addr: SocketAddr,
    severed: Arc<AtomicBool>,
    /// Bumped on every sever and restore: connections compare it with the
    /// one they started under.
    epoch: watch::Sender<u64>,
    stop: CancellationToken,
}

impl Proxy {
    /// Forwards connections on a loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let severed = Arc::new(AtomicBool::new(false));
        let (epoch, _) = watch::channel(0u64);
        let stop = CancellationToken::new();
        let proxy = Self {
            addr,
            severed: severed.clone(),
            epoch: epoch.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let _ = client.set_nodelay(true);
                let changed = epoch.subscribe();
                let severed = severed.load(Ordering::SeqCst);
                tokio::spawn(serve(client, upstream, severed, changed, stop.clone()));
            }
        });
        Ok(proxy)
    }

    /// Cuts the instance off: open connections close, new ones hang.
    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.severed.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One connection: forwarded until the epoch changes (a sever), or held
/// silent until it changes (a restore) when accepted while severed.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    severed: bool,
    mut changed: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    if severed {
        tokio::select! {
            _ = changed.changed() => {}
            _ = stop.cancelled() => {}
        }
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = changed.changed() => {}
        _ = stop.cancelled() => {}
    }
}
