//! `swarmlab node --protocol verify`: Verde between real processes. Node 0 of the peers file is the
//! referee, every other node a trainer (or, with `evaluate`, an evaluator) that runs the program as its
//! configuration line says, sends its claim and answers the referee over QUIC with mutual TLS, on the
//! wall clock: a node that does not answer within the deadline — killed, say — loses its dispute. The
//! referee then settles the same trainers on the simulated network and writes both settlements, so a
//! run shows that the real network decides as the simulated one does, and appends the stakes' movements
//! to its ledger file (`stakes.ledger`, entries signed with its node key).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use verde::net::{DisputeRecord, SettleConfig, defend, verify_claims};
use verde::{Conduct, Outcome, Settlement};

use crate::files::{out_dir, write_atomic};
use crate::node::{Node, NodeLog, NodeNet};
use crate::verify::{Setup, TrainerSpec, check_deadline, checkpoints, verified_program};

/// A verification swarm's configuration: the program, the trainers (node 1 on, in peers-file order) and
/// the referee's deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct VerifyConfig {
    /// The model: `tiny` or `small`.
    pub(crate) model: String,
    /// Training steps.
    pub(crate) steps: u64,
    /// Verify the evaluation of the trained model on this many held-out batches instead.
    pub(crate) evaluate: Option<u64>,
    /// One per trainer node, as `swarmlab verify --trainer` takes them (`honest`, `perturb-op@4:17`, …).
    pub(crate) trainers: Vec<String>,
    /// Seconds a party may take to answer the referee (real time).
    pub(crate) deadline_s: f64,
    /// Trainers keep their state every K steps.
    pub(crate) checkpoint_every: Option<u64>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            model: "tiny".into(),
            steps: 8,
            evaluate: None,
            trainers: vec!["honest".into(), "perturb-op@4:17".into(), "honest".into()],
            deadline_s: 10.0,
            checkpoint_every: None,
        }
    }
}

impl VerifyConfig {
    /// Parses and checks a configuration's text (`source` names it in errors).
    pub(crate) fn parse(text: &str, source: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).with_context(|| format!("config {source}"))?;
        cfg.specs().with_context(|| format!("config {source}"))?;
        check_deadline(cfg.deadline_s).with_context(|| format!("config {source}: deadline_s"))?;
        Ok(cfg)
    }

    /// The trainers, parsed.
    pub(crate) fn specs(&self) -> Result<Vec<TrainerSpec>> {
        if self.trainers.is_empty() {
            bail!("trainers: a verification needs at least one trainer");
        }
        self.trainers.iter().map(|t| t.parse().map_err(|e: String| anyhow::anyhow!("trainers: {e}"))).collect()
    }

    /// Nodes the swarm needs: the referee and one per trainer.
    pub(crate) fn nodes(&self) -> usize {
        1 + self.trainers.len()
    }
}

/// One dispute as a node's result file records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DisputeLine {
    trainer: usize,
    challenger: usize,
    /// The winner's trainer index (none: both lost, or they agreed).
    winner: Option<usize>,
    outcome: String,
    step: Option<u64>,
    record: Option<u64>,
    bytes: u64,
    seconds: f64,
}

impl DisputeLine {
    fn of(d: &DisputeRecord) -> Self {
        let winner = d.winner();
        let outcome = match (&d.outcome, winner) {
            (Outcome::Won { fault, .. }, Some(w)) => format!("trainer {w} wins: {fault}"),
            (Outcome::BothLose(why), _) => format!("both lose: {why}"),
            _ => "agreed".into(),
        };
        Self {
            trainer: d.trainer,
            challenger: d.challenger,
            winner,
            outcome,
            step: d.summary.step,
            record: d.summary.record,
            bytes: d.traffic.bytes,
            seconds: d.seconds,
        }
    }

    /// Whether two disputes ended alike: the same parties and winner, narrowed to the same step and record.
    fn same_verdict(&self, other: &Self) -> bool {
        (self.trainer, self.challenger, self.winner, self.step, self.record)
            == (other.trainer, other.challenger, other.winner, other.step, other.record)
    }
}

/// A settlement as the referee's result file records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SettlementLine {
    /// The accepted final state (hex), if a claim stands.
    accepted: Option<String>,
    /// The trainers whose claim stands.
    standing: Vec<usize>,
    disputes: Vec<DisputeLine>,
}

