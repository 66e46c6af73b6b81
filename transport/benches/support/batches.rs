//! Shared by the transport benches that move bulk messages between two endpoints.

use std::time::{Duration, Instant};

use bytes::Bytes;
use transport::Transport;

/// A criterion `iter_custom` routine: per iteration, `batch` messages of `message` bytes from `a` to `b`,
/// timed until `b` has received them all.
pub(crate) fn send_batches<T: Transport>(
    rt: &tokio::runtime::Runtime,
    a: &T,
    b: &T,
    message: usize,
    batch: usize,
) -> impl FnMut(u64) -> Duration {
    let payload = Bytes::from(vec![0x5au8; message]);
    let (a, b) = (a.clone(), b.clone());
    move |iters| {
        rt.block_on(async {
            let to = b.local_peer();
            let start = Instant::now();
            for _ in 0..iters {
                let receiver = {
                    let b = b.clone();
                    tokio::spawn(async move {
                        for _ in 0..batch {
                            let m = b.recv().await.expect("recv");
                            assert_eq!(m.payload.len(), message);
                        }
                    })
                };
                for _ in 0..batch {
                    a.send(to, payload.clone()).await.expect("send");
                }
                receiver.await.expect("receiver");
            }
            start.elapsed()
        })
    }
}
