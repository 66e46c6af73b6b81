//! GenRL's game loop: rounds made of stages, played by every agent of a swarm.
//!
//! In each stage an agent's [`Trainer`] generates actions for the round's items (from its
//! [`DataManager`]), then shares its entries — item and actions — with the swarm through the
//! [`CommunicationBackend`]; what arrives from peers joins the agent's [`GameState`] after the reward
//! manager has selected what to keep. After the last stage the [`RewardManager`] scores every entry by
//! the agent's own rules (shared claims are never trusted), and the trainer learns from them. A payload
//! that does not decode is counted and dropped; at most `max_entries_per_peer` entries are taken from
//! any one peer. SAPO fills these roles with a policy LM, task verifiers and GRPO.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use transport::PeerId;

use crate::comm::CommunicationBackend;
use crate::error::{Error, Result};
use crate::roles::{self, Board, Learned, Role, RoleSeat, Seat};

/// One item and the actions generated for it, by its source agent, at one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<I, A> {
    /// The agent that generated the actions.
    pub source: PeerId,
    /// The stage it was generated at.
    pub stage: usize,
    /// The world state: what the actions answer.
    pub item: I,
    /// The actions (e.g. sampled completions).
    pub actions: Vec<A>,
}

/// What an agent knows in a round: its own entries and those it kept from the swarm.
#[derive(Debug, Clone, PartialEq)]
pub struct GameState<I, A> {
    /// The round.
    pub round: u64,
    /// This agent.
    pub local: PeerId,
    /// Own and kept external entries, in stage order (own first within a stage).
    pub entries: Vec<Entry<I, A>>,
    /// Payloads or entries dropped as malformed or over the per-peer cap.
    pub rejected: usize,
    /// Peers that did not share in time, per stage.
    pub missing: Vec<PeerId>,
}

impl<I, A> GameState<I, A> {
    /// This agent's own entries.
    pub fn own(&self) -> impl Iterator<Item = &Entry<I, A>> {
        self.entries.iter().filter(move |e| e.source == self.local)
    }

    /// The entries kept from the swarm.
    pub fn external(&self) -> impl Iterator<Item = &Entry<I, A>> {
        self.entries.iter().filter(move |e| e.source != self.local)
    }
}

/// Supplies each round's items.
pub trait DataManager: Send {
    /// One item of a round (a question with what is needed to check answers to it).
    type Item: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;

    /// The items of `round`.
    fn round_data(&mut self, round: u64) -> Vec<Self::Item>;
}

/// Generates actions and learns from rewarded entries.
pub trait Trainer<I>: Send {
    /// One action (e.g. a completion).
    type Action: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// What one training step reports.
    type Report: Send + 'static;

    /// Actions for each item at `stage`, given the state so far.
    fn generate(
        &mut self,
        round: u64,
        stage: usize,
        items: &[I],
        state: &GameState<I, Self::Action>,
    ) -> Result<Vec<Vec<Self::Action>>>;

    /// Learns from the round's entries and their rewards (`rewards[e][a]` for entry `e`, action `a`).
    fn train(&mut self, state: &GameState<I, Self::Action>, rewards: &[Vec<f64>]) -> Result<Self::Report>;
}

/// Scores entries by this agent's own rules, and chooses which shared entries are worth keeping.
pub trait RewardManager<I, A>: Send {
    /// `rewards[e][a]` for every entry `e` of `state` and each of its actions `a`.
    fn rewards(&mut self, state: &GameState<I, A>) -> Vec<Vec<f64>>;

    /// Which of the swarm's entries join the game state (all, by default). It sees them before any
    /// reward is computed, so it can score them itself (e.g. drop groups with no signal).
    fn select_external(&mut self, _round: u64, _own: &[Entry<I, A>], external: Vec<Entry<I, A>>) -> Vec<Entry<I, A>> {
        external
    }
}

