//! Games of roles: an agent plays one or more [`Role`]s — a proposer, a solver, an evaluator — each with
//! its own stages, data, rewards and training, and what one role produces is another role's input.
//!
//! A round of a [`RoleGame`] runs every stage of every role it plays: each role takes its items (from
//! its own data or from the [`Board`], where every role's entries of recent rounds lie), generates
//! actions for them, and the agent shares all of its roles' entries with the swarm in one payload per
//! stage through the [`CommunicationBackend`] (with an [`Inbox`](crate::comm::Inbox) it never waits;
//! agents whose roles cost different times drift apart, so give it
//! [`Inbox::keeping`](crate::comm::Inbox::keeping) to take a fast peer's every payload, not only its
//! newest). What arrives is decoded per role and passes that role's [`Role::select`] — the receiver's own checks —
//! before it joins the round's state and the board. Then every played role scores its entries by its
//! own rules and learns ([`Role::learn`]). An agent also receives, checks and keeps the entries of roles
//! it does not play this round, so a solver finds the problems of the swarm's proposers on its board.
//!
//! Who plays what is a [`RoleSchedule`]: fixed per agent, or rotating by a seeded draw each round that
//! every agent works out alike from the membership. The one-role game is GenRL's
//! [`Game`](crate::game::Game): the same engine, with one role built from a data manager, a trainer and
//! a reward manager.
//!
//! Wire format: a one-role game sends its entries bare (`Vec<Entry>`, as GenRL's game does); a game of
//! several roles sends the sections of the roles it played, each a role's index and its encoded
//! entries. A payload or section that does not decode, or names a role the game does not have, is
//! counted as rejected in every role taking part in the stage and dropped.

use std::any::Any;
use std::collections::BTreeMap;

use bytes::Bytes;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use transport::{Codec, PeerId, RawBytes};

use crate::comm::CommunicationBackend;
use crate::error::{Error, Result};
use crate::game::{Entry, GameState};

/// One role of a game: where its items come from, how it acts on them, what it keeps from the swarm,
/// how it scores and learns.
pub trait Role: Send {
    /// What the role acts on (a question, a problem, a solution to judge).
    type Item: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// What it produces for one item (a completion, a program, a verdict).
    type Action: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// What one learning step reports.
    type Report: Send + 'static;

    /// The role's name, unique in its game (the board's key for its entries).
    fn name(&self) -> &'static str;

    /// Stages per round (at least one).
    fn stages(&self) -> usize {
        1
    }

    /// Most entries accepted from one peer per stage.
    fn max_entries_per_peer(&self) -> usize;

    /// The items of `round`, from the role's own data or from what other roles left on `board`.
    fn items(&mut self, round: u64, board: &Board) -> Result<Vec<Self::Item>>;

    /// Actions for each item at `stage`, given the round's state so far.
    fn generate(
        &mut self,
        round: u64,
        stage: usize,
        items: &[Self::Item],
        state: &GameState<Self::Item, Self::Action>,
        board: &Board,
    ) -> Result<Vec<Vec<Self::Action>>>;

    /// Which of the swarm's entries join the state and the board: the receiver's own checks (all, by
    /// default). Called every round, played or not.
    fn select(
        &mut self,
        _round: u64,
        _own: &[Entry<Self::Item, Self::Action>],
        external: Vec<Entry<Self::Item, Self::Action>>,
        _board: &Board,
    ) -> Vec<Entry<Self::Item, Self::Action>> {
        external
    }

    /// Scores the round's entries (`rewards[e][a]` for entry `e`, action `a`) and learns from them.
    fn learn(&mut self, state: &GameState<Self::Item, Self::Action>, board: &Board) -> Result<Learned<Self::Report>>;
}

/// What [`Role::learn`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned<R> {
    /// `rewards[e][a]` for every entry `e` of the state and each of its actions `a`.
    pub rewards: Vec<Vec<f64>>,
    /// The step's report.
    pub report: R,
}

/// Every role's entries of the last rounds, own and kept from the swarm: where one role finds another's
/// output. Rounds older than the board's memory are forgotten.
#[derive(Default)]
pub struct Board {
    memory: u64,
    round: u64,
    shelves: BTreeMap<&'static str, Box<dyn Shelf>>,
}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board").field("memory", &self.memory).field("round", &self.round).finish_non_exhaustive()
    }
}

