//! Disputes over the network: the referee and the trainers as agents exchanging [`Message`]s on any
//! [`Transport`], on the clock the swarm lives on. The referee drives a [`Dispute`] per pair of
//! conflicting claims, asks both parties, waits for their answers up to the deadline, and tells them when
//! it is over; a trainer answers through its [`Defender`]. [`settle`] runs a whole verification — one
//! referee, `N` trainers of one program — on the simulated network.
//!
//! With more than two distinct final claims the referee plays them off in turn: the standing claim
//! disputes the next one, the loser is out (both, if both lose), until one claim stands. As long as one
//! trainer is honest, its claim is the one that stands. Every dispute's loser is slashed on the
//! [`Ledger`] in favour of its winner (simulated stakes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use genrl::clock::timeout;
use genrl::{Clock, SimSwarm, World};
use serde::{Deserialize, Serialize};
use transport::sim::LinkSpec;
use transport::{PeerId, Transport, TransportExt};

use crate::bisection::Party;
use crate::defender::{Conduct, Defender};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Movement};
use crate::merkle::Hash;
use crate::program::Execution;
use crate::referee::{Answer, Ask, Dispute, Outcome, Rules, Summary};

/// What referee and trainers send each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// The referee's question in dispute `dispute`.
    Ask {
        /// The dispute.
        dispute: u32,
        /// The question.
        ask: Ask,
    },
    /// A trainer's answer in dispute `dispute`.
    Answer {
        /// The dispute.
        dispute: u32,
        /// The answer.
        answer: Box<Answer>,
    },
    /// Dispute `dispute` is over.
    Over {
        /// The dispute.
        dispute: u32,
    },
    /// No more disputes: trainers may stop.
    Close,
}

fn net_error(e: impl std::fmt::Display) -> Error {
    Error::Network(e.to_string())
}

/// Messages and bytes a dispute cost, both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent.
    pub messages: u64,
    /// Their encoded bytes.
    pub bytes: u64,
}

/// Referees one dispute between `parties` (trainer, challenger) under `rules`.
pub async fn referee<T: Transport, C: Clock>(
    transport: &T,
    clock: &C,
    id: u32,
    parties: [PeerId; 2],
    rules: Rules,
) -> Result<(Outcome, Summary, Traffic)> {
    let deadline = rules.deadline;
    let codec = transport.codec();
    let mut traffic = Traffic::default();
    let mut dispute = Dispute::new(rules, clock.now());
    while let Some(ask) = dispute.ask() {
        // Encoded once: the same bytes go to both parties and are what is counted.
        let payload = codec.encode(&Message::Ask { dispute: id, ask }).map_err(net_error)?;
        traffic.bytes += 2 * payload.len() as u64;
        traffic.messages += 2;
        transport.broadcast(&parties, payload).await.map_err(net_error)?;
        let asked_at = clock.now();
        let mut answered = [false; 2];
        while !answered.iter().all(|&a| a) && dispute.outcome().is_none() {
            let left = (asked_at + deadline).saturating_sub(clock.now()) + Duration::from_millis(1);
            match timeout(clock, left, transport.recv()).await {
                Err(_) => {
                    dispute.poll(clock.now());
                }
                Ok(envelope) => {
                    let envelope = envelope.map_err(net_error)?;
                    let Some(k) = parties.iter().position(|&p| p == envelope.from) else { continue };
                    let party = if k == 0 { Party::Trainer } else { Party::Challenger };
                    traffic.bytes += envelope.payload.len() as u64;
                    traffic.messages += 1;
                    match codec.decode::<Message>(&envelope.payload) {
                        Ok(Message::Answer { dispute: d, answer }) if d == id && !answered[k] => {
                            answered[k] = true;
                            dispute.answer(party, *answer, clock.now());
                        }
                        // Stale answers to an earlier dispute or a repeated answer: not this question's.
                        Ok(_) => {}
                        Err(e) => dispute.reject(party, e.to_string(), clock.now()),
                    }
                }
            }
        }
    }
    transport.broadcast_msg(&parties, &Message::Over { dispute: id }).await.map_err(net_error)?;
    let outcome = dispute.outcome().cloned().ok_or_else(|| net_error("the dispute ended without an outcome"))?;
    Ok((outcome, dispute.summary(), traffic))
}

