//! `swarmlab node`: one agent per process over QUIC, in real time — a SAPO agent or a pipeline worker.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use genrl::{AgentCtx, DeviceProfile, Event, EventKind, MetricsLog, Sample, WallClock};
use models::data::Corpus;
use transport::quic::{Endpoint, EndpointConfig};
use transport::{Codec, Envelope, Identity, PeerBook, PeerId, Transport, TransportError, p2p};

use crate::config::RunConfig;
use crate::files::{event_line, h5_attr_text, h5_write_text, out_dir, parse_event_line, write_atomic};
use crate::report::weights_hash;

/// This process's place in a swarm of real nodes: its key, the peers file, every id in rank order, and
/// its own rank (its index in the swarm).
pub(crate) struct Node {
    identity: Identity,
    book: PeerBook,
    pub(crate) ids: Vec<PeerId>,
    pub(crate) index: usize,
    pub(crate) addr: SocketAddr,
    quic: EndpointConfig,
    /// Set when the node joins through a relay instead of dialling the peers file's addresses.
    p2p: Option<p2p::Config>,
}

/// How a node joins a swarm whose members it cannot all reach by address: through relays, by their
/// bootstrap addresses (`swarmlab relay` prints them), finding the others in the swarm's table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct P2pJoin {
    /// The relays' addresses, `/ip4/…/udp/…/quic-v1/p2p/<id>`.
    pub(crate) bootstrap: Vec<p2p::Multiaddr>,
    /// Every connection through the relay, none direct (to measure the relay).
    pub(crate) relay_only: bool,
}

/// How a node uses the network: where it listens (its address in the peers file, unless `bind` says
/// otherwise — behind a link emulator, say) and how quickly it gives up on a silent peer: a connection
/// with no traffic for `idle_timeout` is dead (a killed peer is noticed then), and a connection attempt
/// waits as long (10 s at most).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeNet {
    pub(crate) idle_timeout: Duration,
    pub(crate) bind: Option<SocketAddr>,
    /// Join through relays (libp2p) instead of dialling the peers file's addresses.
    pub(crate) p2p: Option<P2pJoin>,
}

impl Default for NodeNet {
    fn default() -> Self {
        Self { idle_timeout: EndpointConfig::default().idle_timeout, bind: None, p2p: None }
    }
}

impl NodeNet {
    fn p2p(&self, bind: SocketAddr) -> Option<p2p::Config> {
        let join = self.p2p.as_ref()?;
        Some(p2p::Config {
            bind,
            bootstrap: join.bootstrap.clone(),
            relay_only: join.relay_only,
            idle_timeout: self.idle_timeout,
            // Joining (a reservation and a record) and reaching a peer (a lookup, a dial and perhaps a
            // hole punch) take a few round trips more than a direct dial.
            connect_timeout: self.idle_timeout.clamp(Duration::from_secs(10), Duration::from_secs(30)),
            ..p2p::Config::default()
        })
    }

    fn endpoint(&self, bind: SocketAddr) -> EndpointConfig {
        let idle_timeout = self.idle_timeout;
        EndpointConfig {
            bind,
            idle_timeout,
            keep_alive: idle_timeout / 4,
            connect_timeout: idle_timeout.min(Duration::from_secs(10)),
            ..EndpointConfig::default()
        }
    }
}

impl Node {
    /// Loads the key and the peers file; `expected` nodes must be listed (`what` says why, for the error),
    /// this node's id among them.
    pub(crate) fn load(key: &Path, peers: &Path, expected: usize, what: &str, net: NodeNet) -> Result<Self> {
        let identity = Identity::load(key)?;
        let book = PeerBook::load(peers)?;
        let me = identity.peer_id();
        let ids: Vec<PeerId> = book.ids().collect();
        let index = ids.iter().position(|p| *p == me).with_context(|| format!("{me} is not in {}", peers.display()))?;
        if ids.len() != expected {
            bail!("{} lists {} nodes but {what}", peers.display(), ids.len());
        }
        let listed = book.get(&me).map(|e| e.addr).context("own address")?;
        let addr = net.bind.unwrap_or(listed);
        Ok(Self { identity, book, ids, index, addr, quic: net.endpoint(addr), p2p: net.p2p(addr) })
    }

