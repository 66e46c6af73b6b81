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
use crate::referee::{Answer, Ask, Dispute, Fault, Outcome, Rules, Summary};

/// What referee and trainers send each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A trainer's claim, sent once before any dispute: the final state of its run.
    Claim {
        /// The hash of the state it claims the run ends in.
        final_state: Hash,
    },
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
        for party in parties {
            // A party that cannot be reached (its process died) gets no question: it loses at the
            // deadline, as if it had stayed silent.
            let _ = transport.send(party, payload.clone()).await;
        }
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
    for party in parties {
        let _ = transport.send_msg(party, &Message::Over { dispute: id }).await;
    }
    let outcome = dispute.outcome().cloned().ok_or_else(|| net_error("the dispute ended without an outcome"))?;
    Ok((outcome, dispute.summary(), traffic))
}

/// A trainer's side: sends its claim (the final state of `execution`) to the referee, then answers the
/// referee's questions in every dispute it is part of, until `Close`; `answered` is told how many
/// questions it has answered so far (progress, for logs).
pub async fn defend<T: Transport>(
    transport: &T,
    referee: PeerId,
    execution: Arc<Execution>,
    structure: Arc<crate::Structure>,
    conduct: Conduct,
    mut answered: impl FnMut(u64) + Send,
) -> Result<()> {
    let final_state = execution.hashes.last().copied().ok_or(Error::Empty)?;
    transport.send_msg(referee, &Message::Claim { final_state }).await.map_err(net_error)?;
    let mut disputes: BTreeMap<u32, Defender> = BTreeMap::new();
    let mut questions = 0;
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
                    questions += 1;
                    answered(questions);
                }
            }
            Message::Over { dispute } => {
                disputes.remove(&dispute);
            }
            Message::Close => return Ok(()),
            Message::Answer { .. } | Message::Claim { .. } => {}
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

impl DisputeRecord {
    /// The winner's trainer index (`None`: both lost, or they agreed).
    pub fn winner(&self) -> Option<usize> {
        match self.outcome {
            Outcome::Won { winner: Party::Trainer, .. } => Some(self.trainer),
            Outcome::Won { winner: Party::Challenger, .. } => Some(self.challenger),
            Outcome::BothLose(_) | Outcome::Agreed => None,
        }
    }
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
                let (trainers, structure, rules, config) =
                    (trainers.clone(), structure.clone(), rules.clone(), config.clone());
                async move {
                    let referee_id = ctx.peers[0];
                    if ctx.index > 0 {
                        let (execution, conduct) = trainers[ctx.index as usize - 1].clone();
                        defend(&ctx.transport, referee_id, execution, structure, conduct, |_| {})
                            .await
                            .map_err(|e| genrl::Error::config("verde.trainer", e.to_string()))?;
                        return Ok(None);
                    }
                    let settlement = verify_claims(&ctx.transport, &ctx.clock, &ctx.peers[1..], rules, &config)
                        .await
                        .map_err(|e| genrl::Error::config("verde.referee", e.to_string()));
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

/// The referee's whole job, on any transport and clock: collect each trainer's claim (a trainer that
/// has not claimed within the deadline has no claim), dispute conflicting claims in turn, settle the
/// stakes, and tell the trainers it is over. `trainers` are the trainers' ids, in order.
pub async fn verify_claims<T: Transport, C: Clock>(
    transport: &T,
    clock: &C,
    trainers: &[PeerId],
    rules: Rules,
    config: &SettleConfig,
) -> Result<Settlement> {
    let mut finals: Vec<Option<Hash>> = vec![None; trainers.len()];
    let until = clock.now() + config.deadline;
    while finals.iter().any(Option::is_none) {
        let left = until.saturating_sub(clock.now());
        if left.is_zero() {
            break;
        }
        let Ok(received) = timeout(clock, left, transport.recv()).await else { break };
        let envelope = received.map_err(net_error)?;
        let Some(k) = trainers.iter().position(|&p| p == envelope.from) else { continue };
        if let Ok(Message::Claim { final_state }) = transport.codec().decode::<Message>(&envelope.payload) {
            finals[k].get_or_insert(final_state);
        }
    }
    let settlement = tournament(transport, clock, trainers, &finals, rules, config).await;
    for &t in trainers {
        let _ = transport.send_msg(t, &Message::Close).await;
    }
    settlement
}

/// Groups the claims, disputes them in turn, settles the stakes.
async fn tournament<T: Transport, C: Clock>(
    transport: &T,
    clock: &C,
    peers: &[PeerId],
    finals: &[Option<Hash>],
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
        let Some(f) = f else { continue };
        match sides.iter_mut().find(|s| s.0 == *f) {
            Some(side) => side.1.push(i),
            None => sides.push((*f, vec![i])),
        }
    }
    // The standing side disputes each next side in turn, each represented by its first member still
    // in. A member that loses by its own conduct (silence, a bad or malformed answer) is out alone and
    // the next member of its side takes over the dispute; a claim the referee judged wrong is out with
    // its whole side.
    let mut queue = sides.into_iter();
    let mut standing = queue.next();
    let mut disputes = Vec::new();
    for next in queue {
        let Some(mut champion) = standing.take() else {
            standing = Some(next);
            continue;
        };
        let mut next = next;
        loop {
            let (a, b) = (champion.1[0], next.1[0]);
            let began = clock.now();
            let id = disputes.len() as u32;
            let (outcome, summary, traffic) =
                referee(transport, clock, id, [peers[a], peers[b]], rules.clone()).await?;
            let seconds = (clock.now() - began).as_secs_f64();
            // Which sides lose a member, and whether the loss condemns the claim itself.
            let (champion_out, next_out, claim_judged) = match &outcome {
                Outcome::Won { winner: Party::Trainer, fault } => {
                    record(&mut ledger, Movement::Settle { winner: name(a), loser: name(b), stake: config.stake });
                    (false, true, matches!(fault, Fault::WrongClaim(_)))
                }
                Outcome::Won { winner: Party::Challenger, fault } => {
                    record(&mut ledger, Movement::Settle { winner: name(b), loser: name(a), stake: config.stake });
                    (true, false, matches!(fault, Fault::WrongClaim(_)))
                }
                Outcome::BothLose(_) => (true, true, false),
                Outcome::Agreed => (false, false, false),
            };
            disputes.push(DisputeRecord { trainer: a, challenger: b, outcome, summary, traffic, seconds });
            for (out, side) in [(champion_out, &mut champion), (next_out, &mut next)] {
                if out {
                    if claim_judged {
                        side.1.clear()
                    } else {
                        side.1.remove(0);
                    }
                }
            }
            match (champion.1.is_empty(), next.1.is_empty()) {
                // Both still have members that have not lost: the dispute goes on between them.
                (false, false) if champion_out || next_out => continue,
                (false, _) => standing = Some(champion),
                (true, false) => standing = Some(next),
                (true, true) => {}
            }
            break;
        }
    }
    let standing_flags = (0..finals.len()).map(|i| standing.as_ref().is_some_and(|s| s.1.contains(&i))).collect();
    Ok(Settlement { accepted: standing.map(|s| s.0), standing: standing_flags, disputes, ledger, movements })
}
