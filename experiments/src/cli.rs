//! The `swarmlab` command line: its commands, and [`main`], which parses them and runs one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::config::{EXAMPLE, RunConfig};
use crate::files::{out_dir, write_atomic};
use crate::studies::{self, Reproduce};
use crate::{all, codezero_swarm, launch, node, report, run, sapo_swarm, verify, verify_node};

/// What `swarmlab launch` does for a pipeline worker it killed, beside nothing.
#[derive(Debug, Clone, Copy, clap::Args)]
struct AfterKill {
    /// With --kill, start a successor in the killed node's place (its key and address) at once: a
    /// pipeline worker that rebuilds its stage by the configuration's recovery strategy while the
    /// others wait, after which the run goes on.
    #[arg(long, requires = "kill")]
    replace: bool,
    /// With --kill, announce with the killed node's key that it left the run for good (pipeline):
    /// the others go back to the earliest step any of them was training and go on without it,
    /// SkipPipe on paths scheduled again. `--late` naming that node then brings its place back.
    #[arg(long, requires = "kill", conflicts_with = "replace")]
    leave: bool,
}

/// How a node reaches the others when it cannot dial them by the peers file's addresses (NAT, no
/// public address): through a relay, libp2p's discovery and hole punching.
#[derive(Debug, Clone, Default, clap::Args)]
struct P2pArgs {
    /// Join through the relay at this address (`swarmlab relay` prints it:
    /// `/ip4/ADDR/udp/PORT/quic-v1/p2p/ID`) instead of dialling the peers file's addresses: the node
    /// reserves a relayed address there, publishes where it can be reached, and finds the others in the
    /// swarm's Kademlia table; it connects directly where it can (hole punching through NAT) and through
    /// the relay where it cannot. The peers file is then only the list of ids allowed in the swarm, and
    /// the address it gives for this node is where it listens. May be given several times.
    #[arg(long)]
    bootstrap: Vec<transport::p2p::Multiaddr>,
    /// With --bootstrap: every connection through the relay, none direct (to measure what it costs).
    #[arg(long, requires = "bootstrap")]
    relay_only: bool,
}

impl P2pArgs {
    fn join(self) -> Option<node::P2pJoin> {
        (!self.bootstrap.is_empty()).then_some(node::P2pJoin { bootstrap: self.bootstrap, relay_only: self.relay_only })
    }
}

/// swarmlab — decentralized-training protocols on simulated and real swarms.
///
/// Start with `swarmlab run`: it trains the baseline study (one replica, four data-parallel replicas,
/// and a 2 x 2 pipeline) on the built-in synthetic language, whose loss floor is known exactly, and
/// writes a report.
#[derive(Parser)]
#[command(name = "swarmlab", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where the tensors live: `cpu`, `cuda`, `cuda:N` or `auto` (overrides the configuration; cuda needs
    /// a build with `--features cuda`). Used by `run`, `reproduce`, `sapo` and `node`; resolved once.
    #[arg(long, global = true)]
    device: Option<models::DeviceSpec>,
    /// Run even where the configuration's estimated memory exceeds this machine's, or its estimated
    /// compute a week (otherwise refused before anything starts).
    #[arg(long, global = true)]
    allow_large: bool,
}