    /// Lets frames of up to `bytes` through (never less than the default limit): a pipeline worker's
    /// messages carry a stage's whole state to a joiner.
    pub(crate) fn allow_frames_of(&mut self, bytes: usize) -> Result<()> {
        let limit = bytes.clamp(transport::codec::DEFAULT_MAX_FRAME, transport::codec::MAX_FRAME_CEILING);
        self.quic.codec = transport::Codec::new(limit)?;
        if let Some(p2p) = self.p2p.as_mut() {
            p2p.codec = self.quic.codec;
        }
        Ok(())
    }

    /// This node's key.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
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
        agent: impl FnOnce(AgentCtx<NodeEndpoint, WallClock>, P) -> Fut,
    ) -> Result<R>
    where
        Fut: Future<Output = Result<R>>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let endpoint = match &self.p2p {
            None => {
                let _inside = runtime.enter();
                NodeEndpoint::Quic(Endpoint::bind(&self.identity, self.book.clone(), self.quic.clone())?)
            }
            Some(config) => {
                let started = std::time::Instant::now();
                let endpoint =
                    runtime.block_on(p2p::Endpoint::start(&self.identity, self.book.clone(), config.clone()))?;
                let addrs: Vec<String> = endpoint.listen_addrs().iter().map(ToString::to_string).collect();
                eprintln!(
                    "joined the swarm through its relay in {:.0} ms; reachable at {}",
                    started.elapsed().as_secs_f64() * 1e3,
                    addrs.join(", ")
                );
                NodeEndpoint::P2p(endpoint)
            }
        };
        let prepared = prepare()?;
        runtime.block_on(async {
            let ctx = AgentCtx {
                index: self.index as u32,
                transport: endpoint.clone(),
                clock: WallClock::new(),
                profile,
                metrics: genrl::Metrics::new(),
                peers: self.ids.clone(),
            };
            let result = agent(ctx, prepared).await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if let NodeEndpoint::P2p(endpoint) = &endpoint {
                self.print_paths(endpoint);
            }
            endpoint.close().await;
            result
        })
    }
}

impl Node {
    /// One line per peer this node exchanged messages with over libp2p: how they travelled
    /// (`p2p path to node 2: direct (hole punched …)`), for whoever reads the log (`swarmlab launch`
    /// puts them in its report).
    fn print_paths(&self, endpoint: &p2p::Endpoint) {
        for (peer, path) in endpoint.paths() {
            if let Some(place) = self.ids.iter().position(|id| *id == peer) {
                eprintln!("p2p path to node {place}: {path}");
            }
        }
    }
}

/// A node's endpoint: QUIC to the peers file's addresses, or libp2p through relays.
#[derive(Debug, Clone)]
pub(crate) enum NodeEndpoint {
    /// Dials the peers file's addresses.
    Quic(Endpoint),
    /// Joins through relays and finds the others (`--bootstrap`).
    P2p(p2p::Endpoint),
}

impl NodeEndpoint {
    async fn close(&self) {
        match self {
            Self::Quic(e) => e.close().await,
            Self::P2p(e) => e.close().await,
        }
    }
}

impl Transport for NodeEndpoint {
    fn local_peer(&self) -> PeerId {
        match self {
            Self::Quic(e) => e.local_peer(),
            Self::P2p(e) => e.local_peer(),
        }
    }

    fn codec(&self) -> Codec {
        match self {
            Self::Quic(e) => e.codec(),
            Self::P2p(e) => e.codec(),
        }
    }

    async fn send(&self, to: PeerId, payload: Bytes) -> Result<(), TransportError> {
        match self {
            Self::Quic(e) => e.send(to, payload).await,
            Self::P2p(e) => e.send(to, payload).await,
        }
    }

    async fn recv(&self) -> Result<Envelope, TransportError> {
        match self {
            Self::Quic(e) => e.recv().await,
            Self::P2p(e) => e.recv().await,
        }
    }
}

