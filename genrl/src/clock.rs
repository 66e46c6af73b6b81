//! Clocks: the same agent code waits on virtual time in simulation and on real time over QUIC.

use std::future::Future;
use std::time::Duration;

use transport::sim::SimClock;

/// A source of time an agent can read and sleep on.
pub trait Clock: Clone + Send + Sync + 'static {
    /// Time since the clock's origin.
    fn now(&self) -> Duration;

    /// Waits `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        Self::now(self)
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        Self::sleep(self, d)
    }
}

/// Real time, from when the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    origin: tokio::time::Instant,
}

impl WallClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self { origin: tokio::time::Instant::now() }
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for WallClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// A [`timeout`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Elapsed(pub Duration);

/// Runs `future` for at most `d` on `clock`. If both finish at the same instant, the future wins.
pub async fn timeout<C: Clock, F: Future>(clock: &C, d: Duration, future: F) -> Result<F::Output, Elapsed> {
    tokio::select! {
        biased;
        out = future => Ok(out),
        () = clock.sleep(d) => Err(Elapsed(d)),
    }
}