/// One role's entries on the board, by the round they were made or kept in.
trait Shelf: Send {
    fn forget_before(&mut self, round: u64);
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<I: Send + 'static, A: Send + 'static> Shelf for Vec<(u64, Entry<I, A>)> {
    fn forget_before(&mut self, round: u64) {
        self.retain(|(r, _)| *r >= round);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl Board {
    /// A board that keeps the entries of the current round and the `memory` rounds before it.
    pub fn new(memory: u64) -> Self {
        Self { memory, round: 0, shelves: BTreeMap::new() }
    }

    /// The round being played.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// `role`'s entries with the round each was made or kept in, oldest first; none if the role has left
    /// nothing. An error if the role's entries are of other types than asked for.
    pub fn entries<I: 'static, A: 'static>(&self, role: &str) -> Result<Vec<(u64, &Entry<I, A>)>> {
        let Some(shelf) = self.shelves.get(role) else { return Ok(Vec::new()) };
        let shelf = shelf.as_any().downcast_ref::<Vec<(u64, Entry<I, A>)>>().ok_or_else(|| {
            Error::config(
                format!("board.{role}"),
                format!("its entries are not of ({}, {})", std::any::type_name::<I>(), std::any::type_name::<A>()),
            )
        })?;
        Ok(shelf.iter().map(|(r, e)| (*r, e)).collect())
    }

    fn begin(&mut self, round: u64) {
        self.round = round;
        let before = round.saturating_sub(self.memory);
        for shelf in self.shelves.values_mut() {
            shelf.forget_before(before);
        }
    }

    fn put<I: Send + 'static, A: Send + 'static>(&mut self, role: &'static str, entries: &[Entry<I, A>])
    where
        Entry<I, A>: Clone,
    {
        let round = self.round;
        let shelf = self.shelves.entry(role).or_insert_with(|| Box::new(Vec::<(u64, Entry<I, A>)>::new()));
        // A role's name is unique in its game, so its shelf always holds its own types.
        if let Some(shelf) = shelf.as_any_mut().downcast_mut::<Vec<(u64, Entry<I, A>)>>() {
            shelf.extend(entries.iter().cloned().map(|e| (round, e)));
        }
    }
}

/// Who plays which role, per round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleSchedule {
    /// Every agent plays every role, every round.
    All,
    /// Agent `i` plays the roles `fixed[i % fixed.len()]` (indices into the game's roles), every round.
    Fixed(Vec<Vec<usize>>),
    /// Each round the agents are shuffled by a draw from `seed` and the round, and the first `counts[0]`
    /// play role 0, the next `counts[1]` role 1, and so on; the rest sit the round out. Every agent
    /// works out the same assignment from the membership alone.
    Rotate {
        /// Seeds the draws.
        seed: u64,
        /// Agents per role each round, by role index.
        counts: Vec<usize>,
    },
}

impl RoleSchedule {
    /// Checks the schedule against a game of `roles` roles and `agents` agents; the error names the field.
    pub fn validate(&self, roles: usize, agents: usize) -> Result<()> {
        match self {
            Self::All => Ok(()),
            Self::Fixed(fixed) => {
                if fixed.is_empty() {
                    return Err(Error::config("roles.fixed", "no agent's roles are given"));
                }
                match fixed.iter().flatten().find(|&&r| r >= roles) {
                    Some(r) => Err(Error::config("roles.fixed", format!("role {r} does not exist: there are {roles}"))),
                    None => Ok(()),
                }
            }
            Self::Rotate { counts, .. } => {
                if counts.len() != roles {
                    return Err(Error::config(
                        "roles.rotate.counts",
                        format!("{} counts for {roles} roles", counts.len()),
                    ));
                }
                let total: usize = counts.iter().sum();
                if total > agents {
                    return Err(Error::config(
                        "roles.rotate.counts",
                        format!("{total} seats per round for {agents} agents"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Whether agent `agent` of `agents` plays each of `roles` roles in `round`.
    pub fn plays(&self, agent: usize, agents: usize, roles: usize, round: u64) -> Vec<bool> {
        match self {
            Self::All => vec![true; roles],
            Self::Fixed(fixed) => {
                let mine = fixed.get(agent % fixed.len().max(1)).map(Vec::as_slice).unwrap_or(&[]);
                (0..roles).map(|r| mine.contains(&r)).collect()
            }
            Self::Rotate { seed, counts } => {
                let mut order: Vec<usize> = (0..agents).collect();
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                order.shuffle(&mut rng);
                let place = order.iter().position(|&a| a == agent);
                let mut out = vec![false; roles];
                let mut start = 0;
                for (r, &n) in counts.iter().enumerate().take(roles) {
                    out[r] = place.is_some_and(|p| p >= start && p < start + n);
                    start += n;
                }
                out
            }
        }
    }
}

/// What one role did in one round.
pub struct RoleRound {
    /// The role's name.
    pub role: &'static str,
    /// Whether this agent played it (generated and learned) this round.
    pub played: bool,
    /// Own entries made.
    pub own: usize,
    /// Entries kept from the swarm.
    pub kept: usize,
    /// Payloads or entries dropped as malformed, foreign or over the per-peer cap.
    pub rejected: usize,
    /// `rewards[e][a]` the role learned from (empty when not played).
    pub rewards: Vec<Vec<f64>>,
    /// Mean reward over the own entries' actions (0 when not played or there are none).
    pub own_reward: f64,
    report: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for RoleRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleRound")
            .field("role", &self.role)
            .field("played", &self.played)
            .field("own", &self.own)
            .field("kept", &self.kept)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl RoleRound {
    /// The role's report, when it was played and its report is a `R`.
    pub fn report<R: 'static>(&self) -> Option<&R> {
        self.report.as_ref().and_then(|r| r.downcast_ref())
    }
}

/// A game of several roles, played by one agent.
pub struct RoleGame<B> {
    seats: Vec<Box<dyn AnySeat>>,
    comm: B,
    schedule: RoleSchedule,
    agent: usize,
    agents: usize,
    board: Board,
}

impl<B> std::fmt::Debug for RoleGame<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<_> = self.seats.iter().map(|s| s.name()).collect();
        f.debug_struct("RoleGame")
            .field("roles", &roles)
            .field("schedule", &self.schedule)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl<B: CommunicationBackend> RoleGame<B> {
    /// Agent `agent` of `agents`, sharing through `comm`, playing by `schedule`, its board remembering
    /// `memory` rounds back. Add the roles with [`RoleGame::with_role`], in the same order on every agent.
    pub fn new(comm: B, schedule: RoleSchedule, agent: usize, agents: usize, memory: u64) -> Self {
        Self { seats: Vec::new(), comm, schedule, agent, agents, board: Board::new(memory) }
    }

    /// Adds `role` (its index is the number of roles added before it).
    pub fn with_role<R: Role + 'static>(mut self, role: R) -> Self {
        self.seats.push(Box::new(RoleSeat::new(role)));
        self
    }

    /// The roles' names, by index.
    pub fn roles(&self) -> Vec<&'static str> {
        self.seats.iter().map(|s| s.name()).collect()
    }

    /// Role `index`, when it is a `R`.
    pub fn role<R: Role + 'static>(&self, index: usize) -> Option<&R> {
        self.seats.get(index).and_then(|s| s.as_any().downcast_ref::<RoleSeat<R>>()).map(|s| &s.role)
    }

    /// The board (every role's entries of the last rounds).
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Which roles this agent plays in `round`.
    pub fn plays(&self, round: u64) -> Vec<bool> {
        self.schedule.plays(self.agent, self.agents, self.seats.len(), round)
    }

    /// Plays `round`: every stage's generate → share → select for the roles played, then each played
    /// role's rewards and learning step. Returns what each role did, by index.
    pub async fn play_round(&mut self, round: u64) -> Result<Vec<RoleRound>> {
        if self.seats.is_empty() {
            return Err(Error::config("roles", "a game needs at least one role"));
        }
        let mut names: Vec<_> = self.roles();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::config("roles", format!("two roles are called {:?}", w[0])));
        }
        self.schedule.validate(self.seats.len(), self.agents)?;
        let plays = self.plays(round);
        let mut seats: Vec<&mut dyn Seat> = self.seats.iter_mut().map(|s| s.seat()).collect();
        play(&mut seats, &plays, &mut self.comm, &mut self.board, round).await?;
        let mut out = Vec::with_capacity(plays.len());
        for (seat, played) in self.seats.iter_mut().zip(plays) {
            let mut this = seat.seat().finish(&self.board, played)?;
            this.report = seat.take_report();
            out.push(this);
        }
        Ok(out)
    }
}

/// A role as the engine drives it, its types erased.
pub(crate) trait Seat: Send {
    fn name(&self) -> &'static str;
    fn stages(&self) -> usize;
    /// Starts `round` with an empty state.
    fn begin(&mut self, round: u64, local: PeerId);
    /// Generates this stage's own entries (taking the round's items at stage 0), puts them on the
    /// board, and returns them encoded.
    fn generate(&mut self, stage: usize, board: &mut Board, codec: &Codec) -> Result<Bytes>;
    /// Takes a peer's encoded entries for this stage (kept aside until [`Seat::settle`]).
    fn receive(&mut self, peer: PeerId, stage: usize, bytes: &Bytes, codec: &Codec);
    /// Counts payload-level rejections and the peers that did not share in time.
    fn note(&mut self, rejected: usize, missing: &[PeerId]);
    /// Selects the stage's external entries and adds them, with the own ones, to the state and board.
    fn settle(&mut self, stage: usize, board: &mut Board);
    /// Learns, when played (keeping what it learned); reports the round, without the report.
    fn finish(&mut self, board: &Board, played: bool) -> Result<RoleRound>;
}

/// A seat whose role owns its data: it can be looked up by type and hand out its report.
trait AnySeat: Seat {
    fn seat(&mut self) -> &mut dyn Seat;
    fn as_any(&self) -> &dyn Any;
    fn take_report(&mut self) -> Option<Box<dyn Any + Send>>;
}

impl<R: Role + 'static> AnySeat for RoleSeat<R> {
    fn seat(&mut self) -> &mut dyn Seat {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn take_report(&mut self) -> Option<Box<dyn Any + Send>> {
        self.learned.take().map(|l| Box::new(l.report) as Box<dyn Any + Send>)
    }
}

/// A typed role with its round in progress.
pub(crate) struct RoleSeat<R: Role> {
    pub(crate) role: R,
    pub(crate) state: GameState<R::Item, R::Action>,
    items: Vec<R::Item>,
    own: Vec<Entry<R::Item, R::Action>>,
    external: Vec<Entry<R::Item, R::Action>>,
    /// The last played round's rewards and report.
    pub(crate) learned: Option<Learned<R::Report>>,
}

impl<R: Role> RoleSeat<R> {
    pub(crate) fn new(role: R) -> Self {
        Self {
            role,
            state: GameState {
                round: 0,
                local: PeerId::simulated(0),
                entries: Vec::new(),
                rejected: 0,
                missing: Vec::new(),
            },
            items: Vec::new(),
            own: Vec::new(),
            external: Vec::new(),
            learned: None,
        }
    }
}

impl<R: Role> Seat for RoleSeat<R> {
    fn name(&self) -> &'static str {
        self.role.name()
    }

    fn stages(&self) -> usize {
        self.role.stages()
    }

    fn begin(&mut self, round: u64, local: PeerId) {
        self.state = GameState { round, local, entries: Vec::new(), rejected: 0, missing: Vec::new() };
        self.items.clear();
        self.own.clear();
        self.external.clear();
        self.learned = None;
    }

    fn generate(&mut self, stage: usize, board: &mut Board, codec: &Codec) -> Result<Bytes> {
        let round = self.state.round;
        if stage == 0 {
            self.items = self.role.items(round, board)?;
        }
        let actions = self.role.generate(round, stage, &self.items, &self.state, board)?;
        if actions.len() != self.items.len() {
            return Err(Error::config(
                format!("{}.generate", self.role.name()),
                format!("{} action lists for {} items", actions.len(), self.items.len()),
            ));
        }
        let local = self.state.local;
        self.own = self
            .items
            .iter()
            .cloned()
            .zip(actions)
            .map(|(item, actions)| Entry { source: local, stage, item, actions })
            .collect();
        board.put(self.role.name(), &self.own);
        Ok(codec.encode(&self.own).map_err(transport::TransportError::from)?)
    }

    fn receive(&mut self, peer: PeerId, stage: usize, bytes: &Bytes, codec: &Codec) {
        let (kept, dropped) = decode_entries(codec, peer, stage, bytes, self.role.max_entries_per_peer());
        self.state.rejected += dropped;
        self.external.extend(kept);
    }

    fn note(&mut self, rejected: usize, missing: &[PeerId]) {
        self.state.rejected += rejected;
        self.state.missing.extend_from_slice(missing);
    }

    fn settle(&mut self, _stage: usize, board: &mut Board) {
        let external = std::mem::take(&mut self.external);
        let kept = self.role.select(self.state.round, &self.own, external, board);
        board.put(self.role.name(), &kept);
        self.state.entries.append(&mut self.own);
        self.state.entries.extend(kept);
    }

    fn finish(&mut self, board: &Board, played: bool) -> Result<RoleRound> {
        let own = self.state.own().count();
        let kept = self.state.entries.len() - own;
        let mut out = RoleRound {
            role: self.role.name(),
            played,
            own,
            kept,
            rejected: self.state.rejected,
            rewards: Vec::new(),
            own_reward: 0.0,
            report: None,
        };
        if !played {
            return Ok(out);
        }
        let learned = self.role.learn(&self.state, board)?;
        if learned.rewards.len() != self.state.entries.len() {
            return Err(Error::config(
                format!("{}.rewards", self.role.name()),
                format!("{} reward lists for {} entries", learned.rewards.len(), self.state.entries.len()),
            ));
        }
        let local = self.state.local;
        let own: Vec<f64> = self
            .state
            .entries
            .iter()
            .zip(&learned.rewards)
            .filter(|(e, _)| e.source == local)
            .flat_map(|(_, r)| r.iter().copied())
            .collect();
        out.own_reward = if own.is_empty() { 0.0 } else { own.iter().sum::<f64>() / own.len() as f64 };
        out.rewards = learned.rewards.clone();
        self.learned = Some(learned);
        Ok(out)
    }
}

/// One role's entries in a payload of a game of several roles.
#[derive(Serialize, Deserialize)]
struct Section {
    role: u32,
    entries: RawBytes,
}

/// The engine: one round of `seats` (those with `plays[i]` generate), shared through `comm`.
pub(crate) async fn play<B: CommunicationBackend>(
    seats: &mut [&mut dyn Seat],
    plays: &[bool],
    comm: &mut B,
    board: &mut Board,
    round: u64,
) -> Result<()> {
    let stages = seats.iter().map(|s| s.stages()).max().unwrap_or(0);
    if stages == 0 || seats.iter().any(|s| s.stages() == 0) {
        return Err(Error::config("game.stages", "a round needs at least one stage"));
    }
    let local = comm.local_peer();
    let codec = Codec::default();
    board.begin(round);
    for seat in seats.iter_mut() {
        seat.begin(round, local);
    }
    let bare = seats.len() == 1;
    for stage in 0..stages {
        let mut sections = Vec::new();
        for (i, seat) in seats.iter_mut().enumerate() {
            if plays[i] && stage < seat.stages() {
                sections.push(Section { role: i as u32, entries: RawBytes(seat.generate(stage, board, &codec)?) });
            }
        }
        let payload = match (bare, sections.pop()) {
            (true, Some(only)) => only.entries.0,
            (true, None) => codec.encode(&Vec::<()>::new()).map_err(transport::TransportError::from)?,
            (false, last) => {
                sections.extend(last);
                codec.encode(&sections).map_err(transport::TransportError::from)?
            }
        };
        let gathered = comm.all_gather(round * stages as u64 + stage as u64, payload).await?;
        let mut rejected = gathered.rejected;
        let older = gathered.earlier.iter().map(|(peer, bytes)| (peer, bytes));
        for (peer, bytes) in older.chain(&gathered.payloads) {
            if *peer == local {
                continue;
            }
            if bare {
                seats[0].receive(*peer, stage, bytes, &codec);
                continue;
            }
            match codec.decode::<Vec<Section>>(bytes) {
                Ok(sections) => {
                    for s in sections {
                        match seats.get_mut(s.role as usize) {
                            Some(seat) if stage < seat.stages() => seat.receive(*peer, stage, &s.entries.0, &codec),
                            _ => rejected += 1,
                        }
                    }
                }
                Err(_) => {
                    tracing::warn!(peer = %peer.short(), "undecodable game payload dropped");
                    rejected += 1;
                }
            }
        }
        for seat in seats.iter_mut().filter(|s| stage < s.stages()) {
            seat.note(rejected, &gathered.missing);
            seat.settle(stage, board);
        }
    }
    Ok(())
}

/// A peer's payload as entries: only those that decode, claim that peer as their source and this stage,
/// up to `cap`. Returns the kept entries and how many were dropped.
pub(crate) fn decode_entries<I: DeserializeOwned, A: DeserializeOwned>(
    codec: &Codec,
    peer: PeerId,
    stage: usize,
    bytes: &Bytes,
    cap: usize,
) -> (Vec<Entry<I, A>>, usize) {
    let Ok(entries) = codec.decode::<Vec<Entry<I, A>>>(bytes) else {
        tracing::warn!(peer = %peer.short(), "undecodable game payload dropped");
        return (Vec::new(), 1);
    };
    let total = entries.len();
    let kept: Vec<_> = entries.into_iter().filter(|e| e.source == peer && e.stage == stage).take(cap).collect();
    let dropped = total - kept.len();
    if dropped > 0 {
        tracing::warn!(peer = %peer.short(), dropped, "game entries dropped (foreign source, wrong stage or over the cap)");
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::Inbox;
    use crate::swarm::{SimSwarm, run_simulation};
    use crate::world::World;
    use crate::{Clock, DeviceProfile};
    use std::time::Duration;
    use transport::Transport;
    use transport::sim::LinkSpec;

    /// Proposes one number a round: `round · 10 + agent`.
    struct Asker {
        agent: u64,
        /// Checked answers to its own numbers seen so far, from the checkers' verdicts.
        confirmed: usize,
    }
    impl Role for Asker {
        type Item = u64;
        type Action = u64;
        type Report = usize;
        fn name(&self) -> &'static str {
            "asker"
        }
        fn max_entries_per_peer(&self) -> usize {
            4
        }
        fn items(&mut self, round: u64, _board: &Board) -> Result<Vec<u64>> {
            Ok(vec![round])
        }
        fn generate(
            &mut self,
            round: u64,
            _: usize,
            _: &[u64],
            _: &GameState<u64, u64>,
            _: &Board,
        ) -> Result<Vec<Vec<u64>>> {
            Ok(vec![vec![round * 10 + self.agent]])
        }
        fn learn(&mut self, state: &GameState<u64, u64>, board: &Board) -> Result<Learned<usize>> {
            let mine: Vec<u64> = board
                .entries::<u64, u64>("asker")?
                .into_iter()
                .filter(|(_, e)| e.source == state.local)
                .flat_map(|(_, e)| e.actions.clone())
                .collect();
            self.confirmed = board
                .entries::<(u64, u64), bool>("checker")?
                .into_iter()
                .filter(|(_, e)| mine.contains(&e.item.0) && e.actions == [true])
                .count();
            Ok(Learned {
                rewards: state.entries.iter().map(|e| vec![0.0; e.actions.len()]).collect(),
                report: self.confirmed,
            })
        }
    }

    /// Answers every number on the board not answered before with its double.
    struct Answerer {
        answered: std::collections::BTreeSet<u64>,
    }
    impl Role for Answerer {
        type Item = u64;
        type Action = u64;
        type Report = usize;
        fn name(&self) -> &'static str {
            "answerer"
        }
        fn max_entries_per_peer(&self) -> usize {
            64
        }
        fn items(&mut self, _round: u64, board: &Board) -> Result<Vec<u64>> {
            let fresh: Vec<u64> = board
                .entries::<u64, u64>("asker")?
                .into_iter()
                .flat_map(|(_, e)| e.actions.clone())
                .filter(|n| !self.answered.contains(n))
                .collect();
            self.answered.extend(&fresh);
            Ok(fresh)
        }
        fn generate(
            &mut self,
            _: u64,
            _: usize,
            items: &[u64],
            _: &GameState<u64, u64>,
            _: &Board,
        ) -> Result<Vec<Vec<u64>>> {
            Ok(items.iter().map(|n| vec![2 * n]).collect())
        }
        fn learn(&mut self, state: &GameState<u64, u64>, _board: &Board) -> Result<Learned<usize>> {
            let rewards: Vec<Vec<f64>> = state
                .entries
                .iter()
                .map(|e| e.actions.iter().map(|&a| f64::from(u8::from(a == 2 * e.item))).collect())
                .collect();
            Ok(Learned { report: state.entries.len(), rewards })
        }
    }

    /// Checks answers on the board; drops a shared verdict that does not hold.
    struct Checker {
        checked: std::collections::BTreeSet<(u64, u64)>,
        dropped: usize,
    }
    impl Role for Checker {
        type Item = (u64, u64);
        type Action = bool;
        type Report = usize;
        fn name(&self) -> &'static str {
            "checker"
        }
        fn max_entries_per_peer(&self) -> usize {
            64
        }
        fn items(&mut self, _round: u64, board: &Board) -> Result<Vec<(u64, u64)>> {
            let fresh: Vec<(u64, u64)> = board
                .entries::<u64, u64>("answerer")?
                .into_iter()
                .flat_map(|(_, e)| e.actions.iter().map(|&a| (e.item, a)).collect::<Vec<_>>())
                .filter(|p| !self.checked.contains(p))
                .collect();
            self.checked.extend(&fresh);
            Ok(fresh)
        }
        fn generate(
            &mut self,
            _: u64,
            _: usize,
            items: &[(u64, u64)],
            _: &GameState<(u64, u64), bool>,
            _: &Board,
        ) -> Result<Vec<Vec<bool>>> {
            Ok(items.iter().map(|&(n, a)| vec![a == 2 * n]).collect())
        }
        fn select(
            &mut self,
            _: u64,
            _: &[Entry<(u64, u64), bool>],
            external: Vec<Entry<(u64, u64), bool>>,
            _: &Board,
        ) -> Vec<Entry<(u64, u64), bool>> {
            let (kept, lies): (Vec<_>, Vec<_>) =
                external.into_iter().partition(|e| e.actions.iter().all(|&v| v == (e.item.1 == 2 * e.item.0)));
            self.dropped += lies.len();
            kept
        }
        fn learn(&mut self, state: &GameState<(u64, u64), bool>, _board: &Board) -> Result<Learned<usize>> {
            Ok(Learned {
                rewards: state.entries.iter().map(|e| vec![1.0; e.actions.len()]).collect(),
                report: self.dropped,
            })
        }
    }

    fn game<T: transport::Transport, C: Clock>(
        ctx: &crate::AgentCtx<T, C>,
        schedule: RoleSchedule,
        three: bool,
    ) -> RoleGame<Inbox<T, C>> {
        let comm = Inbox::new(ctx.transport.clone(), ctx.clock.clone(), ctx.peers.clone());
        let g = RoleGame::new(comm, schedule, ctx.index as usize, ctx.peers.len(), 10)
            .with_role(Asker { agent: u64::from(ctx.index), confirmed: 0 })
            .with_role(Answerer { answered: Default::default() });
        if three { g.with_role(Checker { checked: Default::default(), dropped: 0 }) } else { g }
    }

    #[test]
    fn a_two_role_game_passes_one_roles_output_to_the_other() -> Result<()> {
        // Agents 0 and 1 ask, 2 and 3 answer: the answerers take their questions from the board.
        run_simulation(async {
            let swarm = SimSwarm::build(&World::uniform(4, DeviceProfile::a10(), LinkSpec::mbit(5.0, 100.0)), 1)?;
            let schedule = RoleSchedule::Fixed(vec![vec![0], vec![0], vec![1], vec![1]]);
            let results = swarm
                .run(move |ctx| {
                    let schedule = schedule.clone();
                    async move {
                        let mut g = game(&ctx, schedule, false);
                        let mut answered = Vec::new();
                        for round in 0..4 {
                            let out = g.play_round(round).await?;
                            assert_eq!(out.len(), 2);
                            assert_eq!(out[0].played, ctx.index < 2, "agent {} round {round}", ctx.index);
                            assert_eq!(out[1].played, ctx.index >= 2);
                            answered.push(out[1].own);
                            if out[1].played {
                                assert!(out[1].rewards.iter().flatten().all(|&r| r == 1.0));
                                assert_eq!(out[1].own_reward, if out[1].own > 0 { 1.0 } else { 0.0 });
                                assert_eq!(out[1].report::<usize>(), Some(&out[1].rewards.len()));
                            }
                            ctx.clock.sleep(Duration::from_millis(100)).await;
                        }
                        Ok(answered)
                    }
                })
                .await;
            let answered: Vec<Vec<usize>> = results.into_iter().collect::<Result<_>>()?;
            // An inbox never waits: round r's questions arrive during round r and are taken at the
            // exchange of round r + 1, after that round's answers; they are answered in round r + 2.
            assert_eq!(answered[2], vec![0, 0, 2, 2]);
            assert_eq!(answered[3], vec![0, 0, 2, 2]);
            assert_eq!(answered[0], vec![0; 4], "an asker does not answer");
            Ok(())
        })?
    }

    #[test]
    fn a_three_role_game_rotates_roles_and_drops_lies() -> Result<()> {
        let agents = 6;
        let schedule = RoleSchedule::Rotate { seed: 7, counts: vec![2, 2, 2] };
        schedule.validate(3, agents)?;
        // The rotation: every round, each role has exactly its count, and assignments change over rounds.
        let mut seen = std::collections::BTreeSet::new();
        for round in 0..8 {
            let plays: Vec<Vec<bool>> = (0..agents).map(|a| schedule.plays(a, agents, 3, round)).collect();
            for role in 0..3 {
                assert_eq!(plays.iter().filter(|p| p[role]).count(), 2, "round {round} role {role}");
            }
            assert!(plays.iter().all(|p| p.iter().filter(|&&x| x).count() == 1));
            seen.insert(plays);
        }
        assert!(seen.len() > 4, "roles rotate");
        run_simulation(async {
            let swarm = SimSwarm::build(&World::uniform(agents, DeviceProfile::a10(), LinkSpec::mbit(5.0, 100.0)), 2)?;
            let liar = swarm.contexts()[5].peers[5];
            let results = swarm
                .run(move |ctx| {
                    let schedule = schedule.clone();
                    async move {
                        if ctx.transport.local_peer() == liar {
                            // A lying checker: claims wrong answers right; and a payload that is garbage.
                            let mut comm = Inbox::new(ctx.transport.clone(), ctx.clock.clone(), ctx.peers.clone());
                            let codec = Codec::default();
                            for round in 0..10u64 {
                                let lie = vec![Entry {
                                    source: liar,
                                    stage: 0,
                                    item: (round, 2 * round + 1),
                                    actions: vec![true],
                                }];
                                let sections = vec![Section {
                                    role: 2,
                                    entries: RawBytes(codec.encode(&lie).map_err(transport::TransportError::from)?),
                                }];
                                let bytes = if round == 3 {
                                    Bytes::from_static(&[0xff; 3])
                                } else {
                                    codec.encode(&sections).map_err(transport::TransportError::from)?
                                };
                                comm.all_gather(round, bytes).await?;
                                ctx.clock.sleep(Duration::from_millis(100)).await;
                            }
                            return Ok((0, 0, 0));
                        }
                        let mut g = game(&ctx, schedule, true);
                        let mut rejected = 0;
                        let mut confirmed = 0;
                        for round in 0..10 {
                            let out = g.play_round(round).await?;
                            let plays = g.plays(round);
                            for (o, p) in out.iter().zip(&plays) {
                                assert_eq!(o.played, *p);
                            }
                            rejected = rejected.max(out[2].rejected);
                            if let Some(&c) = out[0].report::<usize>() {
                                confirmed = confirmed.max(c);
                            }
                            ctx.clock.sleep(Duration::from_millis(100)).await;
                        }
                        let dropped = g.role::<Checker>(2).map_or(0, |c| c.dropped);
                        Ok((dropped, rejected, confirmed))
                    }
                })
                .await;
            let results: Vec<(usize, usize, usize)> = results.into_iter().collect::<Result<_>>()?;
            for (i, &(dropped, rejected, _)) in results.iter().enumerate().take(5) {
                // The liar's verdicts of rounds 0 to 8 but 3 are taken by the others' exchanges of the
                // rounds after (round 3's is garbage, round 9's comes after the last exchange).
                assert_eq!(dropped, 8, "agent {i}");
                assert!(rejected >= 1, "agent {i}: the garbage payload counts as rejected");
            }
            // Questions were answered and checked across the swarm (ask, answer, check, confirm: each a
            // hop of two rounds), and askers saw their own confirmed.
            assert!(results.iter().take(5).any(|r| r.2 > 0), "{results:?}");
            Ok(())
        })?
    }

    #[test]
    fn bad_schedules_and_boards_name_the_problem() {
        let err = |r: Result<()>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(RoleSchedule::Fixed(vec![vec![0, 3]]).validate(2, 4)).contains("role 3"));
        assert!(err(RoleSchedule::Fixed(vec![]).validate(2, 4)).contains("roles.fixed"));
        assert!(err(RoleSchedule::Rotate { seed: 0, counts: vec![3, 2] }.validate(2, 4)).contains("5 seats"));
        assert!(err(RoleSchedule::Rotate { seed: 0, counts: vec![1] }.validate(2, 4)).contains("1 counts"));
        let mut board = Board::new(1);
        board.put("asker", &[Entry { source: PeerId::simulated(0), stage: 0, item: 1u64, actions: vec![2u64] }]);
        assert_eq!(board.entries::<u64, u64>("asker").map(|v| v.len()).ok(), Some(1));
        assert!(board.entries::<u64, bool>("asker").is_err(), "wrong types are an error");
        assert_eq!(board.entries::<u64, u64>("nobody").map(|v| v.len()).ok(), Some(0));
        board.begin(1);
        assert_eq!(board.entries::<u64, u64>("asker").map(|v| v.len()).ok(), Some(1), "remembered one round");
        board.begin(2);
        assert_eq!(board.entries::<u64, u64>("asker").map(|v| v.len()).ok(), Some(0), "then forgotten");
    }
}
