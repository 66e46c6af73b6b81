//! `swarmlab launch --local N`: a whole swarm of real nodes on this machine. It makes a key per node and
//! one peers file on free loopback ports, starts N `swarmlab node` processes on one configuration,
//! streams their progress, can kill one mid-run (a fault to watch the others carry on), and gathers
//! what they wrote into `launch.h5` and `report.md`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use transport::relay::{LinkRelay, RelayStats};
use transport::sim::LinkSpec;
use transport::{Identity, PeerBook};

use crate::config::RunConfig;
use crate::files::{out_dir, write_atomic};
use crate::node::{NodeLog, NodeNet, Start};

mod netns;
mod report;
use netns::Namespaces;
use report::{describe, link_fidelity, outcome, report, unit};

/// A node and a round (or step): `NODE@ROUND`. `--kill` kills the node once it reports the round;
/// `--late` starts it once another node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kill {
    pub(crate) node: usize,
    pub(crate) round: u64,
}

impl FromStr for Kill {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (node, round) = s.split_once('@').ok_or_else(|| format!("{s:?}: expected NODE@ROUND, e.g. 3@10"))?;
        Ok(Self {
            node: node.trim().parse().map_err(|_| format!("{node:?} is not a node number"))?,
            round: round.trim().parse().map_err(|_| format!("{round:?} is not a round number"))?,
        })
    }
}

/// What `swarmlab launch` was asked for.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) nodes: usize,
    /// `sapo`, `codezero`, `pipeline` or `verify`.
    pub(crate) protocol: String,
    pub(crate) config: Option<PathBuf>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) net: NodeNet,
    /// Nodes to kill, each once it reports its round (or step); a node may be killed more than once
    /// (its successors too, with `replace`).
    pub(crate) kill: Vec<Kill>,
    /// A node to start late, once another reports a round (or step).
    pub(crate) late: Option<Kill>,
    /// Start a successor in the killed node's place (its key and address) right after `kill`: a
    /// pipeline worker that halts the others and gets its state back by the configured recovery.
    pub(crate) replace: bool,
    /// After `kill`, announce with the killed node's key that its place left the run for good (a
    /// pipeline's others go on without it; SkipPipe schedules its paths again). `late` then names a
    /// place that comes back.
    pub(crate) leave: bool,
    /// Run every node in a network namespace of its own, joined by veth pairs to a bridge (root only).
    pub(crate) netns: bool,
    /// Put the configuration's link model between the nodes (a relay in front of each).
    pub(crate) emulate_link: bool,
    /// Start a libp2p relay and have every node join through it (`swarmlab node --bootstrap`).
    pub(crate) p2p: bool,
    /// With `netns`: nodes each behind a NAT router of their own.
    pub(crate) behind_nat: Vec<usize>,
    /// With `p2p`: every connection through the relay.
    pub(crate) relay_only: bool,
}

impl Launch {
    /// A launch of `nodes` nodes running `protocol` on `config`, on loopback, with nothing else asked.
    pub(crate) fn plain(nodes: usize, protocol: &str, config: Option<PathBuf>, out: Option<PathBuf>) -> Self {
        Self {
            nodes,
            protocol: protocol.into(),
            config,
            out,
            net: NodeNet::default(),
            kill: Vec::new(),
            late: None,
            replace: false,
            leave: false,
            netns: false,
            emulate_link: false,
            p2p: false,
            behind_nat: Vec::new(),
            relay_only: false,
        }
    }
}

/// How a node's process ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Finished,
    Killed {
        round: u64,
    },
    /// Stopped when the launch was interrupted (Ctrl-C).
    Stopped {
        round: u64,
    },
    Failed(String),
    NeverStarted,
}

/// One node's process (once started), place, last reported round and, once it ended, how.
struct Running {
    child: Option<Child>,
    place: usize,
    round: u64,
    outcome: Option<Outcome>,
    /// The rounds (or steps) at which it was killed and a successor started in its place.
    replaced_at: Vec<u64>,
    /// The step at which it was killed and its leave announced, and whether it came back since.
    left_at: Option<(u64, bool)>,
}

/// A progress line of a node (`round 12/40`, `step 3/100`): the number reached.
fn progress(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("round ").or_else(|| line.strip_prefix("step "))?;
    rest.split('/').next()?.trim().parse().ok()
}