/// Where a run's files go.
#[derive(clap::Args)]
struct OutputArgs {
    /// Output folder [default: runs/<name>-<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the run already in `--out` (otherwise refused).
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the arms of a configuration (the built-in baseline study if none is given) and write
    /// config.toml, metrics.csv, summary.json, run.h5 and report.md into the output folder.
    Run {
        /// A TOML configuration (see `swarmlab init`).
        config: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
        /// The same study, shortened to a smoke check (at most 40 steps, a smaller corpus).
        #[arg(long)]
        quick: bool,
    },
    /// Reproduce a paper's study on simulated swarms and write its report beside the paper's claims.
    ///
    /// `noloco`: DDP, DiLoCo and NoLoCo on one 2 x 8 grid (val loss by step and by virtual time), the
    /// ablations (no pull term, no random routing: weight variance across replicas), and the sync
    /// latency and bytes of ring / tree all-reduce vs NoLoCo gossip for 8 to 1024 replicas on
    /// internet-like links.
    ///
    /// `skippipe`: on a geo-distributed, heterogeneous swarm, the standard pipeline vs SkipPipe's scheduled
    /// paths through all and through 4 of 6 transformer stages (0 and 33%), trained as the released trainer
    /// trains, plus 33% with per-stage gradients as an ablation (val loss by step and by virtual time);
    /// each trained model run with half and three quarters of its transformer stages (perplexity per
    /// sequence); and the scheduler's iteration times on the paper's 42-node swarm (random vs local-search
    /// assignment).
    ///
    /// `checkfree`: CheckFree and CheckFree+ vs checkpointing and redundant computation at failure
    /// rates of 5, 10, 16 and 33% per hour (val loss by virtual time, time to a target loss, loss spikes
    /// after recoveries), and the rebuild ablations (naive copy, random re-init).
    ///
    /// `compose`: NoLoCo, SkipPipe and CheckFree each alone and all three together against the baseline
    /// pipeline, on a geo-distributed swarm with failures (time to the loss every arm reaches).
    ///
    /// `all`: every study above, one after the other, and an index report (report.md) with each one's
    /// claims, plots and wall time, and the total (`swarmlab readme` turns it into the README's results).
    ///
    /// `verde`: disputes between an honest run and six kinds of cheat (a perturbed weight, a perturbed
    /// operator, a lazy trainer, a lie about the final state, inconsistent openings, silence) for runs of
    /// 16 to 256 steps of two model sizes: bisection rounds against log2 n + log2 m, bytes exchanged, and
    /// the referee's one re-executed operator against replicating the run; and the negative case, honest
    /// trainers on native kernels. It writes report.md and verde.json.
    ///
    /// `sapo`: RL post-training of eight agents with GRPO on eight verifiable task families, sharing
    /// rollouts at the mixes 8/0, 6/2, 4/4 and 2/6 (own/shared groups per step) and in a heterogeneous
    /// swarm of two policy sizes: cumulative reward per mix, reward curves per agent, held-out accuracy
    /// per family. It writes report.md, sapo.json and config.toml.
    ///
    /// `codezero`: a CodeZero-style game of proposers, solvers and evaluators on programming problems
    /// checked by execution in a sandbox, with a lying agent, played with every agent in every role and
    /// with roles rotating by a seeded draw: reward per role over rounds, the solvers' held-out pass rate,
    /// the difficulty of proposed problems, what was dropped from peers and why, the sandbox's share of
    /// the wall time. It writes report.md, summary.json, codezero.json, config.toml and plots.
    ///
    /// For the training studies, the output folder's config.toml runs the same study with `swarmlab run`.
    Reproduce {
        /// The study.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(studies::names()))]
        study: String,
        #[command(flatten)]
        output: OutputArgs,
        /// The same study at a smaller scale (a few minutes; for smoke checks): `--scale smoke`.
        #[arg(long, conflicts_with = "scale")]
        quick: bool,
        /// The rung of the scale ladder: `smoke` (minutes, one seed), `cpu` (the presets, sized for
        /// this machine; each claim also measured at half the model width) or `paper` (the papers'
        /// smallest model and sequence length, for a GPU: `--device cuda`). The estimated memory and
        /// compute are printed before each run starts.
        #[arg(long, value_enum, default_value_t = studies::Scale::Cpu)]
        scale: studies::Scale,
        /// Run a training study with this many seeds (run seeds s, s+1, …) and judge each claim on the
        /// range of its values: 3 by default, 1 at the smoke scale. One folder per seed (`seed-<k>/`)
        /// and a report over them.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        seeds: Option<u32>,
        /// Seeds run at once: by default one per core (each run's operations use one thread; see
        /// `CANDLE_NUM_THREADS` in the README).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: Option<u32>,
        /// The training studies' corpus: `synthetic` (the presets' default, with a known loss floor),
        /// `prose` (the shipped opening of War and Peace, public domain) or the path of a UTF-8 text
        /// file or folder.
        #[arg(long)]
        corpus: Option<String>,
        /// Take what an earlier run into the same `--out` finished the same way as it is, and run the
        /// rest: with `all`, each study that finished with the same flags, device and version; within a
        /// training study, each seed whose run finished with the same configuration. A finished study
        /// asked for differently is replaced only with `--force`.
        #[arg(long)]
        resume: bool,
        /// `sapo` only: a pretrained checkpoint every agent starts from (a folder in Hugging Face layout
        /// or a model id in the Hugging Face cache); the arms are the four mixes.
        #[arg(long)]
        model: Option<String>,
        /// `sapo` with `--model` only: a reasoning-gym export (JSON Lines; see the README) to deal tasks
        /// from, one per dataset a round, instead of our eight task families.
        #[arg(long, requires = "model")]
        tasks: Option<PathBuf>,
    },
    /// Verify one training run delegated to several trainers (Verde): each trains the same program on
    /// repops, some dishonestly; conflicting claims are disputed before a referee on the simulated network,
    /// which prints each verdict, the bisection rounds, the bytes exchanged and the one operator it re-ran.
    Verify {
        /// The program's model: `tiny` (2 layers of width 32, batches of 4 x 16 tokens) or `small`
        /// (the small preset, batches of 8 x 64).
        #[arg(long, default_value = "tiny")]
        model: String,
        /// Training steps.
        #[arg(long, default_value_t = 16)]
        steps: u64,
        /// A trainer (repeat the flag for each): `honest`, `perturb-weight@STEP`, `perturb-op@STEP:OP`,
        /// `lazy@STEP`, `skip@PER_MILLE:SEED` (skips that share of the steps, drawn by SEED), `lie@STEP`,
        /// `forge-lr@STEP:FACTOR` (that step's learning rate times FACTOR), `forge-batch@STEP:DATA_STEP`
        /// (that step trained on another step's batch) or `mislaid@STEP:OP.INPUT` (operator OP reads its
        /// input INPUT laid out wrongly), optionally with `+inconsistent@N` (bad openings from its N-th on) or
        /// `+silent@N` (no answer from the N-th question on). Default: honest, perturb-op at the middle
        /// step, lazy from the step after, honest.
        #[arg(long = "trainer", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<verify::TrainerSpec>()))]
        trainers: Vec<verify::TrainerSpec>,
        /// How long (virtual seconds) a trainer may take to answer the referee.
        #[arg(long, default_value_t = 60.0)]
        deadline_s: f64,
        /// Trainers keep their whole state every K steps, so answering for a step re-runs at most K
        /// steps instead of the run up to it (default: no checkpoints).
        #[arg(long, value_name = "K")]
        checkpoint_every: Option<u64>,
        /// Verify an evaluation instead of training: the model the program trains in --steps steps is
        /// scored on ITEMS committed held-out batches, and the trainers become evaluators claiming its
        /// score (a cheat forges it: perturb-weight makes the running sum up, lazy skips items,
        /// forge-batch scores other items).
        #[arg(long, value_name = "ITEMS")]
        evaluate: Option<u64>,
        /// Where the dispute runs: `sim` (the simulated network, virtual time) or `quic` (a referee and
        /// each trainer as `swarmlab node` processes on loopback, QUIC with mutual TLS, real time; the
        /// run folder is runs/verify-<unix time>, and the referee settles the same trainers on the
        /// simulated network beside it).
        #[arg(long, default_value = "sim", value_parser = ["sim", "quic"])]
        transport: String,
        /// Record the settlement's deposits and slashings in this stake ledger file (created if missing):
        /// signed entries, checked on every opening (needs --key).
        #[arg(long, requires = "key")]
        ledger: Option<PathBuf>,
        /// The referee's key file (`swarmlab keygen`): it signs the ledger's entries, and the ledger
        /// trusts entries signed by it alone.
        #[arg(long, requires = "ledger")]
        key: Option<PathBuf>,
        /// Kernels: `repops` (bitwise reproducible) or `native` (only with --print-final).
        #[arg(long, default_value = "repops", hide = true)]
        backend: String,
        /// Only run the program honestly and print its final state hash.
        #[arg(long, hide = true)]
        print_final: bool,
    },
    /// Train one SAPO swarm: every agent warm-starts on the task format, then plays its rounds on the
    /// simulated network (generate, share, train on I own and J shared question groups with GRPO). Prints
    /// each agent's reward before and after, its held-out accuracy and what it dropped from its peers, and
    /// writes config.toml and sapo-run.json into the output folder.
    Sapo {
        /// A TOML configuration (every field optional; `swarmlab sapo --print-config` shows them all).
        config: Option<PathBuf>,
        /// Own/shared question groups per step, e.g. `4/4` (overrides the configuration).
        #[arg(long)]
        mix: Option<String>,
        /// Rounds (overrides the configuration).
        #[arg(long)]
        rounds: Option<u64>,
        /// Honest agents (overrides the configuration).
        #[arg(long)]
        agents: Option<usize>,
        /// Lying agents added to the swarm (overrides the configuration).
        #[arg(long)]
        liars: Option<usize>,
        /// Policy sizes by agent, cycled, e.g. `tiny,small` (overrides the configuration).
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<String>>,
        /// A pretrained checkpoint every agent starts from, instead of warm-started policies of the
        /// sizes: a folder in Hugging Face layout, or a model id in the Hugging Face cache (offline).
        #[arg(long)]
        model: Option<String>,
        /// A reasoning-gym export (JSON Lines; see the README) to deal tasks from, one per dataset a
        /// round, instead of our task families; needs a pretrained `--model` (overrides the
        /// configuration's `tasks.file`).
        #[arg(long)]
        tasks: Option<PathBuf>,
        /// The export's datasets to deal, e.g. `basic_arithmetic,arc_1d` [default: all of them].
        #[arg(long, value_delimiter = ',')]
        datasets: Option<Vec<String>>,
        /// Output folder [default: runs/sapo-<unix time>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the full default configuration as TOML and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Train one CodeZero swarm: proposers write programming problems (reference programs in the
    /// sandboxed stack language), solvers write programs for them (GRPO, sharing their rollouts),
    /// evaluators run the programs in the sandbox and share verdicts, and proposers are rewarded for
    /// problems some but not all solutions pass. Prints each agent's rewards per role, its solver's
    /// held-out pass rate and what it dropped from its peers; writes config.toml and codezero-run.json.
    Codezero {
        /// A TOML configuration (every field optional; `swarmlab codezero --print-config` shows them all).
        config: Option<PathBuf>,
        /// Honest agents (overrides the configuration).
        #[arg(long)]
        agents: Option<usize>,
        /// Lying agents added to the swarm: forged problems and verdicts that pass everything.
        #[arg(long)]
        liars: Option<usize>,
        /// Rounds (overrides the configuration).
        #[arg(long)]
        rounds: Option<u64>,
        /// Who plays what: `all` (every agent every role), `split` (agents take turns in a fixed role:
        /// proposer, solver, evaluator, …) or `rotate:P/S/E` (each round a seeded draw seats P
        /// proposers, S solvers and E evaluators).
        #[arg(long, value_parser = clap::builder::ValueParser::new(parse_roles))]
        roles: Option<genrl::roles::RoleSchedule>,
        /// Output folder [default: runs/codezero-<unix time>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the full default configuration as TOML and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Write a new node key file and print its PeerId, and the entry that puts it in a peers file.
    Keygen {
        /// The key file to write (never overwritten).
        #[arg(long, default_value = "node.key")]
        out: PathBuf,
        /// The address the node will listen on, for the printed peers-file entry.
        #[arg(long, default_value = "127.0.0.1:4100")]
        addr: std::net::SocketAddr,
    },
    /// Run one agent as a real node: QUIC with mutual TLS, real time. Every node of the swarm gets the
    /// same configuration and peers file; a node's place in the swarm is its id's rank in the file.
    /// `sapo`: one SAPO agent (the last `liars` places are lying agents); writes agent-<index>.json.
    /// `pipeline`: one worker of the first arm of a `swarmlab run` configuration (stage = place /
    /// replicas); writes worker-<index>.json with its final loss and the blake3 of its weights (the same
    /// hash `swarmlab run` puts in summary.json). `verify`: Verde between processes — place 0 is the
    /// referee, every other place a trainer of the configuration's list; writes referee.json (the
    /// settlement over QUIC beside the same trainers' on the simulated network) or trainer-<index>.json.
    Node {
        /// What the node runs: `sapo`, `codezero`, `pipeline` or `verify`.
        #[arg(long, default_value = "sapo", value_parser = ["sapo", "codezero", "pipeline", "verify"])]
        protocol: String,
        /// The configuration (as for `swarmlab sapo` or `swarmlab codezero`, or `swarmlab run` with `--protocol pipeline`; with
        /// `--protocol verify`: model, steps, evaluate, trainers, deadline_s, checkpoint_every).
        #[arg(long)]
        config: Option<PathBuf>,
        /// This node's key file (`swarmlab keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The peers file: every node's id and address, this one's included.
        #[arg(long)]
        peers: PathBuf,
        /// Output folder [default: runs/node-<unix time>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seconds without a word from a peer before its connection is taken for dead (a killed peer is
        /// noticed then); connection attempts wait as long, 10 s at most.
        #[arg(long, default_value_t = 30.0)]
        idle_timeout_s: f64,
        /// This node starts after the others: a pipeline worker fetches the current weights from a
        /// replica of its stage and joins at the step it is at (a SAPO agent simply starts playing).
        #[arg(long)]
        join: bool,
        /// This pipeline worker takes the place of a killed one (run it with that one's key): it halts
        /// the other workers, has them all go back to the earliest step any of them was training, and
        /// gets its stage back by the configuration's recovery strategy (CheckFree from its
        /// neighbours, redundant computation from its predecessor's copy, a surviving replica).
        #[arg(long, conflicts_with = "join")]
        replace: bool,
        /// Do not train: announce, with the key of a pipeline worker whose node is gone, that it has
        /// left the run for good. The others halt, go back to the earliest step any of them was
        /// training and go on without it (SkipPipe schedules its paths again, each worker by itself
        /// from the new membership); `--replace` with the same key later brings the place back.
        #[arg(long, conflicts_with_all = ["join", "replace"])]
        leave: bool,
        /// Listen on this address instead of the one the peers file gives (the peers file then names
        /// something that forwards to it, such as a link emulator).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
        #[command(flatten)]
        p2p: P2pArgs,
    },
    /// Run a relay for swarms whose nodes cannot all reach each other (NAT, no public address): nodes
    /// join with its address (`swarmlab node --bootstrap`), it keeps the swarm's table of who is where,
    /// introduces nodes to each other for hole punching, and relays where that fails. Prints the
    /// addresses to join with; runs until stopped (Ctrl-C). Any machine every node can reach will do.
    Relay {
        /// The relay's key file (made if missing): its id, and so its address, stay the same across restarts.
        #[arg(long, default_value = "relay.key")]
        key: PathBuf,
        /// The UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:4001")]
        listen: std::net::SocketAddr,
        /// Also write the addresses to join with to this file, one per line (for scripts).
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Link emulators for `swarmlab launch --netns --emulate-link`, run inside the namespaces' switch:
    /// each `--link LISTEN=FORWARD` relays datagrams to a node through the link model, and the relays'
    /// counters are written to `--stats` (atomically, every 200 ms and at Ctrl-C).
    #[command(hide = true)]
    LinkEmulator {
        #[arg(long = "link", required = true)]
        links: Vec<String>,
        #[arg(long)]
        latency_ms: f64,
        #[arg(long)]
        mbit_per_s: f64,
        #[arg(long)]
        stats: PathBuf,
    },
    /// Run a whole swarm of real nodes on this machine: N `swarmlab node` processes on loopback, a key
    /// each and one peers file, in one run folder. Streams their progress, can kill one mid-run, and
    /// gathers their results and HDF5 logs into launch.h5 and report.md.
    Launch {
        /// Number of node processes (what the configuration needs: SAPO agents + liars, or the first
        /// arm's stages x replicas).
        #[arg(long = "local")]
        local: usize,
        /// What the nodes run: `sapo`, `codezero`, `pipeline` or `verify` (a referee and the
        /// configuration's trainers).
        #[arg(long, default_value = "sapo", value_parser = ["sapo", "codezero", "pipeline", "verify"])]
        protocol: String,
        /// The configuration every node runs [default: the built-in one for the protocol].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run folder [default: runs/launch-<unix time>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// As for `swarmlab node`.
        #[arg(long, default_value_t = 30.0)]
        idle_timeout_s: f64,
        /// Kill node NODE once it reports round ROUND (`NODE@ROUND`), to watch the others carry on;
        /// may be given several times (the same node again: its successor, with --replace).
        #[arg(long)]
        kill: Vec<launch::Kill>,
        /// Start node NODE only once another node reports round (or step) ROUND (`NODE@ROUND`): it
        /// joins the run under way (a pipeline worker fetches the current weights from a replica of
        /// its stage). With --leave, the killed node that left comes back to its place instead.
        #[arg(long)]
        late: Option<launch::Kill>,
        #[command(flatten)]
        after: AfterKill,
        /// Run every node in a network namespace of its own (its own address, its own IP stack), joined
        /// by veth pairs to a bridge: hosts of their own on one machine. Needs root; the namespaces are
        /// deleted when the launch ends.
        #[arg(long)]
        netns: bool,
        /// Put the configuration's link model (latency, bandwidth) between the nodes with a relay in
        /// front of each, and compare the time per step with the simulated network's prediction (with
        /// --netns the relays run in the namespaces' switch).
        #[arg(long)]
        emulate_link: bool,
        /// Start a relay (`swarmlab relay`) beside the nodes and have every node join through it
        /// (`swarmlab node --bootstrap`) instead of dialling the peers file's addresses.
        #[arg(long, conflicts_with = "emulate_link")]
        p2p: bool,
        /// With --netns: put these nodes (comma-separated) each behind a NAT of its own (a router
        /// namespace that masquerades its traffic), so that no other node can dial it; implies --p2p.
        /// The report says, for every pair of nodes, whether they talked directly (hole punched) or
        /// through the relay.
        #[arg(long, value_delimiter = ',', requires = "netns")]
        behind_nat: Vec<usize>,
        /// With --p2p: every connection through the relay, none direct.
        #[arg(long)]
        relay_only: bool,
    },
    /// Choose a training study's learning rate: run its baseline arm alone at each rate (everything else
    /// as the preset) and report the final validation loss of each; the best is the rate every arm of
    /// the study uses, so no method is tuned on its own. Writes report.md and sweep.json.
    SweepLr {
        /// The training study.
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(["noloco", "skippipe", "checkfree", "compose"]))]
        study: String,
        #[command(flatten)]
        output: OutputArgs,
        /// The peak learning rates to try, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = studies::sweep::DEFAULT_LRS)]
        lrs: Vec<f32>,
        /// The smoke scale (`--scale smoke`).
        #[arg(long, conflicts_with = "scale")]
        quick: bool,
        /// The rung of the scale ladder to sweep at (see `reproduce`).
        #[arg(long, value_enum, default_value_t = studies::Scale::Cpu)]
        scale: studies::Scale,
        /// Seeds per rate.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        seeds: u32,
        /// The corpus (see `reproduce`).
        #[arg(long)]
        corpus: Option<String>,
    },
    /// Regenerate the README's results section (between its `<!-- results:begin -->` and
    /// `<!-- results:end -->` lines) from folders written by `swarmlab reproduce all` (e.g. one per
    /// corpus; each under a heading of its own when there are several).
    Readme {
        /// Folders written by `swarmlab reproduce all`, in the order they appear.
        #[arg(required = true)]
        run_dirs: Vec<PathBuf>,
        /// The README to update.
        #[arg(long, default_value = "README.md")]
        file: PathBuf,
    },
    /// Rewrite report.md and the plots of a run folder from its run.h5, or of a `reproduce sapo` folder from
    /// its sapo.json (e.g. after editing the report code).
    Report {
        /// A folder written by `swarmlab run`.
        run_dir: PathBuf,
    },
    /// Check a task set exported from reasoning-gym (JSON Lines: question, answer, metadata,
    /// source_dataset): per dataset, how many tasks are our families' questions in other words and
    /// whether our verifiers accept reasoning-gym's answers to them. Prints a Markdown report.
    Gym {
        /// The JSON Lines file (the README shows how to export one).
        tasks: PathBuf,
        /// Disagreements listed per dataset.
        #[arg(long, default_value_t = 10)]
        show: usize,
    },
    /// Write a tiny random checkpoint in Hugging Face layout (two blocks 32 wide, a character-level
    /// tokenizer) into a folder: a pretrained model to try `swarmlab sapo --model` with, offline.
    TinyCheckpoint {
        /// The architecture: llama, qwen2 or qwen3.
        arch: String,
        /// The folder to write.
        out: PathBuf,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write a commented example configuration (all the defaults) to PATH.
    Init {
        /// Where to write it.
        #[arg(default_value = "swarmlab.toml")]
        path: PathBuf,
    },
}

/// Parses the process's arguments and runs the command (what the `swarmlab` binary does). Protocols
/// registered with [`crate::plugs::register`] before it are available to every configuration.
pub fn main() -> Result<()> {
    main_from(std::env::args_os())
}

/// Parses `args` (the first is the program's name) and runs the command.
pub fn main_from<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();
    let cli = Cli::parse_from(args);
    let (device, allow_large) = (cli.device, cli.allow_large);
    match cli.command {
        Command::Run { config, output: OutputArgs { out, force }, quick } => {
            let mut cfg = match config {
                Some(path) => RunConfig::load(&path)?,
                None => RunConfig::default(),
            };
            cfg.device = device.unwrap_or(cfg.device);
            run::run(cfg, run::Output { out, force, allow_large }, quick).map(drop)
        }
        Command::Reproduce {
            study,
            output: OutputArgs { out, force },
            quick,
            scale,
            seeds,
            jobs,
            corpus,
            resume,
            model,
            tasks,
        } => {
            if model.is_some() && study != "sapo" {
                anyhow::bail!("--model is for `reproduce sapo` only, not {study}");
            }
            let tasks = tasks.as_deref().map(absolute).transpose()?;
            let scale = if quick { studies::Scale::Smoke } else { scale };
            let seeds = seeds.map_or(if scale == studies::Scale::Smoke { 1 } else { 3 }, |s| s as usize);
            let jobs = jobs.map_or_else(crate::threads::default_jobs, |j| j as usize).min(seeds);
            let corpus = corpus.as_deref().map(crate::config::CorpusConfig::named);
            let how = Reproduce {
                out,
                scale,
                corpus,
                jobs,
                device: device.unwrap_or_default(),
                force,
                allow_large,
                seeds,
                resume,
                model,
                tasks,
            };
            match study.as_str() {
                "all" => all::reproduce_all(&how),
                name => all::reproduce_study(studies::find(name)?, &how).map(drop),
            }
        }
        Command::SweepLr { study, output: OutputArgs { out, force }, lrs, quick, scale, seeds, corpus } => {
            let how = Reproduce {
                out,
                scale: if quick { studies::Scale::Smoke } else { scale },
                corpus: corpus.as_deref().map(crate::config::CorpusConfig::named),
                jobs: 1,
                device: device.unwrap_or_default(),
                force,
                allow_large,
                seeds: seeds as usize,
                resume: false,
                model: None,
                tasks: None,
            };
            studies::sweep::sweep_lr(&study, &lrs, &how).map(drop)
        }
        Command::Readme { run_dirs, file } => all::readme(&run_dirs, &file),
        Command::Keygen { out, addr } => {
            let identity = transport::Identity::generate()?;
            identity.save(&out)?;
            println!("wrote {} for peer {}", out.display(), identity.peer_id());
            println!("\n[[peer]]\nid = \"{}\"\naddr = \"{addr}\"", identity.peer_id());
            Ok(())
        }
        Command::Node { protocol, replace: true, .. } if protocol != "pipeline" => {
            bail!("--replace: only a pipeline worker takes a killed one's place ({protocol} nodes simply start again)")
        }
        Command::Node { protocol, leave: true, .. } if protocol != "pipeline" => {
            bail!("--leave: only a pipeline's workers halt for a leave ({protocol} nodes go on without a silent peer)")
        }
        Command::Node { protocol, config, key, peers, out, idle_timeout_s, bind, join, replace, leave, p2p }
            if protocol == "pipeline" =>
        {
            let mut cfg = match config {
                Some(path) => RunConfig::load(&path)?,
                None => RunConfig::default(),
            };
            cfg.device = device.unwrap_or(cfg.device);
            let corpus = std::sync::Arc::new(run::corpus(&cfg)?);
            let start = if leave {
                node::Start::Leave
            } else if replace {
                node::Start::Replacement
            } else if join {
                node::Start::Late
            } else {
                node::Start::Now
            };
            node::pipeline_node(&cfg, corpus, &key, &peers, out, node_net(idle_timeout_s, bind, p2p)?, start)
        }
        Command::Node { protocol, config, key, peers, out, idle_timeout_s, bind, p2p, .. } if protocol == "verify" => {
            let cfg = match config {
                Some(path) => verify_node::VerifyConfig::parse(
                    &crate::files::read_text(&path, crate::files::MAX_CONFIG_BYTES)?,
                    &path.display().to_string(),
                )?,
                None => verify_node::VerifyConfig::default(),
            };
            verify_node::node(cfg, &key, &peers, out, node_net(idle_timeout_s, bind, p2p)?)
        }
        Command::Node { protocol, config, key, peers, out, idle_timeout_s, bind, p2p, .. }
            if protocol == "codezero" =>
        {
            let mut cfg = match config {
                Some(path) => codezero_swarm::load_config(&path)?,
                None => codezero::CodeZeroConfig::default(),
            };
            cfg.device = device.unwrap_or(cfg.device);
            codezero_swarm::node(cfg, &key, &peers, out, node_net(idle_timeout_s, bind, p2p)?)
        }
        Command::Node { config, key, peers, out, idle_timeout_s, bind, p2p, .. } => {
            let mut cfg = match config {
                Some(path) => sapo_swarm::load_config(&path)?,
                None => sapo::SapoConfig::default(),
            };
            cfg.device = device.unwrap_or(cfg.device);
            sapo_swarm::node(cfg, &key, &peers, out, node_net(idle_timeout_s, bind, p2p)?)
        }
        Command::Relay { key, listen, addr_file } => node::relay(&key, listen, addr_file.as_deref()),
        Command::LinkEmulator { links, latency_ms, mbit_per_s, stats } => {
            launch::emulate_links(&links, transport::sim::LinkSpec::mbit(latency_ms, mbit_per_s), &stats)
        }
        Command::Launch {
            local,
            protocol,
            config,
            out,
            idle_timeout_s,
            kill,
            late,
            after,
            netns,
            emulate_link,
            p2p,
            behind_nat,
            relay_only,
        } => launch::launch(launch::Launch {
            nodes: local,
            protocol,
            config,
            out,
            net: node_net(idle_timeout_s, None, P2pArgs::default())?,
            kill,
            late,
            replace: after.replace,
            leave: after.leave,
            netns,
            emulate_link,
            p2p: p2p || !behind_nat.is_empty() || relay_only,
            behind_nat,
            relay_only,
        })
        .map(|_| ()),
        Command::Codezero { config, agents, liars, rounds, roles, out, print_config } => {
            if print_config {
                print!("{}", toml::to_string(&codezero::CodeZeroConfig::default())?);
                return Ok(());
            }
            let mut cfg = match config {
                Some(path) => codezero_swarm::read_config(&path)?,
                None => codezero::CodeZeroConfig::default(),
            };
            cfg.agents = agents.unwrap_or(cfg.agents);
            cfg.liars = liars.unwrap_or(cfg.liars);
            cfg.rounds = rounds.unwrap_or(cfg.rounds);
            cfg.roles = match roles {
                // A rotation's draws follow the run's seed.
                Some(genrl::roles::RoleSchedule::Rotate { counts, .. }) => {
                    genrl::roles::RoleSchedule::Rotate { seed: cfg.seed, counts }
                }
                Some(other) => other,
                None => cfg.roles,
            };
            cfg.device = device.unwrap_or(cfg.device);
            if cfg.transport == genrl::TransportKind::Quic {
                cfg.validate()?;
                return launch_swarm("codezero", cfg.agents + cfg.liars, &toml::to_string(&cfg)?, out);
            }
            codezero_swarm::train(cfg, out)
        }
        Command::Sapo { config, mix, rounds, agents, liars, sizes, model, tasks, datasets, out, print_config } => {
            if print_config {
                print!("{}", toml::to_string(&sapo::SapoConfig::default())?);
                return Ok(());
            }
            let mut cfg = match config {
                Some(path) => sapo_swarm::read_config(&path)?,
                None => sapo::SapoConfig::default(),
            };
            if let Some(m) = mix {
                cfg.mix = sapo::Mix::parse(&m)?;
            }
            cfg.rounds = rounds.unwrap_or(cfg.rounds);
            cfg.agents = agents.unwrap_or(cfg.agents);
            cfg.liars = liars.unwrap_or(cfg.liars);
            cfg.sizes = sizes.unwrap_or(cfg.sizes);
            cfg.model = model.or(cfg.model);
            if let Some(file) = tasks {
                cfg.tasks.file = Some(absolute(&file)?);
            }
            cfg.tasks.datasets = datasets.unwrap_or(cfg.tasks.datasets);
            cfg.device = device.unwrap_or(cfg.device);
            if cfg.transport == genrl::TransportKind::Quic {
                cfg.validate()?;
                return launch_swarm("sapo", cfg.agents + cfg.liars, &toml::to_string(&cfg)?, out);
            }
            sapo_swarm::train(cfg, out)
        }
        Command::Verify {
            model,
            steps,
            trainers,
            deadline_s,
            checkpoint_every,
            evaluate,
            transport,
            ledger,
            key,
            backend,
            print_final,
        } => {
            let backend = match backend.as_str() {
                "repops" => models::Backend::RepOps,
                "native" if print_final => models::Backend::Native,
                "native" => bail!("disputes need repops: --backend native only goes with --print-final"),
                other => bail!("unknown backend {other:?}: repops or native"),
            };
            if print_final {
                verify::print_final(&model, steps, backend)
            } else if transport == "quic" {
                if ledger.is_some() {
                    bail!("--ledger goes with --transport sim: over QUIC the referee node writes referee.json");
                }
                let trainers = if trainers.is_empty() { verify::default_trainers(steps)? } else { trainers };
                let cfg = verify_node::VerifyConfig {
                    model,
                    steps,
                    evaluate,
                    trainers: trainers.iter().map(ToString::to_string).collect(),
                    deadline_s,
                    checkpoint_every,
                };
                verify_node::over_quic(&cfg)
            } else {
                let how = verify::Verification { deadline_s, checkpoint_every, evaluate, ledger: ledger.zip(key) };
                verify::verify(&model, steps, trainers, how)
            }
        }
        Command::Init { path } => init(&path),
        Command::TinyCheckpoint { arch, out, seed } => {
            let arch = match arch.as_str() {
                "llama" => pretrained::Architecture::Llama,
                "qwen2" => pretrained::Architecture::Qwen2,
                "qwen3" => pretrained::Architecture::Qwen3,
                other => anyhow::bail!("architecture {other:?} is not one of llama, qwen2, qwen3"),
            };
            pretrained::tiny::write(&out, arch, seed)?;
            println!("wrote a tiny random {} checkpoint into {}", arch.name(), out.display());
            Ok(())
        }
        Command::Gym { tasks, show } => {
            print!("{}", crate::gym::check(&tasks, show)?);
            Ok(())
        }
        Command::Report { run_dir } => {
            // A folder a study wrote with a run of its own, else a `swarmlab run` folder.
            match studies::STUDIES.iter().find_map(|s| s.rewrite(&run_dir)) {
                Some(rewritten) => rewritten?,
                None => report::rewrite(&run_dir)?,
            }
            println!("report: {}", run_dir.join("report.md").display());
            Ok(())
        }
    }
}

fn init(path: &Path) -> Result<()> {
    if path.exists() {
        bail!("{} already exists; not overwriting it", path.display());
    }
    write_atomic(path, EXAMPLE.as_bytes())?;
    println!("wrote {}: edit it, then `swarmlab run {}`", path.display(), path.display());
    Ok(())
}

/// `--idle-timeout-s`, `--bind` and `--bootstrap` as a [`node::NodeNet`].
fn node_net(idle_timeout_s: f64, bind: Option<std::net::SocketAddr>, p2p: P2pArgs) -> Result<node::NodeNet> {
    if !(idle_timeout_s.is_finite() && (0.1..=3600.0).contains(&idle_timeout_s)) {
        bail!("--idle-timeout-s {idle_timeout_s}: give seconds between 0.1 and 3600");
    }
    Ok(node::NodeNet { idle_timeout: std::time::Duration::from_secs_f64(idle_timeout_s), bind, p2p: p2p.join() })
}

/// A swarm game's checked configuration (`config`, overrides applied) run as `nodes` node processes on
/// this machine, each link emulated with the configuration's model: the configuration goes to every node
/// as `<protocol>.toml` in the output folder.
/// `path` made absolute (against the working directory), so that it names the same file wherever it
/// is read: in a node process, or in the configuration a run writes.
fn absolute(path: &Path) -> Result<String> {
    let path = std::path::absolute(path).with_context(|| format!("{}", path.display()))?;
    path.to_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))
}

