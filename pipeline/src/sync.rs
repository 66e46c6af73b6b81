//! How the replicas of a stage agree: the [`OuterSync`] plug point, the [`Collective`]s a protocol can
//! ask the runtime for, and the data-parallel baselines ([`DataParallel`], [`Independent`]).
//!
//! A protocol is sans-IO: it says *when* a worker synchronises, *with whom* and *through which
//! collective* ([`OuterSync::round`]), *what* the worker contributes ([`OuterState::contribution`]) and
//! *what it does with the group's mean* ([`OuterState::finish`]). The runtime moves the bytes (over the
//! simulated network or QUIC), enforces deadlines, and drops contributions the protocol finds
//! inadmissible ([`OuterState::admissible`]).
//!
//! An outer state works on its stage's weights as one flat f32 tensor (parameter-name order) on the
//! worker's device, and keeps its own vectors there: a GPU's outer rounds never pass through host
//! memory between simulated workers of one process.

use std::fmt::Debug;
use std::time::Duration;

use candle_core::Tensor;

use crate::collective::Summand;
use crate::error::{Error, Result};

/// How a group turns its members' contributions into their mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collective {
    /// Ring all-reduce: 2·(n−1) rounds, each sending 1/n of the vector to the next member.
    Ring,
    /// Binary-tree all-reduce: partial sums up ⌈log2 n⌉ levels to the first member, the total back down.
    Tree,
    /// The first member gathers every contribution, averages those that arrive in time and are
    /// admissible, and sends the mean back (2·(n−1) whole-vector messages, all through the root). Members
    /// that miss the deadline are left out; a member whose root goes silent carries on with its own
    /// contribution as the mean. The only collective that tolerates a missing peer.
    Gather,
}

/// One synchronisation round of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OuterRound {
    /// The replicas taking part (this worker's among them), listed in the same order by every member;
    /// the first is the root of a [`Collective::Gather`].
    pub group: Vec<usize>,
    /// How the mean is computed.
    pub collective: Collective,
    /// For [`Collective::Gather`]: how long the root waits for contributions (members wait twice as long
    /// for the mean). The other collectives need every member and fail after the run's `peer_timeout`.
    pub timeout: Duration,
}

/// How the replicas of a stage synchronise: the plug point of DDP, DiLoCo, NoLoCo and their variants.
pub trait OuterSync: Send + Sync + Debug {
    /// A short name for logs and reports.
    fn name(&self) -> String;

    /// Checks the protocol's settings against the number of replicas per stage.
    fn validate(&self, replicas: usize) -> Result<()>;

    /// If the replicas average their gradients before every inner optimizer step (data parallelism),
    /// the collective they use.
    fn gradient_collective(&self) -> Option<Collective> {
        None
    }

    /// If the replicas' groups are elastic — formed each time (every step's gradient average, or every
    /// outer round's all-reduce) among the replicas that are there (a
    /// [`quorum`](crate::collective::quorum)), so that a dead replica is dropped and a late one admitted
    /// — how long the group's leader waits for a member.
    fn elastic_wait(&self) -> Option<Duration> {
        None
    }

    /// The round replica `replica` of `replicas` takes part in after its `steps_done`-th inner step, if
    /// any. Every member of a group must return the same group for the same step.
    fn round(&self, _steps_done: u64, _replica: usize, _replicas: usize) -> Option<OuterRound> {
        None
    }

    /// A worker's outer state, from its stage's initial weights (one flat f32 tensor in parameter-name
    /// order, on the worker's device); `None` if the protocol has no outer rounds.
    fn start(&self, _initial: &Tensor) -> Result<Option<Box<dyn OuterState>>> {
        Ok(None)
    }
}

/// One worker's side of an outer protocol between rounds (outer weights, momentum…), kept as flat f32
/// tensors on the worker's device. Tensors are values: a state never changes one it was given or handed
/// out in place, so a contribution sent to a peer of the same process without a copy stays what it was.
pub trait OuterState: Send + Sync {
    /// What this worker puts into its group's mean, given its current (inner, "fast") weights `theta`.
    fn contribution(&self, theta: &Tensor) -> Result<Tensor>;

    /// Whether a peer's contribution may be averaged in, judged against this worker's own; the error
    /// says why not. The default accepts any finite vector of the right length.
    fn admissible(&self, own: &Tensor, peer: &Tensor) -> std::result::Result<(), String> {
        check_finite(own, peer)
    }

    /// Applies the group's `mean` contribution to the state and returns the weights to train on next
    /// (`theta` is the worker's current weights).
    fn finish(&mut self, theta: &Tensor, mean: &Tensor) -> Result<Tensor>;

    /// A copy of the state (checkpoints save it beside the weights).
    fn snapshot(&self) -> Box<dyn OuterState>;

    /// What a replica joining an elastic group needs of this state to take its place in the group, as
    /// flat tensors (DiLoCo's outer weights and momentum); empty for a state a joiner can start afresh.
    fn export(&self) -> Vec<Tensor> {
        Vec::new()
    }

    /// Takes the state another replica [`export`](Self::export)ed (on this state's device); the error
    /// says why it does not fit.
    fn import(&mut self, parts: Vec<Tensor>) -> std::result::Result<(), String> {
        if parts.is_empty() { Ok(()) } else { Err(format!("{} parts for a state that keeps none", parts.len())) }
    }
}