impl SettlementLine {
    fn of(s: &Settlement) -> Self {
        Self {
            accepted: s.accepted.map(|h| transport::hex::encode(&h)),
            standing: (0..s.standing.len()).filter(|&i| s.standing[i]).collect(),
            disputes: s.disputes.iter().map(DisputeLine::of).collect(),
        }
    }

    fn same_verdicts(&self, other: &Self) -> bool {
        self.accepted == other.accepted
            && self.standing == other.standing
            && self.disputes.len() == other.disputes.len()
            && self.disputes.iter().zip(&other.disputes).all(|(a, b)| a.same_verdict(b))
    }
}

/// The referee's result file, `referee.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefereeResult {
    /// The settlement between the node processes, over QUIC.
    pub(crate) quic: SettlementLine,
    /// The same trainers settled on the simulated network.
    pub(crate) simulated: SettlementLine,
    /// Whether both ended alike (the same disputes, winners, steps and records, and the same accepted state).
    pub(crate) same_as_simulated: bool,
    pub(crate) wall_s: f64,
}

/// A trainer's result file, `trainer-<node>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TrainerResult {
    trainer: String,
    final_state: String,
    score: Option<f32>,
    questions_answered: u64,
    wall_s: f64,
}

/// Runs this process's node of a verification swarm.
pub(crate) fn node(cfg: VerifyConfig, key: &Path, peers: &Path, out: Option<PathBuf>, net: NodeNet) -> Result<()> {
    let specs = cfg.specs()?;
    let deadline = check_deadline(cfg.deadline_s)?;
    let what = format!("the verification has a referee and {} trainers", specs.len());
    let node = Node::load(key, peers, cfg.nodes(), &what, net)?;
    let index = node.index;
    let out = out_dir(out, "node")?;
    let role = if index == 0 { "referee".to_owned() } else { format!("trainer {} ({})", index - 1, specs[index - 1]) };
    eprintln!("swarmlab node {}: {role}, listening on {}", node.id(), node.addr);
    let started = Instant::now();
    let settle_config = SettleConfig { deadline, ..SettleConfig::default() };
    let prepare = || -> Result<(Setup, Option<Arc<verde::Execution>>)> {
        let program = verified_program(&cfg.model, cfg.steps, cfg.evaluate)?;
        let setup = Setup::keeping(program, deadline, checkpoints(cfg.checkpoint_every)?)?;
        let run = if index == 0 { None } else { Some(setup.run(specs[index - 1])?) };
        Ok((setup, run))
    };
    let conduct = if index == 0 { Conduct::Faithful } else { specs[index - 1].conduct };
    let (setup, outcome, log) = node.run(genrl::DeviceProfile::a10(), prepare, |ctx, (setup, run)| {
        let settle_config = settle_config.clone();
        let metrics = ctx.metrics.clone();
        async move {
            let outcome = match run {
                None => {
                    let s =
                        verify_claims(&ctx.transport, &ctx.clock, &ctx.peers[1..], setup.rules.clone(), &settle_config)
                            .await?;
                    NodeOutcome::Referee(s)
                }
                Some(run) => {
                    let structure = setup.rules.structure.clone();
                    let mut answered = 0;
                    let progress = |q| {
                        answered = q;
                        eprintln!("round {q}");
                    };
                    defend(&ctx.transport, ctx.peers[0], run.clone(), structure, conduct, progress).await?;
                    NodeOutcome::Trainer(run, answered)
                }
            };
            anyhow::Ok((setup, outcome, metrics.snapshot()))
        }
    })?;
    let wall_s = started.elapsed().as_secs_f64();
    match outcome {
        NodeOutcome::Referee(settled) => {
            eprintln!("referee: settling the same trainers on the simulated network for comparison");
            let runs = specs
                .iter()
                .map(|s| Ok((setup.run(*s)?, s.conduct)))
                .collect::<Result<Vec<(Arc<verde::Execution>, Conduct)>>>()?;
            let simulated = verde::settle(&setup.rules, runs, &settle_config)?;
            let (quic, simulated) = (SettlementLine::of(&settled), SettlementLine::of(&simulated));
            let same = quic.same_verdicts(&simulated);
            for d in &quic.disputes {
                println!("dispute trainer {} vs trainer {}: {}", d.trainer, d.challenger, d.outcome);
            }
            println!(
                "referee: accepted {} (trainers {:?}); the simulated network {}",
                quic.accepted.as_deref().map_or("nothing", |h| &h[..8]),
                quic.standing,
                if same { "decides the same" } else { "decides differently" }
            );
            let result = RefereeResult { quic, simulated, same_as_simulated: same, wall_s };
            write_atomic(&out.join("referee.json"), serde_json::to_string_pretty(&result)?.as_bytes())?;
            // The stakes: appended to the referee's ledger file, signed with its node key (a ledger kept
            // across verifications; it refuses any entry not signed by this referee).
            let identity = node.identity();
            let mut ledger = verde::LedgerFile::open(out.join("stakes.ledger"), &[identity.public_key()])?;
            crate::verify::record(&mut ledger, identity, &settled)?;
        }
        NodeOutcome::Trainer(run, answered) => {
            let result = TrainerResult {
                trainer: specs[index - 1].to_string(),
                final_state: transport::hex::encode(run.hashes.last().context("a run has states")?),
                score: run.score().map(|s| s.mean()),
                questions_answered: answered,
                wall_s,
            };
            println!("trainer {}: answered {answered} questions", index - 1);
            write_atomic(
                &out.join(format!("trainer-{index}.json")),
                serde_json::to_string_pretty(&result)?.as_bytes(),
            )?;
        }
    }
    NodeLog { place: index, peer: node.id().to_string(), protocol: "verify".into(), wall_s, log }
        .save(&out.join(format!("node-{index}.h5")))?;
    Ok(())
}