fn launch_swarm(protocol: &str, nodes: usize, config: &str, out: Option<PathBuf>) -> Result<()> {
    let out = out_dir(out, protocol)?;
    let path = out.join(format!("{protocol}.toml"));
    write_atomic(&path, config.as_bytes())?;
    let launch = launch::Launch { emulate_link: true, ..launch::Launch::plain(nodes, protocol, Some(path), Some(out)) };
    launch::launch(launch).map(|_| ())
}

/// A `--roles` value: `all`, `split` or `rotate:P/S/E`.
fn parse_roles(s: &str) -> std::result::Result<genrl::roles::RoleSchedule, String> {
    use genrl::roles::RoleSchedule;
    match s {
        "all" => Ok(RoleSchedule::All),
        "split" => Ok(RoleSchedule::Fixed(vec![vec![0], vec![1], vec![2]])),
        _ => {
            let bad = || format!("{s:?} is not all, split or rotate:P/S/E (e.g. rotate:1/2/1)");
            let counts = s.strip_prefix("rotate:").ok_or_else(bad)?;
            let counts: Vec<usize> = counts
                .split('/')
                .map(|c| c.trim().parse::<usize>().map_err(|_| bad()))
                .collect::<std::result::Result<_, _>>()?;
            if counts.len() != 3 {
                return Err(bad());
            }
            Ok(RoleSchedule::Rotate { seed: 0, counts })
        }
    }
}
