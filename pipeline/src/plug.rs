//! The routing plug point: the path each micro-batch takes through the grid ([`Router`]). How replicas
//! agree is in [`crate::sync`], what happens when workers fail in [`crate::recovery`]. The default is the
//! baseline every protocol is measured against: a fixed path through one row.

use std::sync::Arc;

use crate::error::{Error, Result};

/// One hop of a micro-batch's path: `(stage, replica)`.
pub type Hop = (usize, usize);

/// Chooses the path of every micro-batch through the grid.
pub trait Router: Send + Sync + std::fmt::Debug {
    /// The hops of micro-batch `micro` of `step` whose data replica `origin` of stage 0 holds. A path
    /// starts at `(0, origin)`, ends at the last stage (which computes the loss), and visits no stage
    /// twice; in between, stages may come in any order or be skipped. Its gradient flows back along the
    /// same hops. Every worker asks for every path, so the answer must depend only on the arguments.
    fn path(&self, step: u64, micro: u32, origin: usize, stages: usize, replicas: usize) -> Vec<Hop>;

    /// The router for the steps after the workers `departed` (grid indices `stage × replicas + replica`
    /// of the `stages × replicas` grid) left the run for good: paths that visit none of them, and none for
    /// the micro-batches of a departed data replica. Every worker computes it by itself from the same
    /// membership, so it must depend on nothing else. Routers whose paths cannot leave workers out
    /// refuse, which is the default.
    fn without(&self, departed: &[usize], stages: usize, replicas: usize) -> Result<Arc<dyn Router>> {
        let _ = (stages, replicas);
        Err(Error::config("router", format!("these paths cannot leave out workers {departed:?}")))
    }
}

/// The workers that left the run as [`Router::without`] and [`in_run`] take them: grid indices,
/// increasing, each once.
pub fn departed_set(departed: &[usize]) -> Vec<usize> {
    let mut departed = departed.to_vec();
    departed.sort_unstable();
    departed.dedup();
    departed
}

/// Whether worker `(stage, replica)` of a `replicas`-wide grid is still in the run once the workers
/// `departed` ([`departed_set`]) left it.
pub fn in_run(departed: &[usize], (stage, replica): Hop, replicas: usize) -> bool {
    departed.binary_search(&(stage * replicas + replica)).is_err()
}

/// The replica of `stage` that stands in row `row` of a `replicas`-wide grid once the workers
/// `departed` ([`departed_set`]) left the run: the row's own, or if it left, the stage's first replica
/// still in the run (`row` itself if none is).
pub fn stand_in(departed: &[usize], stage: usize, row: usize, replicas: usize) -> usize {
    let live = |q: usize| in_run(departed, (stage, q), replicas);
    if live(row) { row } else { (0..replicas).find(|&q| live(q)).unwrap_or(row) }
}

/// Checks that every stage of a `stages × replicas` grid keeps a worker once `departed` left.
pub fn check_membership(departed: &[usize], stages: usize, replicas: usize) -> Result<()> {
    match (0..stages).find(|&s| (0..replicas).all(|q| departed.contains(&(s * replicas + q)))) {
        Some(s) => Err(Error::config("membership", format!("no worker of stage {s} is left in the run"))),
        None => Ok(()),
    }
}

/// The baseline router: a micro-batch stays on its replica's row, stage after stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedRouter;

impl Router for FixedRouter {
    fn path(&self, _step: u64, _micro: u32, origin: usize, stages: usize, _replicas: usize) -> Vec<Hop> {
        (0..stages).map(|s| (s, origin)).collect()
    }

    /// Rows around the workers that left: a row keeps its path, and where its worker of a stage left,
    /// another replica of that stage ([`stand_in`]) runs the row's micro-batches too.
    fn without(&self, departed: &[usize], stages: usize, replicas: usize) -> Result<Arc<dyn Router>> {
        check_membership(departed, stages, replicas)?;
        Ok(Arc::new(RowsAround { departed: departed_set(departed) }))
    }
}

/// The baseline's rows once some workers left the run for good ([`FixedRouter::without`]): each row's
/// micro-batches visit every stage in order, a departed worker's stage through the replica standing in
/// for it (which then runs two rows or more). A departed data replica's row is not drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsAround {
    /// Grid indices, increasing.
    departed: Vec<usize>,
}