/// A trainer's side: answers the referee's questions in every dispute it is part of, until `Close`.
pub async fn defend<T: Transport>(
    transport: &T,
    referee: PeerId,
    execution: Arc<Execution>,
    structure: Arc<crate::Structure>,
    conduct: Conduct,
) -> Result<()> {
    let mut disputes: BTreeMap<u32, Defender> = BTreeMap::new();
    loop {
        let (from, message) = transport.recv_msg::<Message>().await.map_err(net_error)?;
        if from != referee {
            continue;
        }
        match message {
            Message::Ask { dispute, ask } => {
                let defender = disputes
                    .entry(dispute)
                    .or_insert_with(|| Defender::new(execution.clone(), structure.clone(), conduct));
                if let Some(answer) = defender.respond(&ask)? {
                    transport
                        .send_msg(referee, &Message::Answer { dispute, answer: Box::new(answer) })
                        .await
                        .map_err(net_error)?;
                }
            }
            Message::Over { dispute } => {
                disputes.remove(&dispute);
            }
            Message::Close => return Ok(()),
            Message::Answer { .. } => {}
        }
    }
}

/// One dispute of a settlement.
#[derive(Debug, Clone, PartialEq)]
pub struct DisputeRecord {
    /// The trainer whose claim stood (index among the settlement's trainers).
    pub trainer: usize,
    /// The trainer that challenged it.
    pub challenger: usize,
    /// How it ended.
    pub outcome: Outcome,
    /// Where it got to and what the referee did.
    pub summary: Summary,
    /// What it cost on the network.
    pub traffic: Traffic,
    /// Virtual time it took.
    pub seconds: f64,
}

/// The result of verifying one program run by several trainers.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// The final state hash that stands, if any claim does.
    pub accepted: Option<Hash>,
    /// Per trainer: whether its claim stands.
    pub standing: Vec<bool>,
    /// The disputes, in order.
    pub disputes: Vec<DisputeRecord>,
    /// Stakes after slashing (keys `trainer<i>`).
    pub ledger: Ledger,
    /// The deposits and settled disputes that made them, in order (what a [`crate::LedgerFile`] records).
    pub movements: Vec<Movement>,
}

/// How a settlement is run.
#[derive(Debug, Clone)]
pub struct SettleConfig {
    /// How long a party may take to answer (virtual time).
    pub deadline: Duration,
    /// Each trainer's deposit, and what a dispute's loser forfeits to its winner.
    pub stake: u64,
    /// The link between referee and trainers.
    pub link: LinkSpec,
    /// Seed of the simulated network.
    pub seed: u64,
}

impl Default for SettleConfig {
    fn default() -> Self {
        Self { deadline: Duration::from_secs(60), stake: 100, link: LinkSpec::mbit(20.0, 1000.0), seed: 1 }
    }
}