/// What one round produced.
#[derive(Debug)]
pub struct RoundOutcome<I, A, R> {
    /// The final state of the round.
    pub state: GameState<I, A>,
    /// The rewards the trainer learned from.
    pub rewards: Vec<Vec<f64>>,
    /// The trainer's report.
    pub report: R,
}

/// One agent's game: its data, trainer, reward rules and link to the swarm.
#[derive(Debug)]
pub struct Game<D, T, R, B> {
    /// Supplies items and selects external entries.
    pub data: D,
    /// Generates and trains.
    pub trainer: T,
    /// Scores entries.
    pub rewards: R,
    /// Shares with the swarm.
    pub comm: B,
    /// Stages per round.
    pub stages: usize,
    /// Most entries accepted from one peer per stage.
    pub max_entries_per_peer: usize,
}

impl<D, T, R, B> Game<D, T, R, B>
where
    D: DataManager,
    T: Trainer<D::Item>,
    R: RewardManager<D::Item, T::Action>,
    B: CommunicationBackend,
{
    /// Plays `round`: every stage's generate → share → select, then rewards and one training step. The
    /// one-role case of a [`RoleGame`](crate::roles::RoleGame), run by the same engine.
    pub async fn play_round(&mut self, round: u64) -> Result<RoundOutcome<D::Item, T::Action, T::Report>> {
        let managers = Managers {
            data: &mut self.data,
            trainer: &mut self.trainer,
            rewards: &mut self.rewards,
            stages: self.stages,
            max_entries_per_peer: self.max_entries_per_peer,
        };
        let mut seat = RoleSeat::new(managers);
        let mut board = Board::new(0);
        roles::play(&mut [&mut seat], &[true], &mut self.comm, &mut board, round).await?;
        seat.finish(&board, true)?;
        let learned = seat.learned.take().ok_or_else(|| Error::config("game", "the round learned nothing"))?;
        Ok(RoundOutcome { state: seat.state, rewards: learned.rewards, report: learned.report })
    }
}

/// GenRL's three managers as the one role of a game.
struct Managers<'a, D, T, R> {
    data: &'a mut D,
    trainer: &'a mut T,
    rewards: &'a mut R,
    stages: usize,
    max_entries_per_peer: usize,
}