impl Router for RowsAround {
    fn path(&self, _step: u64, _micro: u32, origin: usize, stages: usize, replicas: usize) -> Vec<Hop> {
        if !in_run(&self.departed, (0, origin), replicas) {
            return Vec::new();
        }
        (0..stages).map(|s| (s, stand_in(&self.departed, s, origin, replicas))).collect()
    }

    fn without(&self, departed: &[usize], stages: usize, replicas: usize) -> Result<Arc<dyn Router>> {
        FixedRouter.without(departed, stages, replicas)
    }
}

/// Checks that `path` obeys the rules of [`Router::path`].
pub fn check_path(path: &[Hop], origin: usize, stages: usize, replicas: usize) -> Result<()> {
    let bad = |why: String| Err(Error::config("router", format!("path {path:?}: {why}")));
    if path.first().is_some_and(|h| h.1 != origin) {
        return bad(format!("must start at stage 0 of replica {origin}"));
    }
    if let Some(&(s, r)) = path.iter().find(|h| h.1 >= replicas) {
        return bad(format!("({s}, {r}) is outside the {stages} x {replicas} grid"));
    }
    match stage_order_problem(path.iter().map(|h| h.0), stages) {
        Some(why) => bad(why),
        None => Ok(()),
    }
}

/// What is wrong, if anything, with visiting `order` of `stages` stages: it must start at stage 0 (the
/// embedding), end at the last (the head), stay in range and visit no stage twice. Paths through the grid
/// and dropped-stage inference both follow this rule.
pub(crate) fn stage_order_problem(order: impl IntoIterator<Item = usize>, stages: usize) -> Option<String> {
    let order: Vec<usize> = order.into_iter().collect();
    if stages == 0 {
        return Some("there are no stages".into());
    }
    if order.first() != Some(&0) {
        return Some("must start at stage 0".into());
    }
    if order.last() != Some(&(stages - 1)) {
        return Some(format!("must end at the last stage ({})", stages - 1));
    }
    let mut seen = vec![false; stages];
    for &s in &order {
        if s >= stages {
            return Some(format!("stage {s} is outside the {stages} stages"));
        }
        if std::mem::replace(&mut seen[s], true) {
            return Some(format!("visits stage {s} twice"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(check_path(&FixedRouter.path(0, 0, 1, 3, 2), 1, 3, 2).is_ok());
        assert!(check_path(&[(0, 0), (2, 1), (1, 0), (3, 0)], 0, 4, 2).is_ok(), "reordered, other replicas");
        assert!(check_path(&[(0, 0), (3, 0)], 0, 4, 1).is_ok(), "skipping is allowed");
        assert!(check_path(&[(1, 0), (3, 0)], 0, 4, 1).is_err());
        assert!(check_path(&[(0, 0), (1, 0)], 0, 4, 1).is_err());
        assert!(check_path(&[(0, 0), (1, 0), (1, 0), (3, 0)], 0, 4, 1).is_err());
        assert!(check_path(&[(0, 0), (1, 5), (3, 0)], 0, 4, 2).is_err());
    }

    #[test]
    fn rows_go_around_the_workers_that_left() -> Result<()> {
        // A 3 x 3 grid without s1r0 (worker 3) and s2r1 (worker 7), then without data replica 2 too.
        let rows = FixedRouter.without(&[7, 3], 3, 3)?;
        assert_eq!(rows.path(0, 0, 0, 3, 3), vec![(0, 0), (1, 1), (2, 0)]);
        assert_eq!(rows.path(5, 1, 1, 3, 3), vec![(0, 1), (1, 1), (2, 0)]);
        assert_eq!(rows.path(0, 0, 2, 3, 3), vec![(0, 2), (1, 2), (2, 2)]);
        let fewer = rows.without(&[2, 3, 7], 3, 3)?;
        assert!(fewer.path(0, 0, 2, 3, 3).is_empty(), "a departed data replica's row is not drawn");
        assert_eq!(fewer.path(0, 0, 0, 3, 3), rows.path(0, 0, 0, 3, 3));
        let gone = FixedRouter.without(&[3, 4, 5], 3, 3).expect_err("stage 1 is gone").to_string();
        assert!(gone.contains("no worker of stage 1"), "{gone}");
        assert_eq!(stand_in(&[3], 1, 0, 3), 1);
        assert_eq!(stand_in(&[3], 2, 0, 3), 0);
        Ok(())
    }
}