/// What a swarm game's node is: which game, its size, where it writes.
pub(crate) struct AgentNode<'a> {
    /// The game (`sapo`, `codezero`): the node log's protocol and the first line's words.
    pub(crate) protocol: &'static str,
    /// Honest agents and lying ones: the places the peers file must have.
    pub(crate) agents: usize,
    /// Lying agents (the last places).
    pub(crate) liars: usize,
    /// This node's key file.
    pub(crate) key: &'a Path,
    /// The peers file.
    pub(crate) peers: &'a Path,
    /// Output folder (a default under `runs/` if not given).
    pub(crate) out: Option<PathBuf>,
    /// Timeouts and address.
    pub(crate) net: NodeNet,
    /// The simulated profile its agent runs with.
    pub(crate) profile: DeviceProfile,
}

/// Runs one agent of a swarm game as this node, in real time: loads the key and peers file, runs
/// `prepare` (a warm start), plays `agent` (given the node's place, which prints `round r/R` lines for
/// `swarmlab launch`), then writes `agent-<place>.json` with its result and `node-<place>.h5` with its
/// series and events, and prints `describe` of the result.
pub(crate) fn agent_node<P, R, Fut>(
    node: AgentNode<'_>,
    prepare: impl FnOnce() -> Result<P>,
    agent: impl FnOnce(AgentCtx<NodeEndpoint, WallClock>, P, usize) -> Fut,
    describe: impl FnOnce(&R) -> String,
) -> Result<()>
where
    R: serde::Serialize,
    Fut: Future<Output = Result<R>>,
{
    let what = format!("the configuration has {} agents and {} liars", node.agents, node.liars);
    let this = Node::load(node.key, node.peers, node.agents + node.liars, &what, node.net)?;
    let index = this.index;
    let out = out_dir(node.out, "node")?;
    eprintln!(
        "swarmlab node {}: {} agent {index} of {}, listening on {}",
        this.id(),
        node.protocol,
        this.ids.len(),
        this.addr
    );
    let started = std::time::Instant::now();
    let (result, log) = this.run(node.profile, prepare, |ctx, prepared| {
        let metrics = ctx.metrics.clone();
        let played = agent(ctx, prepared, index);
        async move { anyhow::Ok((played.await?, metrics.snapshot())) }
    })?;
    let file = out.join(format!("agent-{index}.json"));
    write_atomic(&file, serde_json::to_string_pretty(&result)?.as_bytes())?;
    let wall_s = started.elapsed().as_secs_f64();
    NodeLog { place: index, peer: this.id().to_string(), protocol: node.protocol.into(), wall_s, log }
        .save(&out.join(format!("node-{index}.h5")))?;
    println!("agent {index}: {}; wrote {}", describe(&result), file.display());
    Ok(())
}

/// When a node starts, relative to the swarm's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// With the others.
    Now,
    /// Late, joining the run under way (`--join`).
    Late,
    /// In the place of a killed node, with its key (`--replace`), or back in a place that left.
    Replacement,
    /// Not to train: to announce, with a killed node's key, that its place has left the run for good
    /// (`--leave`).
    Leave,
}