/// What a node's part ended in.
enum NodeOutcome {
    Referee(Settlement),
    Trainer(Arc<verde::Execution>, u64),
}

/// A few words on a verification node's result file, for the launch report.
pub(crate) fn result_of(results: &Path, place: usize) -> String {
    let read = |file: String| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(results.join(file)).ok()?).ok()
    };
    if place == 0 {
        let Some(v) = read("referee.json".into()) else { return "no result".into() };
        let disputes = v["quic"]["disputes"].as_array().map_or(0, Vec::len);
        let standing: Vec<String> =
            v["quic"]["standing"].as_array().into_iter().flatten().map(|s| s.to_string()).collect();
        format!(
            "referee: {disputes} disputes, trainers {} stand; simulated network: {}",
            if standing.is_empty() { "none".into() } else { standing.join(", ") },
            if v["same_as_simulated"].as_bool() == Some(true) { "same verdicts" } else { "different verdicts" }
        )
    } else {
        let Some(v) = read(format!("trainer-{place}.json")) else { return "no result".into() };
        format!(
            "trainer {}: {}, final state {}, answered {} questions",
            place - 1,
            v["trainer"].as_str().unwrap_or("?"),
            v["final_state"].as_str().map_or("?", |h| &h[..8.min(h.len())]),
            v["questions_answered"]
        )
    }
}

/// `swarmlab verify --transport quic`: the verification as node processes on loopback (a referee and
/// one node per trainer), in a run folder of its own; prints the referee's settlement.
pub(crate) fn over_quic(cfg: &VerifyConfig) -> Result<()> {
    cfg.specs()?;
    let out = out_dir(None, "verify")?;
    let path = out.join("verify.toml");
    write_atomic(&path, toml::to_string(cfg)?.as_bytes())?;
    let launch = crate::launch::Launch::plain(cfg.nodes(), "verify", Some(path), Some(out.clone()));
    crate::launch::launch(launch)?;
    let referee: RefereeResult = serde_json::from_str(
        &std::fs::read_to_string(out.join("nodes/referee.json")).context("the referee node wrote no result")?,
    )?;
    for d in &referee.quic.disputes {
        println!("dispute: trainer {} vs trainer {}: {}", d.trainer, d.challenger, d.outcome);
    }
    println!(
        "accepted: {} (trainers {:?}); on the simulated network the same trainers {}",
        referee.quic.accepted.as_deref().map_or("nothing", |h| &h[..8]),
        referee.quic.standing,
        if referee.same_as_simulated { "settle the same way" } else { "settle differently" }
    );
    Ok(())
}