/// The configuration every node runs, checked: its text, how many nodes it needs and the link model of
/// its simulated network. Nothing is written until it is known to fit the launch.
fn prepare_config(launch: &Launch) -> Result<(String, LinkSpec)> {
    let (text, source) = match &launch.config {
        Some(source) => {
            (crate::files::read_text(source, crate::files::MAX_CONFIG_BYTES)?, source.display().to_string())
        }
        None if launch.protocol == "pipeline" => {
            (crate::config::EXAMPLE.to_owned(), "the built-in configuration".into())
        }
        None if launch.protocol == "verify" => {
            (toml::to_string(&crate::verify_node::VerifyConfig::default())?, "the built-in configuration".into())
        }
        None if launch.protocol == "codezero" => {
            (toml::to_string(&codezero::CodeZeroConfig::default())?, "the built-in configuration".into())
        }
        None => (toml::to_string(&sapo::SapoConfig::default())?, "the built-in configuration".into()),
    };
    let (needed, what, link) = if launch.protocol == "verify" {
        let cfg = crate::verify_node::VerifyConfig::parse(&text, &source)?;
        let what = format!("it has a referee and {} trainers", cfg.trainers.len());
        (cfg.nodes(), what, LinkSpec::mbit(20.0, 1000.0))
    } else if launch.protocol == "pipeline" {
        let cfg = RunConfig::from_toml(&text).with_context(|| format!("config {source}"))?;
        let spec = cfg.spec(0)?;
        let what = format!("its first arm has {} stages x {} replicas", spec.stages, spec.replicas);
        (spec.stages * spec.replicas, what, LinkSpec::mbit(cfg.network.latency_ms, cfg.network.mbit_per_s))
    } else if launch.protocol == "codezero" {
        let cfg = crate::codezero_swarm::parse_config(&text, &source)?;
        let what = format!("it has {} agents and {} liars", cfg.agents, cfg.liars);
        (cfg.agents + cfg.liars, what, LinkSpec::mbit(cfg.latency_ms, cfg.bandwidth_mbit))
    } else {
        let cfg = crate::sapo_swarm::parse_config(&text, &source)?;
        let what = format!("it has {} agents and {} liars", cfg.agents, cfg.liars);
        (cfg.agents + cfg.liars, what, LinkSpec::mbit(cfg.latency_ms, cfg.bandwidth_mbit))
    };
    if needed != launch.nodes {
        bail!("--local {} does not fit the configuration: {what}, so it needs {needed} nodes", launch.nodes);
    }
    Ok((text, link))
}

/// `n` distinct loopback addresses with free UDP ports. Every socket stays bound until all `n` are
/// read, so the system cannot hand one port out twice (a port released at once may come back on the
/// next bind); they are all released on return.
fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let sockets = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    Ok(sockets.iter().map(UdpSocket::local_addr).collect::<std::io::Result<Vec<_>>>()?)
}

/// One node of the swarm: its key file, the address the peers file gives for it, and where it really
/// listens when a link emulator stands at that address.
struct Place {
    key: PathBuf,
    listed: SocketAddr,
    bind: Option<SocketAddr>,
}

/// Keys for `n` nodes in `dir/keys` and the peers file `dir/peers.toml`, in the order of the places the
/// nodes get (a place is the id's rank in the peers file). With `behind_relays`, each node listens on an
/// address of its own and the peers file names the relay in front of it; with `spaces`, node `i` is at
/// its namespace's address (and its relay, if any, at an address of the switch's).
fn make_places(dir: &Path, n: usize, behind_relays: bool, spaces: Option<&Namespaces>) -> Result<Vec<Place>> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).with_context(|| format!("cannot create {}", keys.display()))?;
    // A node's place is its id's rank in the peers file, which lists ids in order: sort the ids first,
    // so that node i's key file, peers-file name and log all say i.
    let mut identities = (0..n).map(|_| Identity::generate()).collect::<std::result::Result<Vec<_>, _>>()?;
    identities.sort_by_key(Identity::peer_id);
    let mut addrs = match spaces {
        Some(spaces) if behind_relays => {
            (0..n).flat_map(|i| [spaces.emulator_addr(i), spaces.addr(i)]).collect::<Vec<_>>().into_iter()
        }
        Some(spaces) => (0..n).map(|i| spaces.addr(i)).collect::<Vec<_>>().into_iter(),
        None => free_addrs(if behind_relays { 2 * n } else { n })?.into_iter(),
    };
    let mut book = PeerBook::new();
    let mut places = Vec::new();
    for (i, identity) in identities.iter().enumerate() {
        let key = keys.join(format!("node{i}.key"));
        identity.save(&key)?;
        let listed = addrs.next().context("one address per node")?;
        book.insert(identity.peer_id(), listed, Some(format!("node{i}")));
        let bind = if behind_relays { Some(addrs.next().context("one address per relay")?) } else { None };
        places.push(Place { key, listed, bind });
    }
    book.save(dir.join("peers.toml"))?;
    Ok(places)
}

