//! `swarmlab node`: one agent per process over QUIC, in real time — a SAPO agent or a pipeline worker.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use genrl::{AgentCtx, DeviceProfile, WallClock};
use models::data::Corpus;
use transport::quic::{Endpoint, EndpointConfig};
use transport::{Identity, PeerBook, PeerId};

use crate::config::RunConfig;
use crate::report::{weights_hash, write_atomic};

/// This process's place in a swarm of real nodes: its key, the peers file, every id in rank order, and
/// its own rank (its index in the swarm).
pub(crate) struct Node {
    identity: Identity,
    book: PeerBook,
    pub(crate) ids: Vec<PeerId>,
    pub(crate) index: usize,
    pub(crate) addr: SocketAddr,
}

impl Node {
    /// Loads the key and the peers file; `expected` nodes must be listed (`what` says why, for the error),
    /// this node's id among them.
    pub(crate) fn load(key: &Path, peers: &Path, expected: usize, what: &str) -> Result<Self> {
        let identity = Identity::load(key)?;
        let book = PeerBook::load(peers)?;
        let me = identity.peer_id();
        let ids: Vec<PeerId> = book.ids().collect();
        let index = ids.iter().position(|p| *p == me).with_context(|| format!("{me} is not in {}", peers.display()))?;
        if ids.len() != expected {
            bail!("{} lists {} nodes but {what}", peers.display(), ids.len());
        }
        let addr = book.get(&me).map(|e| e.addr).context("own address")?;
        Ok(Self { identity, book, ids, index, addr })
    }

    /// This node's id.
    pub(crate) fn id(&self) -> PeerId {
        self.identity.peer_id()
    }

    /// Listens on its address, runs `prepare` (peers can reach the node meanwhile: what they send waits in
    /// its inbox), then plays `agent` on the endpoint in real time; lets the last messages leave before
    /// the endpoint closes.
    pub(crate) fn run<P, R, Fut>(
        &self,
        profile: DeviceProfile,
        prepare: impl FnOnce() -> Result<P>,
        agent: impl FnOnce(AgentCtx<Endpoint, WallClock>, P) -> Fut,
    ) -> Result<R>
    where
        Fut: Future<Output = Result<R>>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let endpoint = {
            let _inside = runtime.enter();
            let config = EndpointConfig { bind: self.addr, ..EndpointConfig::default() };
            Endpoint::bind(&self.identity, self.book.clone(), config)?
        };
        let prepared = prepare()?;
        runtime.block_on(async {
            let ctx = AgentCtx {
                index: self.index as u32,
                transport: endpoint.clone(),
                clock: WallClock::new(),
                device: profile,
                metrics: genrl::Metrics::new(),
                peers: self.ids.clone(),
            };
            let result = agent(ctx, prepared).await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            endpoint.close().await;
            result
        })
    }
}

/// Runs worker `index` (its id's rank in the peers file) of the first arm of `cfg`.
pub(crate) fn pipeline_node(
    cfg: &RunConfig,
    corpus: Arc<Corpus>,
    key: &Path,
    peers: &Path,
    out: Option<PathBuf>,
) -> Result<()> {
    let spec = cfg.spec(0)?;
    let workers = spec.stages * spec.replicas;
    let what = format!("the first arm has {} stages x {} replicas", spec.stages, spec.replicas);
    let node = Node::load(key, peers, workers, &what)?;
    let index = node.index;
    let out = crate::out_dir(out, "node")?;
    eprintln!(
        "swarmlab node {}: worker {index} of {workers} (stage {}, replica {}) of arm {:?}, listening on {}",
        node.id(),
        index / spec.replicas,
        index % spec.replicas,
        cfg.arms[0].label,
        node.addr
    );
    let (worker, metrics) = node.run(
        spec.device.clone(),
        || Ok(()),
        |ctx, ()| async move {
            let metrics = ctx.metrics.clone();
            let worker = pipeline::worker::run_worker(ctx, Arc::new(spec), corpus, None).await?;
            anyhow::Ok((worker, metrics.snapshot()))
        },
    )?;
    let final_train_loss = metrics.series("train_loss").last().map(|s| s.value);
    let summary = serde_json::json!({
        "index": index,
        "stage": worker.stage,
        "replica": worker.replica,
        "final_train_loss": final_train_loss,
        "weights_blake3": weights_hash(&worker.weights),
    });
    let file = out.join(format!("worker-{index}.json"));
    write_atomic(&file, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    println!(
        "worker {index}: stage {}, replica {}, weights {}; wrote {}",
        worker.stage,
        worker.replica,
        summary["weights_blake3"],
        file.display()
    );
    Ok(())
}