/// Runs worker `index` (its id's rank in the peers file) of the first arm of `cfg`. Unless the run's
/// replicas form elastic groups, a killed worker's successor may take its place
/// ([`pipeline::Replacement`]).
pub(crate) fn pipeline_node(
    cfg: &RunConfig,
    corpus: Arc<Corpus>,
    key: &Path,
    peers: &Path,
    out: Option<PathBuf>,
    net: NodeNet,
    start: Start,
) -> Result<()> {
    let mut spec = cfg.spec(0)?;
    spec.late_join = start == Start::Late;
    spec.replacement = match start {
        Start::Replacement => pipeline::Replacement::Replaces,
        Start::Leave if spec.sync.elastic_wait().is_some() => {
            bail!("--leave: an elastic group already goes on without a replica that is gone")
        }
        _ if spec.sync.elastic_wait().is_some() => pipeline::Replacement::Off,
        _ => pipeline::Replacement::Ready,
    };
    let workers = spec.stages * spec.replicas;
    let what = format!("the first arm has {} stages x {} replicas", spec.stages, spec.replicas);
    let mut node = Node::load(key, peers, workers, &what, net)?;
    let index = node.index;
    let out = out_dir(out, "node")?;
    if spec.replacement != pipeline::Replacement::Off && spec.recovery.checkpoints().is_some() {
        // Checkpoint-restart on real nodes: the checkpoints also go to storage, where a killed worker's
        // successor (started with the same output folder) reads its predecessor's.
        spec.checkpoint_dir = Some(out.join("checkpoints"));
    }
    spec.validate()?;
    // A joiner of an elastic group is sent a stage's weights, two optimizer moments and up to two outer
    // vectors in one message: five f32 values per parameter (the whole model's count bounds a stage's).
    node.allow_frames_of(spec.model.param_count().saturating_mul(5 * 4).saturating_add(1 << 20))?;
    eprintln!(
        "swarmlab node {}: worker {index} of {workers} (stage {}, replica {}) of arm {:?}, listening on {}",
        node.id(),
        index / spec.replicas,
        index % spec.replicas,
        cfg.arms[0].label,
        node.addr
    );
    let started = std::time::Instant::now();
    if start == Start::Leave {
        return announce_leave(&node, spec, corpus, &out, started);
    }
    // Progress lines (`step n/N`) for whoever watches, `swarmlab launch` included.
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    spec.progress = Some(progress.clone());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (progress, done, steps) = (progress.clone(), done.clone(), spec.steps);
        std::thread::spawn(move || {
            let mut shown = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now = progress.load(std::sync::atomic::Ordering::Relaxed);
                if now > shown {
                    shown = now;
                    eprintln!("step {now}/{steps}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let run = node.run(
        spec.world.profiles[index].clone(),
        || Ok(()),
        |ctx, ()| async move {
            let metrics = ctx.metrics.clone();
            let worker = pipeline::worker::run_worker(ctx, Arc::new(spec), corpus, None).await?;
            anyhow::Ok((worker, metrics.snapshot()))
        },
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = ticker.join();
    let (worker, metrics) = run?;
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
    let wall_s = started.elapsed().as_secs_f64();
    NodeLog { place: index, peer: node.id().to_string(), protocol: "pipeline".into(), wall_s, log: metrics }
        .save(&out.join(format!("node-{index}.h5")))?;
    println!(
        "worker {index}: stage {}, replica {}, weights {}; wrote {}",
        worker.stage,
        worker.replica,
        summary["weights_blake3"],
        file.display()
    );
    Ok(())
}

/// Announces that worker `node.index` has left the run for good ([`pipeline::worker::leave_run`]) and
/// writes the announcement's events to `node-<index>.h5` (the node itself, killed, wrote none).
fn announce_leave(
    node: &Node,
    spec: pipeline::PipelineSpec,
    corpus: Arc<Corpus>,
    out: &Path,
    started: std::time::Instant,
) -> Result<()> {
    let index = node.index;
    let (resume, metrics) = node.run(
        spec.world.profiles[index].clone(),
        || Ok(()),
        |ctx, ()| async move {
            let metrics = ctx.metrics.clone();
            let resume = pipeline::worker::leave_run(ctx, Arc::new(spec), corpus).await?;
            anyhow::Ok((resume, metrics.snapshot()))
        },
    )?;
    let wall_s = started.elapsed().as_secs_f64();
    NodeLog { place: index, peer: node.id().to_string(), protocol: "pipeline".into(), wall_s, log: metrics }
        .save(&out.join(format!("node-{index}.h5")))?;
    println!("worker {index} left the run for good: the others train again from step {resume} without it");
    Ok(())
}

/// What one node leaves for `swarmlab launch` (and anyone else) to gather: who it was and everything
/// it measured. Written to `node-<place>.h5`; `launch.h5` holds one such group per node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeLog {
    /// Its place in the swarm.
    pub(crate) place: usize,
    /// Its peer id.
    pub(crate) peer: String,
    /// `sapo` or `pipeline`.
    pub(crate) protocol: String,
    /// Wall seconds from listening to the end.
    pub(crate) wall_s: f64,
    /// Its series (one value per step or round) and events.
    pub(crate) log: MetricsLog,
}

fn event_kind_name(kind: &EventKind) -> String {
    match kind {
        EventKind::Other(name) => name.clone(),
        known => format!("{known:?}"),
    }
}

fn event_kind(name: &str) -> EventKind {
    match name {
        "Join" => EventKind::Join,
        "Leave" => EventKind::Leave,
        "Failure" => EventKind::Failure,
        "Recovery" => EventKind::Recovery,
        "Timeout" => EventKind::Timeout,
        "Rejected" => EventKind::Rejected,
        other => EventKind::Other(other.to_owned()),
    }
}

impl NodeLog {
    /// Writes the log into `g`: attributes `place`, `peer`, `protocol`, `wall_s`; per series
    /// `<name>_step`, `<name>_time_s`, `<name>_value`; the events as lines `time_s<TAB>kind<TAB>detail`.
    fn write_to(&self, g: &hdf5::Group) -> Result<()> {
        g.new_attr::<u64>().create("place")?.write_scalar(&(self.place as u64))?;
        g.new_attr::<f64>().create("wall_s")?.write_scalar(&self.wall_s)?;
        for (name, value) in [("peer", &self.peer), ("protocol", &self.protocol)] {
            h5_write_text(g, name, value)?;
        }
        for (name, samples) in &self.log.series {
            let steps: Vec<u64> = samples.iter().map(|s| s.step).collect();
            let times: Vec<f64> = samples.iter().map(|s| s.time.as_secs_f64()).collect();
            let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
            g.new_dataset::<u64>().shape(steps.len()).create(format!("{name}_step").as_str())?.write_raw(&steps)?;
            g.new_dataset::<f64>().shape(times.len()).create(format!("{name}_time_s").as_str())?.write_raw(&times)?;
            g.new_dataset::<f64>().shape(values.len()).create(format!("{name}_value").as_str())?.write_raw(&values)?;
        }
        let lines: Vec<hdf5::types::VarLenUnicode> = self
            .log
            .events
            .iter()
            .map(|e| event_line(e.time.as_secs_f64(), &event_kind_name(&e.kind), &e.detail))
            .collect::<Result<_>>()?;
        g.new_dataset::<hdf5::types::VarLenUnicode>().shape(lines.len()).create("events")?.write_raw(&lines)?;
        Ok(())
    }

    /// Reads a log [`NodeLog::write_to`] wrote.
    fn read_from(g: &hdf5::Group) -> Result<Self> {
        let place: u64 = g.attr("place").and_then(|a| a.read_scalar()).context("no attribute \"place\"")?;
        let wall_s: f64 = g.attr("wall_s").and_then(|a| a.read_scalar()).context("no attribute \"wall_s\"")?;
        let mut log = MetricsLog::default();
        for member in g.member_names()? {
            let Some(name) = member.strip_suffix("_value") else { continue };
            let values: Vec<f64> = g.dataset(&member)?.read_raw()?;
            let steps: Vec<u64> = g.dataset(&format!("{name}_step"))?.read_raw()?;
            let times: Vec<f64> = g.dataset(&format!("{name}_time_s"))?.read_raw()?;
            if steps.len() != values.len() || times.len() != values.len() {
                bail!("series {name:?}: {} steps, {} times, {} values", steps.len(), times.len(), values.len());
            }
            let samples = (steps.into_iter().zip(times).zip(values))
                .map(|((step, t), value)| Sample {
                    agent: Some(place as u32),
                    step,
                    time: Duration::try_from_secs_f64(t).unwrap_or_default(),
                    value,
                })
                .collect();
            log.series.insert(name.to_owned(), samples);
        }
        for line in g.dataset("events")?.read_raw::<hdf5::types::VarLenUnicode>()? {
            let Some((t, kind, detail)) = parse_event_line(line.as_str()) else {
                bail!("malformed event line {:?}", line.as_str());
            };
            let time = Duration::try_from_secs_f64(t).unwrap_or_default();
            log.events.push(Event {
                time,
                agent: Some(place as u32),
                kind: event_kind(kind),
                detail: detail.to_owned(),
            });
        }
        Ok(Self {
            place: place as usize,
            peer: h5_attr_text(g, "peer")?,
            protocol: h5_attr_text(g, "protocol")?,
            wall_s,
            log,
        })
    }

    /// Writes `path` (a temporary file renamed into place).
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        transport::fsutil::replace_with(path, |tmp| -> Result<()> {
            let file = hdf5::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            self.write_to(&file)?;
            file.flush()?;
            Ok(())
        })
        .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Reads a file [`NodeLog::save`] wrote.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let file = hdf5::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Self::read_from(&file).with_context(|| format!("{} is not a node log", path.display()))
    }

    /// Writes every node's log into one file, a group `nodes/<place>` each.
    pub(crate) fn gather(logs: &[Self], path: &Path) -> Result<()> {
        transport::fsutil::replace_with(path, |tmp| -> Result<()> {
            let file = hdf5::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            let nodes = file.create_group("nodes")?;
            for log in logs {
                log.write_to(&nodes.create_group(&log.place.to_string())?)?;
            }
            file.flush()?;
            Ok(())
        })
        .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// `swarmlab relay`: a relay and bootstrap for swarms that join through one ([`p2p::Role::Relay`]).
/// Prints the addresses to join with (and writes them to `addr_file`, one per line, written aside and
/// renamed), then serves until Ctrl-C.
pub(crate) fn relay(key: &Path, listen: SocketAddr, addr_file: Option<&Path>) -> Result<()> {
    let identity = Identity::load_or_generate(key)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let config =
        p2p::Config { bind: listen, role: p2p::Role::Relay, accept: p2p::AcceptPolicy::Any, ..p2p::Config::default() };
    let endpoint = runtime
        .block_on(p2p::Endpoint::start(&identity, PeerBook::new(), config))
        .with_context(|| format!("cannot start a relay on {listen}"))?;
    let addrs: Vec<String> = endpoint.listen_addrs().iter().map(ToString::to_string).collect();
    eprintln!("swarmlab relay {} (libp2p id {}): nodes join with", identity.peer_id(), endpoint.libp2p_id());
    for addr in &addrs {
        println!("--bootstrap {addr}");
    }
    if let Some(file) = addr_file {
        write_atomic(file, (addrs.join("\n") + "\n").as_bytes())?;
    }
    let (stop, stopped) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop.send(());
    })
    .context("cannot catch Ctrl-C")?;
    let _ = stopped.recv();
    eprintln!("swarmlab relay: stopped");
    runtime.block_on(endpoint.close());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node log survives the round trip through HDF5, series, events and all; a file that is not one
    /// is an error naming it.
    #[test]
    fn node_logs_round_trip_through_hdf5() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let metrics = genrl::Metrics::new();
        for step in 0..5 {
            metrics.record("reward", Some(2), step, Duration::from_millis(100 * step), step as f64 / 4.0);
        }
        metrics.event(Duration::from_secs(1), Some(2), EventKind::Leave, "peer 1a2b unreachable in round 3");
        metrics.event(Duration::from_secs(2), Some(2), EventKind::Other("checkpoint".into()), "step 4");
        let log =
            NodeLog { place: 2, peer: "1a2b".into(), protocol: "sapo".into(), wall_s: 3.5, log: metrics.snapshot() };
        let path = dir.path().join("node-2.h5");
        log.save(&path)?;
        assert_eq!(NodeLog::load(&path)?, log);
        let all = dir.path().join("launch.h5");
        NodeLog::gather(std::slice::from_ref(&log), &all)?;
        let file = hdf5::File::open(&all)?;
        assert_eq!(NodeLog::read_from(&file.group("nodes/2")?)?, log);
        std::fs::write(dir.path().join("bad.h5"), b"not hdf5")?;
        assert!(format!("{:#}", NodeLog::load(&dir.path().join("bad.h5")).unwrap_err()).contains("bad.h5"));
        Ok(())
    }
}
