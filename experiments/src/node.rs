//! `swarmlab node --protocol pipeline`: one pipeline worker per process over QUIC, in real time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use models::data::Corpus;
use transport::quic::{Endpoint, EndpointConfig};
use transport::{Identity, PeerBook, PeerId};

use crate::config::RunConfig;
use crate::report::{weights_hash, write_atomic};

/// This node's identity, the swarm's ids in rank order, and this node's place among them.
pub(crate) fn place(key: &Path, peers: &Path) -> Result<(Identity, PeerBook, Vec<PeerId>, usize)> {
    let identity = Identity::load(key)?;
    let book = PeerBook::load(peers)?;
    let me = identity.peer_id();
    let ids: Vec<PeerId> = book.ids().collect();
    let index = ids.iter().position(|p| *p == me).with_context(|| format!("{me} is not in {}", peers.display()))?;
    Ok((identity, book, ids, index))
}

/// Runs worker `index` (its id's rank in the peers file) of the first arm of `cfg`.
pub(crate) fn pipeline_node(
    cfg: &RunConfig,
    corpus: Arc<Corpus>,
    key: &Path,
    peers: &Path,
    out: Option<PathBuf>,
) -> Result<()> {
    let (identity, book, ids, index) = place(key, peers)?;
    let spec = cfg.spec(0)?;
    let workers = spec.stages * spec.replicas;
    if ids.len() != workers {
        bail!(
            "{} lists {} nodes but the first arm has {} stages x {} replicas",
            peers.display(),
            ids.len(),
            spec.stages,
            spec.replicas
        );
    }
    let addr = book.get(&identity.peer_id()).map(|e| e.addr).context("own address")?;
    let out = crate::out_dir(out, "node")?;
    eprintln!(
        "swarmlab node {}: worker {index} of {workers} (stage {}, replica {}) of arm {:?}, listening on {addr}",
        identity.peer_id(),
        index / spec.replicas,
        index % spec.replicas,
        cfg.arms[0].label
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let endpoint =
            Endpoint::bind(&identity, book.clone(), EndpointConfig { bind: addr, ..EndpointConfig::default() })?;
        let ctx = genrl::AgentCtx {
            index: index as u32,
            transport: endpoint.clone(),
            clock: genrl::WallClock::new(),
            device: spec.device.clone(),
            metrics: genrl::Metrics::new(),
            peers: ids.clone(),
        };
        let metrics = ctx.metrics.clone();
        let result = pipeline::worker::run_worker(ctx, Arc::new(spec.clone()), corpus, None).await;
        // Let the last messages leave before the endpoint closes.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        endpoint.close().await;
        anyhow::Ok((result?, metrics.snapshot()))
    })?;
    let (worker, metrics) = result;
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