/// What a launch came to.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    /// Nodes that finished.
    pub(crate) finished: usize,
    /// Wall seconds.
    pub(crate) wall_s: f64,
    /// With emulated links, the time per step against the simulated network's.
    pub(crate) fidelity: Option<(f64, f64)>,
}

/// Runs the swarm; see the module doc.
pub(crate) fn launch(launch: Launch) -> Result<Summary> {
    if launch.nodes < 2 {
        bail!("--local {}: a swarm needs at least 2 nodes", launch.nodes);
    }
    if launch.replace && (launch.kill.is_empty() || launch.protocol != "pipeline") {
        bail!("--replace starts a successor to the node that --kill kills: it needs --kill and --protocol pipeline");
    }
    if launch.leave && (launch.kill.is_empty() || launch.protocol != "pipeline" || launch.replace) {
        bail!(
            "--leave announces that the node --kill kills is gone for good: it needs --kill and --protocol pipeline, and not --replace"
        );
    }
    let kills = launch.kill.iter().map(|&k| ("--kill", k));
    for (flag, k) in kills.chain(launch.late.map(|k| ("--late", k))) {
        if k.node >= launch.nodes {
            bail!("{flag} {}@{}: there are only nodes 0 to {}", k.node, k.round, launch.nodes - 1);
        }
    }
    // Ctrl-C (to this process or its whole group): stop every node still running, then gather what
    // they wrote and report, as at the end of a run.
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        let _ = ctrlc::set_handler(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    if !launch.behind_nat.is_empty() && (!launch.netns || !launch.p2p) {
        bail!(
            "--behind-nat puts nodes behind NAT routers in network namespaces: it needs --netns (and joins with --p2p)"
        );
    }
    if launch.p2p && launch.emulate_link {
        bail!(
            "--p2p and --emulate-link: the link emulators stand at the peers file's addresses, which --p2p does not dial"
        );
    }
    let (text, link) = prepare_config(&launch)?;
    let spaces = if launch.netns {
        Some(Namespaces::create(launch.nodes, &launch.behind_nat, launch.p2p, launch.emulate_link)?)
    } else {
        None
    };
    let out = out_dir(launch.out.clone(), "launch")?;
    let config = out.join("config.toml");
    write_atomic(&config, text.as_bytes())?;
    let places = make_places(&out, launch.nodes, launch.emulate_link, spaces.as_ref())?;
    // The link emulators run on a runtime of their own for as long as the swarm does.
    let relay_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let (logs, results) = (out.join("logs"), out.join("nodes"));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    // In network namespaces the emulators run in the switch's namespace, as a process of their own.
    let mut emulator = match &spaces {
        Some(spaces) if launch.emulate_link => Some(NamespacedLinks::start(&out, spaces, &places, link)?),
        _ => None,
    };
    let relays: Vec<LinkRelay> = if launch.emulate_link && emulator.is_none() {
        relay_runtime.block_on(async {
            let mut relays = Vec::new();
            for (i, p) in places.iter().enumerate() {
                let real = p.bind.context("a node behind a relay has its own address")?;
                relays.push(LinkRelay::start(p.listed, real, link, 0x5eed + i as u64).await?);
            }
            anyhow::Ok(relays)
        })?
    } else {
        Vec::new()
    };
    let exe = std::env::current_exe().context("cannot find the swarmlab executable")?;
    let mut relay = if launch.p2p { Some(Relay::start(&exe, &out, spaces.as_ref())?) } else { None };
    let started = Instant::now();
    let mut journal = vec![match &spaces {
        Some(spaces) => format!("launched {} {} nodes: {}", launch.nodes, launch.protocol, spaces.describe()),
        None => format!("launched {} {} nodes on loopback", launch.nodes, launch.protocol),
    }];
    if launch.emulate_link {
        journal.push(format!(
            "every node behind a link emulator: {:.1} ms one way, {:.0} Mbit/s per link",
            link.latency.as_secs_f64() * 1e3,
            link.bandwidth * 8.0 / 1e6
        ));
    }
    if let Some(relay) = &relay {
        let line = format!(
            "every node joins through the relay at {}{}",
            relay.bootstrap,
            if launch.relay_only { ", every connection through it (--relay-only)" } else { "" }
        );
        eprintln!("[launch] {line}");
        journal.push(line);
    }
    eprintln!("swarmlab launch: {} {} nodes, run folder {}", launch.nodes, launch.protocol, out.display());

    let (lines_tx, lines_rx) = mpsc::channel::<(usize, String)>();
    let namespaces = spaces.as_ref().map(|s| (0..launch.nodes).map(|i| s.name(i)).collect());
    let bootstrap = relay.as_ref().map(|r| r.bootstrap.clone());
    let spawner = Spawner {
        exe,
        config: config.clone(),
        out: out.clone(),
        launch: launch.clone(),
        lines: lines_tx,
        namespaces,
        bootstrap,
    };
    let mut nodes = Vec::new();
    for (place, p) in places.iter().enumerate() {
        // A node that leaves and comes back (`--leave` with `--late`) starts with the others.
        let comes_back = launch.leave && launch.kill.iter().any(|k| k.node == place);
        let late = launch.late.is_some_and(|l| l.node == place) && !comes_back;
        let child =
            if late { None } else { Some(spawner.start(place, p, Start::Now, &format!("node-{place}.log"))?) };
        nodes.push(Running { child, place, round: 0, outcome: None, replaced_at: Vec::new(), left_at: None });
    }
    let mut killed = vec![false; launch.kill.len()];
    // The processes announcing a killed node's leave (`--leave`), by place.
    let mut announcers: Vec<(usize, Child)> = Vec::new();
    // After a kill: when it happened and the furthest any node had got, until every node running has
    // got past that (the time a kill costs the swarm).
    let mut since_kill: Option<(Instant, u64)> = None;

    let mut shown = 0;
    while nodes.iter().any(|n| n.outcome.is_none()) {
        if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
            let mut stopped = Vec::new();
            for node in nodes.iter_mut().filter(|n| n.outcome.is_none()) {
                node.outcome = Some(match node.child.as_mut() {
                    Some(child) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        stopped.push(node.place.to_string());
                        Outcome::Stopped { round: node.round }
                    }
                    None => Outcome::NeverStarted,
                });
            }
            let event = format!(
                "{:.1} s: interrupted (Ctrl-C); stopped nodes {}",
                started.elapsed().as_secs_f64(),
                if stopped.is_empty() { "none".to_owned() } else { stopped.join(", ") }
            );
            eprintln!("\n[launch] {event}; gathering what they wrote");
            journal.push(event);
            break;
        }
        // The lines of the next 100 ms (then the progress display and the nodes' exits are looked at).
        let tick = Instant::now() + Duration::from_millis(100);
        while let Ok((place, line)) = lines_rx.recv_timeout(tick.saturating_duration_since(Instant::now())) {
            if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            let node = &mut nodes[place];
            match progress(&line) {
                Some(round) => node.round = node.round.max(round),
                None => eprintln!("[node {place}] {line}"),
            }
            if line.starts_with("p2p path to ") {
                journal.push(format!("node {place}: {line}"));
            }
            if let Some((at, furthest)) = since_kill
                && nodes.iter().filter(|n| n.outcome.is_none() && n.child.is_some()).all(|n| n.round > furthest)
            {
                since_kill = None;
                let event = format!(
                    "{:.1} s: every node still running is past {} {furthest}, {:.2} s after the kill",
                    started.elapsed().as_secs_f64(),
                    unit(&launch.protocol),
                    at.elapsed().as_secs_f64()
                );
                eprintln!("[launch] {event}");
                journal.push(event);
            }
            if let Some(late) = launch.late
                && place != late.node
                && nodes[place].round >= late.round
            {
                let reached = nodes[place].round;
                let target = &mut nodes[late.node];
                let how = if target.child.is_none() && target.outcome.is_none() {
                    let log = format!("node-{}.log", late.node);
                    target.child = Some(spawner.start(late.node, &places[late.node], Start::Late, &log)?);
                    Some(format!("started node {} late", late.node))
                } else if let Some((at, false)) = target.left_at
                    && !announcers.iter().any(|(p, _)| *p == late.node)
                {
                    // A place that left the run for good comes back, with its key and address.
                    let log = format!("node-{}-back.log", late.node);
                    target.child = Some(spawner.start(late.node, &places[late.node], Start::Replacement, &log)?);
                    target.left_at = Some((at, true));
                    target.outcome = None;
                    Some(format!("node {} came back to the run", late.node))
                } else {
                    None
                };
                if let Some(how) = how {
                    let event = format!(
                        "{:.1} s: {how}, as node {place} reached {} {reached}",
                        started.elapsed().as_secs_f64(),
                        unit(&launch.protocol),
                    );
                    eprintln!("[launch] {event}");
                    journal.push(event);
                }
            }
            let nodes_max_round = nodes.iter().map(|n| n.round).max().unwrap_or(0);
            let node = &mut nodes[place];
            if let Some(i) = launch.kill.iter().zip(&killed).position(|(k, done)| !done && k.node == place)
                && node.outcome.is_none()
                && node.round >= launch.kill[i].round
                && let Some(child) = node.child.as_mut()
            {
                let pid = child.id();
                let _ = child.kill();
                let _ = child.wait();
                killed[i] = true;
                node.outcome = Some(Outcome::Killed { round: node.round });
                since_kill = Some((Instant::now(), nodes_max_round));
                let event = format!(
                    "{:.1} s: killed node {place} (pid {pid}) at {} {}",
                    started.elapsed().as_secs_f64(),
                    unit(&launch.protocol),
                    node.round
                );
                eprintln!("[launch] {event}");
                journal.push(event);
                if launch.leave {
                    node.left_at = Some((node.round, false));
                    let log = format!("node-{place}-leave.log");
                    announcers.push((place, spawner.start(place, &places[place], Start::Leave, &log)?));
                    let event = format!(
                        "{:.1} s: announcing with node {place}'s key that it left the run for good (--leave)",
                        started.elapsed().as_secs_f64()
                    );
                    eprintln!("[launch] {event}");
                    journal.push(event);
                }
                if launch.replace {
                    node.replaced_at.push(node.round);
                    let log = match node.replaced_at.len() {
                        1 => format!("node-{place}-successor.log"),
                        n => format!("node-{place}-successor-{n}.log"),
                    };
                    node.child = Some(spawner.start(place, &places[place], Start::Replacement, &log)?);
                    node.outcome = None;
                    let event = format!(
                        "{:.1} s: started a successor to node {place} with its key and address (--replace)",
                        started.elapsed().as_secs_f64()
                    );
                    eprintln!("[launch] {event}");
                    journal.push(event);
                }
            }
        }
        let slowest = nodes.iter().filter(|n| n.outcome.is_none()).map(|n| n.round).min().unwrap_or(0);
        if slowest > shown {
            shown = slowest;
            let rounds: Vec<String> = nodes.iter().map(|n| n.round.to_string()).collect();
            eprintln!(
                "[launch] {:.0} s, rounds (or steps) done per node: {}",
                started.elapsed().as_secs_f64(),
                rounds.join(" ")
            );
        }
        // A late node whose trigger can no longer come (everyone else is done) is never started.
        if nodes.iter().all(|n| n.outcome.is_some() || n.child.is_none()) {
            for node in nodes.iter_mut().filter(|n| n.outcome.is_none()) {
                node.outcome = Some(Outcome::NeverStarted);
                journal.push(format!("node {} was never started: the run ended first", node.place));
            }
        }
        announcers.retain_mut(|(place, child)| match child.try_wait() {
            Ok(Some(status)) => {
                journal.push(announced(*place, status, started));
                false
            }
            _ => true,
        });
        for node in nodes.iter_mut().filter(|n| n.outcome.is_none()) {
            let Some(child) = node.child.as_mut() else { continue };
            if let Some(status) = child.try_wait()? {
                node.outcome = Some(outcome(status));
                journal.push(format!(
                    "{:.1} s: node {} {}",
                    started.elapsed().as_secs_f64(),
                    node.place,
                    describe(node.outcome.as_ref(), unit(&launch.protocol))
                ));
            }
        }
    }
    for (place, mut child) in announcers {
        // An announcer still waiting for halts once every node is done waits for nothing more.
        if !matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
        }
        let status = child.wait()?;
        journal.push(announced(place, status, started));
    }
    while let Ok((place, line)) = lines_rx.try_recv() {
        if progress(&line).is_none() {
            eprintln!("[node {place}] {line}");
        }
        if line.starts_with("p2p path to ") {
            journal.push(format!("node {place}: {line}"));
        }
    }
    if let Some(relay) = relay.take() {
        journal.push(relay.stop());
    }
    for (k, _) in launch.kill.iter().zip(&killed).filter(|(_, done)| !**done) {
        journal.push(format!("node {} never reached {} {}: not killed", k.node, unit(&launch.protocol), k.round));
    }
    let wall_s = started.elapsed().as_secs_f64();
    let gathered: Vec<NodeLog> =
        nodes.iter().filter_map(|n| NodeLog::load(&results.join(format!("node-{}.h5", n.place))).ok()).collect();
    NodeLog::gather(&gathered, &out.join("launch.h5"))?;
    let mut fidelity = None;
    if launch.emulate_link {
        let moved = match emulator.take() {
            Some(emulator) => emulator.stop()?,
            None => total(&relays),
        };
        let moved = (moved.delivered, moved.bytes, moved.dropped);
        journal
            .push(format!("link emulators: {} datagrams ({} bytes) delivered, {} dropped", moved.0, moved.1, moved.2));
        if launch.protocol == "pipeline" {
            let f = link_fidelity(&config, &gathered)?;
            let line = format!(
                "time per step: {:.1} ms over QUIC, {:.1} ms predicted by the simulated network; ratio {:.2}",
                f.quic_s * 1e3,
                f.sim_s * 1e3,
                f.quic_s / f.sim_s
            );
            eprintln!("[launch] {line}");
            journal.push(line);
            fidelity = Some(f);
        }
    }
    drop(relays);
    write_atomic(&out.join("launch.log"), (journal.join("\n") + "\n").as_bytes())?;
    let report = report(&launch, &out, &nodes, &gathered, &journal, wall_s, fidelity.as_ref());
    write_atomic(&out.join("report.md"), report.as_bytes())?;
    eprintln!("[launch] report: {}", out.join("report.md").display());
    let failed: Vec<String> = nodes
        .iter()
        .filter_map(|n| match &n.outcome {
            Some(Outcome::Failed(why)) => {
                Some(format!("node {} {why} (log: {})", n.place, logs.join(format!("node-{}.log", n.place)).display()))
            }
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("interrupted: the nodes were stopped; report.md has what they wrote");
    }
    Ok(Summary {
        finished: nodes.iter().filter(|n| n.outcome == Some(Outcome::Finished)).count(),
        wall_s,
        fidelity: fidelity.map(|f| (f.quic_s, f.sim_s)),
    })
}