impl<D, T, R> Role for Managers<'_, D, T, R>
where
    D: DataManager,
    T: Trainer<D::Item>,
    R: RewardManager<D::Item, T::Action>,
{
    type Item = D::Item;
    type Action = T::Action;
    type Report = T::Report;

    fn name(&self) -> &'static str {
        "game"
    }

    fn stages(&self) -> usize {
        self.stages
    }

    fn max_entries_per_peer(&self) -> usize {
        self.max_entries_per_peer
    }

    fn items(&mut self, round: u64, _board: &Board) -> Result<Vec<D::Item>> {
        Ok(self.data.round_data(round))
    }

    fn generate(
        &mut self,
        round: u64,
        stage: usize,
        items: &[D::Item],
        state: &GameState<D::Item, T::Action>,
        _board: &Board,
    ) -> Result<Vec<Vec<T::Action>>> {
        self.trainer.generate(round, stage, items, state)
    }

    fn select(
        &mut self,
        round: u64,
        own: &[Entry<D::Item, T::Action>],
        external: Vec<Entry<D::Item, T::Action>>,
        _board: &Board,
    ) -> Vec<Entry<D::Item, T::Action>> {
        self.rewards.select_external(round, own, external)
    }

    fn learn(&mut self, state: &GameState<D::Item, T::Action>, _board: &Board) -> Result<Learned<T::Report>> {
        let rewards = self.rewards.rewards(state);
        if rewards.len() != state.entries.len() {
            return Err(Error::config(
                "rewards",
                format!("{} reward lists for {} entries", rewards.len(), state.entries.len()),
            ));
        }
        let report = self.trainer.train(state, &rewards)?;
        Ok(Learned { rewards, report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceProfile;
    use crate::comm::BroadcastGather;
    use crate::swarm::{SimSwarm, run_simulation};
    use crate::world::World;
    use bytes::Bytes;
    use std::time::Duration;
    use transport::Codec;
    use transport::Transport;
    use transport::sim::LinkSpec;

    /// Items are numbers; an agent answers `item + skill`; the right answer is `2 · item`, so an agent of
    /// skill `item` would be right. Rewards: 1 for a right answer.
    struct Numbers;
    impl DataManager for Numbers {
        type Item = u64;
        fn round_data(&mut self, round: u64) -> Vec<u64> {
            vec![round, round + 1]
        }
    }
    struct Guesser {
        skill: u64,
        seen_external: usize,
    }
    impl Trainer<u64> for Guesser {
        type Action = u64;
        type Report = usize;
        fn generate(&mut self, _r: u64, _s: usize, items: &[u64], _st: &GameState<u64, u64>) -> Result<Vec<Vec<u64>>> {
            Ok(items.iter().map(|i| vec![i + self.skill, i + self.skill + 1]).collect())
        }
        fn train(&mut self, state: &GameState<u64, u64>, rewards: &[Vec<f64>]) -> Result<usize> {
            self.seen_external += state.external().count();
            Ok(rewards.iter().flatten().filter(|&&r| r > 0.0).count())
        }
    }
    struct Exact;
    impl RewardManager<u64, u64> for Exact {
        fn rewards(&mut self, state: &GameState<u64, u64>) -> Vec<Vec<f64>> {
            state
                .entries
                .iter()
                .map(|e| e.actions.iter().map(|&a| f64::from(u8::from(a == 2 * e.item))).collect())
                .collect()
        }
    }

    #[test]
    fn agents_learn_from_each_others_entries_and_drop_lies() -> Result<()> {
        run_simulation(async {
            let swarm = SimSwarm::build(&World::uniform(4, DeviceProfile::a10(), LinkSpec::mbit(5.0, 100.0)), 3)?;
            let liar = swarm.contexts()[3].peers[3];
            let results = swarm
                .run(move |ctx| async move {
                    let comm = BroadcastGather::new(
                        ctx.transport.clone(),
                        ctx.clock.clone(),
                        ctx.peers.clone(),
                        Duration::from_secs(1),
                    );
                    if ctx.transport.local_peer() == liar {
                        // A liar: claims entries from another peer, then sends garbage.
                        let mut comm = comm;
                        let fake = vec![Entry { source: ctx.peers[0], stage: 0, item: 7u64, actions: vec![14u64] }];
                        comm.all_gather(0, Codec::default().encode(&fake).map_err(transport::TransportError::from)?)
                            .await?;
                        comm.all_gather(1, Bytes::from_static(&[0xff, 0xfe])).await?;
                        return Ok((0, 0, 0));
                    }
                    let mut game = Game {
                        data: Numbers,
                        trainer: Guesser { skill: u64::from(ctx.index), seen_external: 0 },
                        rewards: Exact,
                        comm,
                        stages: 1,
                        max_entries_per_peer: 8,
                    };
                    let mut rejected = 0;
                    let mut right = 0;
                    for round in 0..2 {
                        let out = game.play_round(round).await?;
                        assert_eq!(out.state.own().count(), 2);
                        rejected += out.state.rejected;
                        right += out.report;
                    }
                    Ok((game.trainer.seen_external, rejected, right))
                })
                .await;
            for (i, r) in results.into_iter().enumerate().take(3) {
                let (seen, rejected, right) = r?;
                // Two honest peers, two entries each, two rounds.
                assert_eq!(seen, 8, "agent {i}");
                // The forged entry in round 0 and the garbage payload in round 1.
                assert_eq!(rejected, 2, "agent {i}");
                // Every agent re-scores all kept entries by the same rule: 3 right answers in round 0
                // (own and external), 4 in round 1.
                assert_eq!(right, 7, "agent {i}");
            }
            Ok(())
        })?
    }
}