/// Verifies `trainers` — each an execution of one program and its conduct in disputes — with a referee
/// bound by `rules`, all on the simulated network: claims with the same final state form one side, and
/// conflicting sides are disputed in turn until one stands.
pub fn settle(rules: &Rules, trainers: Vec<(Arc<Execution>, Conduct)>, config: &SettleConfig) -> Result<Settlement> {
    let n = trainers.len();
    if n == 0 {
        return Err(Error::Program("a settlement needs at least one trainer".into()));
    }
    let finals: Vec<Hash> = trainers.iter().map(|(e, _)| e.hashes.last().copied().unwrap_or_default()).collect();
    let structure = rules.structure.clone();
    let rules = rules.clone();
    let config = config.clone();
    let world = World::uniform(n + 1, genrl::DeviceProfile::a10(), config.link);
    let seed = config.seed;
    let trainers = Arc::new(trainers);
    let results = genrl::run_simulation(async move {
        let swarm = SimSwarm::build(&world, seed).map_err(net_error)?;
        let out = swarm
            .run(move |ctx| {
                let (trainers, structure, rules, finals, config) =
                    (trainers.clone(), structure.clone(), rules.clone(), finals.clone(), config.clone());
                async move {
                    let referee_id = ctx.peers[0];
                    if ctx.index > 0 {
                        let (execution, conduct) = trainers[ctx.index as usize - 1].clone();
                        defend(&ctx.transport, referee_id, execution, structure, conduct)
                            .await
                            .map_err(|e| genrl::Error::config("verde.trainer", e.to_string()))?;
                        return Ok(None);
                    }
                    let settlement = tournament(&ctx.transport, &ctx.clock, &ctx.peers[1..], &finals, rules, &config)
                        .await
                        .map_err(|e| genrl::Error::config("verde.referee", e.to_string()));
                    ctx.transport.broadcast_msg(&ctx.peers[1..], &Message::Close).await?;
                    settlement.map(Some)
                }
            })
            .await;
        Ok::<_, Error>(out)
    })
    .map_err(net_error)??;
    let mut referee = None;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(Some(s)) => referee = Some(s),
            Ok(None) => {}
            Err(e) => return Err(Error::Network(format!("agent {i}: {e}"))),
        }
    }
    referee.ok_or_else(|| net_error("the referee returned no settlement"))
}

/// The referee's whole job: group the claims, dispute them in turn, settle the stakes.
async fn tournament<T: Transport, C: Clock>(
    transport: &T,
    clock: &C,
    peers: &[PeerId],
    finals: &[Hash],
    rules: Rules,
    config: &SettleConfig,
) -> Result<Settlement> {
    let name = |i: usize| format!("trainer{i}");
    let mut ledger = Ledger::default();
    let mut movements = Vec::new();
    let mut record = |ledger: &mut Ledger, m: Movement| {
        ledger.apply(&m);
        movements.push(m);
    };
    for i in 0..finals.len() {
        record(&mut ledger, Movement::Deposit { who: name(i), amount: config.stake });
    }
    // One side per distinct final claim, represented by its first trainer.
    let mut sides: Vec<(Hash, Vec<usize>)> = Vec::new();
    for (i, f) in finals.iter().enumerate() {
        match sides.iter_mut().find(|s| s.0 == *f) {
            Some(side) => side.1.push(i),
            None => sides.push((*f, vec![i])),
        }
    }
    let mut queue = sides.into_iter();
    let mut standing = queue.next();
    let mut disputes = Vec::new();
    for next in queue {
        let Some(champion) = standing.take() else {
            standing = Some(next);
            continue;
        };
        let (a, b) = (champion.1[0], next.1[0]);
        let began = clock.now();
        let id = disputes.len() as u32;
        let (outcome, summary, traffic) = referee(transport, clock, id, [peers[a], peers[b]], rules.clone()).await?;
        let seconds = (clock.now() - began).as_secs_f64();
        match &outcome {
            Outcome::Won { winner: Party::Trainer, .. } => {
                record(&mut ledger, Movement::Settle { winner: name(a), loser: name(b), stake: config.stake });
                standing = Some(champion);
            }
            Outcome::Won { winner: Party::Challenger, .. } => {
                record(&mut ledger, Movement::Settle { winner: name(b), loser: name(a), stake: config.stake });
                standing = Some(next);
            }
            // Both sides are out; the next side in the queue stands unchallenged until disputed.
            Outcome::BothLose(_) | Outcome::Agreed => {}
        }
        disputes.push(DisputeRecord { trainer: a, challenger: b, outcome, summary, traffic, seconds });
    }
    let standing_flags = (0..finals.len()).map(|i| standing.as_ref().is_some_and(|s| s.1.contains(&i))).collect();
    Ok(Settlement { accepted: standing.map(|s| s.0), standing: standing_flags, disputes, ledger, movements })
}