/// The leader's wait of an elastic group, `seconds` as a configuration gives it (`field` names it in the
/// error): above zero, at most an hour.
pub fn quorum_wait(field: &str, seconds: f64) -> Result<Duration> {
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(Error::config(field, format!("{seconds} is not a wait in seconds (above 0, at most 3600)")));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The check every contribution must pass: the right length and only finite values (host values or a
/// flat tensor, checked where it lies).
pub fn check_finite<S: Summand>(own: &S, peer: &S) -> std::result::Result<(), String> {
    if peer.len() != own.len() {
        return Err(format!("{} values, expected {}", peer.len(), own.len()));
    }
    match peer.first_non_finite() {
        Ok(Some((i, x))) => Err(format!("non-finite value {x} at index {i}")),
        Ok(None) => Ok(()),
        Err(e) => Err(format!("its values could not be read: {e}")),
    }
}

/// The data-parallel baseline: every step the replicas of a stage average their gradients with an
/// all-reduce, then all take the same inner optimizer step.
///
/// Elastic (`elastic: Some(wait)`), the replicas first agree each step on who is there, as torchft's
/// quorum does: the lowest live replica leads, waits up to `wait` for the others and names the group;
/// the all-reduce runs among the group, so a replica that died is left out and a late one (which joins
/// with a live replica's weights and optimizer moments) is let in between steps. With everyone there,
/// the group is every replica and the all-reduce the same as without: the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataParallel {
    /// [`Collective::Ring`] (2·(R−1) messages of 1/R of the gradients per replica) or
    /// [`Collective::Tree`] (fewer rounds, whole-gradient messages, the root's links carry the most).
    pub collective: Collective,
    /// The leader's wait for a member when the group is formed each step; `None`: every replica is
    /// needed every step.
    pub elastic: Option<Duration>,
}

impl DataParallel {
    /// DDP with a ring all-reduce.
    pub const RING: Self = Self { collective: Collective::Ring, elastic: None };
    /// DDP with a binary-tree all-reduce.
    pub const TREE: Self = Self { collective: Collective::Tree, elastic: None };
}

impl Default for DataParallel {
    fn default() -> Self {
        Self::RING
    }
}

impl OuterSync for DataParallel {
    fn name(&self) -> String {
        match self.collective {
            Collective::Ring => "ddp-ring",
            Collective::Tree => "ddp-tree",
            Collective::Gather => "ddp-gather",
        }
        .to_owned()
            + if self.elastic.is_some() { "-elastic" } else { "" }
    }

    fn validate(&self, _replicas: usize) -> Result<()> {
        if self.collective == Collective::Gather {
            return Err(Error::config(
                "sync",
                "data parallelism needs every gradient: use the ring or tree all-reduce",
            ));
        }
        if let Some(wait) = self.elastic
            && wait.is_zero()
        {
            return Err(Error::config("sync.quorum_timeout_s", "an elastic group needs a wait above zero"));
        }
        Ok(())
    }

    fn gradient_collective(&self) -> Option<Collective> {
        Some(self.collective)
    }

    fn elastic_wait(&self) -> Option<Duration> {
        self.elastic
    }
}

/// No synchronisation at all: replicas train independently (the lower bound for communication).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Independent;

impl OuterSync for Independent {
    fn name(&self) -> String {
        "none".into()
    }

    fn validate(&self, _replicas: usize) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contributions_must_be_finite_and_the_right_length() {
        let own = vec![1.0f32, 2.0];
        assert!(check_finite(&own, &vec![3.0, 4.0]).is_ok());
        assert!(check_finite(&own, &vec![3.0]).unwrap_err().contains("expected 2"));
        assert!(check_finite(&own, &vec![3.0, f32::NAN]).unwrap_err().contains("index 1"));
        assert!(check_finite(&vec![1.0], &vec![f32::INFINITY]).is_err());
        // The same judgement on a tensor, where it lies.
        let t = |v: &[f32]| Tensor::new(v, &candle_core::Device::Cpu).expect("tensor");
        assert!(check_finite(&t(&[1.0, 2.0]), &t(&[-0.0, 4.0])).is_ok());
        assert!(check_finite(&t(&[1.0, 2.0]), &t(&[3.0])).unwrap_err().contains("expected 2"));
        let err = check_finite(&t(&[1.0, 2.0, 3.0]), &t(&[3.0, 1.0, f32::NEG_INFINITY])).unwrap_err();
        assert!(err.contains("non-finite value -inf at index 2"), "{err}");
        assert!(check_finite(&t(&[1.0]), &t(&[f32::NAN])).unwrap_err().contains("index 0"));
    }

    #[test]
    fn an_elastic_wait_is_above_zero_and_at_most_an_hour() {
        assert_eq!(quorum_wait("w", 0.5).ok(), Some(Duration::from_millis(500)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 3601.0] {
            assert!(
                quorum_wait("sync.quorum_timeout_s", bad).unwrap_err().to_string().contains("sync.quorum_timeout_s")
            );
        }
    }

    #[test]
    fn data_parallel_rejects_a_lossy_collective() {
        assert!(DataParallel::RING.validate(4).is_ok());
        assert!(DataParallel { collective: Collective::Gather, elastic: None }.validate(4).is_err());
        assert_eq!(DataParallel::TREE.gradient_collective(), Some(Collective::Tree));
        assert_eq!(Independent.gradient_collective(), None);
    }
}