/// `swarmlab run` on a configuration with `[network] transport = "quic"`: each arm in turn as a swarm of
/// node processes on this machine, one per worker, every link emulated with the configuration's model;
/// a launch folder per arm (`arm-<i>/`) and a `report.md` over them.
pub(crate) fn run_over_quic(cfg: &RunConfig, out: &Path) -> Result<()> {
    let mut md = format!(
        "# {} over QUIC\n\nEvery arm ran as node processes on this machine (one per worker, QUIC in real time), each link emulated with {:.1} ms one way and {:.0} Mbit/s; then the same arm ran on the simulated network for comparison.\n\n| arm | nodes | finished | wall s | QUIC ms/step | sim ms/step | ratio | folder |\n|---|---|---|---|---|---|---|---|\n",
        cfg.name, cfg.network.latency_ms, cfg.network.mbit_per_s
    );
    for (i, arm) in cfg.arms.iter().enumerate() {
        let spec = cfg.spec(i)?;
        let nodes = spec.stages * spec.replicas;
        let mut one = cfg.clone();
        one.arms = vec![arm.clone()];
        let dir = out.join(format!("arm-{i}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("arm.toml");
        write_atomic(&path, toml::to_string(&one)?.as_bytes())?;
        eprintln!("[{}/{}] {}: {nodes} node processes", i + 1, cfg.arms.len(), arm.label);
        let summary = launch(Launch { emulate_link: true, ..Launch::plain(nodes, "pipeline", Some(path), Some(dir)) })
            .with_context(|| format!("arm {:?}", arm.label))?;
        let (q, s) = summary
            .fidelity
            .map_or(("-".into(), "-".into()), |(q, s)| (format!("{:.1}", q * 1e3), format!("{:.1}", s * 1e3)));
        let ratio = summary.fidelity.map_or("-".into(), |(q, s)| format!("{:.2}", q / s));
        let _ = writeln!(
            md,
            "| {} | {nodes} | {} | {:.1} | {q} | {s} | {ratio} | `arm-{i}/` |",
            arm.label, summary.finished, summary.wall_s
        );
    }
    md.push_str("\nEach arm's folder holds its launch report (every node's result and events), `launch.h5` and the nodes' logs.\n");
    write_atomic(&out.join("report.md"), md.as_bytes())?;
    eprintln!("report: {}", out.join("report.md").display());
    Ok(())
}

/// The journal's line for the end of the process that announced node `place`'s leave.
fn announced(place: usize, status: std::process::ExitStatus, started: Instant) -> String {
    let when = started.elapsed().as_secs_f64();
    if status.success() {
        format!("{when:.1} s: the others halted for node {place}'s leave and went on without it")
    } else {
        format!(
            "{when:.1} s: the announcement of node {place}'s leave failed ({status}); see logs/node-{place}-leave.log"
        )
    }
}

/// Starts node processes and streams their output, a line at a time, to the launcher and their logs.
struct Spawner {
    exe: PathBuf,
    config: PathBuf,
    out: PathBuf,
    launch: Launch,
    lines: mpsc::Sender<(usize, String)>,
    /// Each node's network namespace, with `--netns`.
    namespaces: Option<Vec<String>>,
    /// The relay every node joins through, with `--p2p`.
    bootstrap: Option<String>,
}

/// `--netns --emulate-link`: the link emulators, a `swarmlab link-emulator` process in the switch's
/// namespace, each listening at an address of the switch's and forwarding to its node's.
struct NamespacedLinks {
    child: Child,
    stats: PathBuf,
}

impl NamespacedLinks {
    fn start(out: &Path, spaces: &Namespaces, places: &[Place], link: LinkSpec) -> Result<Self> {
        let stats = out.join("link-stats.json");
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &spaces.switch()]).arg(std::env::current_exe()?).arg("link-emulator");
        for p in places {
            let real = p.bind.context("a node behind a link emulator has its own address")?;
            command.arg("--link").arg(format!("{}={real}", p.listed));
        }
        let log = std::fs::File::create(out.join("logs").join("link-emulator.log"))?;
        let child = command
            .arg("--latency-ms")
            .arg((link.latency.as_secs_f64() * 1e3).to_string())
            .arg("--mbit-per-s")
            .arg((link.bandwidth * 8.0 / 1e6).to_string())
            .arg("--stats")
            .arg(&stats)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start the link emulators")?;
        let mut links = Self { child, stats };
        // Up once it has written its first counters.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !links.stats.is_file() {
            if Instant::now() > deadline || links.child.try_wait()?.is_some() {
                bail!("the link emulators did not start within 10 s (see logs/link-emulator.log)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(links)
    }

    /// Stops the emulators (Ctrl-C, so that they write their last counters) and reads the counters.
    fn stop(mut self) -> Result<RelayStats> {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(&self.stats).with_context(|| format!("{}", self.stats.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let count = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(RelayStats { delivered: count("delivered"), bytes: count("bytes"), dropped: count("dropped") })
    }
}

/// What a launch's link emulators moved, summed.
fn total(relays: &[LinkRelay]) -> RelayStats {
    relays.iter().map(LinkRelay::stats).fold(RelayStats::default(), |a, s| RelayStats {
        delivered: a.delivered + s.delivered,
        bytes: a.bytes + s.bytes,
        dropped: a.dropped + s.dropped,
    })
}

impl Drop for NamespacedLinks {
    /// However the launch ends, the emulators do not outlive it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `swarmlab link-emulator`: a link emulator per `LISTEN=FORWARD` pair, with link model `link`, until
/// Ctrl-C; their summed counters go to `stats` every 200 ms and at the end.
pub(crate) fn emulate_links(links: &[String], link: LinkSpec, stats: &Path) -> Result<()> {
    let pairs = links
        .iter()
        .map(|l| {
            let (listen, forward) =
                l.split_once('=').with_context(|| format!("--link {l}: expected LISTEN=FORWARD"))?;
            Ok((listen.parse::<SocketAddr>()?, forward.parse::<SocketAddr>()?))
        })
        .collect::<Result<Vec<_>>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let relays = runtime.block_on(async {
        let mut relays = Vec::new();
        for (i, (listen, forward)) in pairs.into_iter().enumerate() {
            relays.push(LinkRelay::start(listen, forward, link, 0x5eed + i as u64).await?);
        }
        anyhow::Ok(relays)
    })?;
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stopped = stopped.clone();
        ctrlc::set_handler(move || stopped.store(true, std::sync::atomic::Ordering::SeqCst))?;
    }
    loop {
        let t = total(&relays);
        let json = serde_json::json!({ "delivered": t.delivered, "bytes": t.bytes, "dropped": t.dropped });
        write_atomic(stats, json.to_string().as_bytes())?;
        if stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The relay of a `--p2p` launch: a `swarmlab relay` process (in a namespace of its own with
/// `--netns`), and the address the nodes join with.
struct Relay {
    child: Child,
    bootstrap: String,
}

impl Relay {
    /// Starts the relay, its output in `logs/relay.log`, and waits (10 s at most) for its address.
    fn start(exe: &Path, out: &Path, spaces: Option<&Namespaces>) -> Result<Self> {
        let (namespace, listen) = match spaces.and_then(Namespaces::relay) {
            Some((ns, addr)) => (Some(ns), addr),
            None => (None, free_addrs(1)?[0]),
        };
        let mut command = match &namespace {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        let addr_file = out.join("relay.addr");
        let log = std::fs::File::create(out.join("logs").join("relay.log"))?;
        let child = command
            .arg("relay")
            .arg("--key")
            .arg(out.join("keys").join("relay.key"))
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--addr-file")
            .arg(&addr_file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start the relay")?;
        let mut relay = Self { child, bootstrap: String::new() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while relay.bootstrap.is_empty() {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                relay.bootstrap = text.lines().next().unwrap_or_default().to_owned();
            } else if Instant::now() > deadline || relay.child.try_wait()?.is_some() {
                bail!("the relay did not start within 10 s (see logs/relay.log)");
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(relay)
    }

    /// Stops the relay; the journal's line for it.
    fn stop(self) -> String {
        format!("stopped the relay at {}", self.bootstrap)
    }
}

impl Drop for Relay {
    /// However the launch ends, the relay does not outlive it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawner {
    /// Starts the node at `place`, its output going to `logs/<log>`.
    fn start(&self, place: usize, p: &Place, start: Start, log: &str) -> Result<Child> {
        let mut command = match &self.namespaces {
            Some(names) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &names[place]]).arg(&self.exe);
                command
            }
            None => Command::new(&self.exe),
        };
        command.arg("node").args(["--protocol", &self.launch.protocol]);
        if let Some(bind) = p.bind {
            command.arg("--bind").arg(bind.to_string());
        }
        if let Some(bootstrap) = &self.bootstrap {
            command.arg("--bootstrap").arg(bootstrap);
            if self.launch.relay_only {
                command.arg("--relay-only");
            }
        }
        match start {
            Start::Now => {}
            Start::Late => {
                command.arg("--join");
            }
            Start::Replacement => {
                command.arg("--replace");
            }
            Start::Leave => {
                command.arg("--leave");
            }
        }
        let mut child = command
            .arg("--config")
            .arg(&self.config)
            .arg("--key")
            .arg(&p.key)
            .arg("--peers")
            .arg(self.out.join("peers.toml"))
            .arg("--out")
            .arg(self.out.join("nodes"))
            .arg("--idle-timeout-s")
            .arg(self.launch.net.idle_timeout.as_secs_f64().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start node {place}"))?;
        let log = std::fs::File::create(self.out.join("logs").join(log))?;
        let log = std::sync::Arc::new(std::sync::Mutex::new(log));
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().context("node stdout")?),
            Box::new(child.stderr.take().context("node stderr")?),
        ];
        for stream in streams {
            let (tx, log) = (self.lines.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(std::result::Result::ok) {
                    if let Ok(mut f) = log.lock() {
                        let _ = writeln!(f, "{line}");
                    }
                    if tx.send((place, line)).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(child)
    }
}

#[cfg(test)]
mod tests;
