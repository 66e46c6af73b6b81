//! Whole disputes over the simulated network: honest trainers never dispute on repops, and against every
//! kind of cheat the honest side wins, with the dispute narrowed to the step — and the operator — the
//! cheat corrupted.

use std::sync::Arc;

use proptest::prelude::*;
use verde::net::SettleConfig;
use verde::{
    Behaviour, Conduct, Execution, Fault, Outcome, Party, Program, Rules, Settlement, Structure, execute, settle,
};

const STEPS: u64 = 6;

fn rules(program: &Program, structure: &Arc<Structure>, initial: [u8; 32]) -> Rules {
    Rules {
        initial,
        steps: program.steps,
        structure: structure.clone(),
        deadline: std::time::Duration::from_secs(30),
        level: repops::simd::current(),
    }
}

struct Fixture {
    program: Program,
    structure: Arc<Structure>,
    honest: Arc<Execution>,
}

fn fixture() -> Fixture {
    let program = Program::tiny(STEPS);
    let structure = Arc::new(Structure::of(&program).expect("structure"));
    let honest = Arc::new(execute(&program, Behaviour::Honest).expect("run"));
    Fixture { program, structure, honest }
}

impl Fixture {
    fn settle(&self, trainers: Vec<(Arc<Execution>, Conduct)>) -> Settlement {
        let rules = rules(&self.program, &self.structure, self.honest.hashes[0]);
        settle(&rules, trainers, &SettleConfig::default()).expect("settle")
    }

    fn cheat(&self, behaviour: Behaviour) -> Arc<Execution> {
        Arc::new(execute(&self.program, behaviour).expect("run"))
    }

    /// Honest trainer against a cheat, the cheat taking `side` in the dispute.
    fn duel(&self, cheat: &Arc<Execution>, conduct: Conduct, cheat_first: bool) -> Settlement {
        let honest = (self.honest.clone(), Conduct::Faithful);
        let cheat = (cheat.clone(), conduct);
        self.settle(if cheat_first { vec![cheat, honest] } else { vec![honest, cheat] })
    }
}

/// Asserts the honest side won the one dispute of a duel and returns where it was narrowed to.
fn honest_won(s: &Settlement, cheat_first: bool) -> (Option<u64>, Option<u64>, Fault) {
    assert_eq!(s.disputes.len(), 1, "{:?}", s.disputes);
    let d = &s.disputes[0];
    let honest_party = if cheat_first { Party::Challenger } else { Party::Trainer };
    let Outcome::Won { winner, fault } = &d.outcome else { panic!("no winner: {:?}", d.outcome) };
    assert_eq!(*winner, honest_party, "{:?}", d.outcome);
    let honest_index = usize::from(cheat_first);
    assert!(s.standing[honest_index] && !s.standing[1 - honest_index]);
    assert!(
        s.ledger.balance(&format!("trainer{honest_index}")) > s.ledger.balance(&format!("trainer{}", 1 - honest_index))
    );
    (d.summary.step, d.summary.record, fault.clone())
}

#[test]
fn honest_trainers_agree_and_every_cheat_loses_where_it_cheated() {
    let f = fixture();
    let twin = f.cheat(Behaviour::Honest);
    let s = f.settle(vec![(f.honest.clone(), Conduct::Faithful), (twin, Conduct::Faithful)]);
    assert!(s.disputes.is_empty() && s.standing.iter().all(|&b| b), "two honest trainers: one claim");
    assert_eq!(s.accepted, f.honest.hashes.last().copied());

    let state_record = f.structure.step(3).state_index();
    let cases = [
        (Behaviour::PerturbWeight { step: 3, delta: 1e-3 }, 3, state_record),
        (Behaviour::PerturbOp { step: 3, op: 17, delta: 0.5 }, 3, 17),
        (Behaviour::Lazy { from: 4 }, 4, f.structure.step(4).state_index()),
        (Behaviour::LieInCommitment { step: STEPS }, STEPS, f.structure.step(STEPS).state_index()),
    ];
    for (behaviour, step, record) in cases {
        let cheat = f.cheat(behaviour);
        for cheat_first in [false, true] {
            let s = f.duel(&cheat, Conduct::Faithful, cheat_first);
            let (at_step, at_record, fault) = honest_won(&s, cheat_first);
            assert_eq!((at_step, at_record), (Some(step), Some(record)), "{behaviour:?}: {fault}");
            assert!(matches!(fault, Fault::WrongClaim(_)), "{behaviour:?}: {fault}");
        }
    }
}

/// Cheats outside the operators themselves — a forged learning rate (an attribute), a forged batch (data
/// made outside the tape), a forged layout (a tensor mislaid between two operators) — are found at the
/// first record they change and lose on what the public program says that record must be.
#[test]
fn forged_attributes_batches_and_layouts_lose() {
    let f = fixture();
    let shape = f.structure.step(3);
    let first_adam = shape.ops.iter().position(|o| o.kind() == "adam_param").expect("an AdamW update") as u64;
    let (heads, input) = (5, 0);
    assert!(
        matches!(&shape.ops[heads].inputs[input], verde::Origin::Glue(g) if g.terms.iter().any(|t| t.swap.is_some())),
        "operator {heads} reads attention heads laid out outside the tape: {:?}",
        shape.ops[heads].inputs[input]
    );
    let cases = [
        (Behaviour::ForgeLr { step: 3, factor: 2.0 }, first_adam, "attributes"),
        (Behaviour::ForgeBatch { step: 3, data_step: 5 }, 0, "input 1 is not the tensor the program makes"),
        (Behaviour::MislaidInput { step: 3, op: heads, input }, heads as u64, "input 0 is not the tensor"),
    ];
    for (behaviour, record, why) in cases {
        let cheat = f.cheat(behaviour);
        for cheat_first in [false, true] {
            let s = f.duel(&cheat, Conduct::Faithful, cheat_first);
            let (at_step, at_record, fault) = honest_won(&s, cheat_first);
            assert_eq!((at_step, at_record), (Some(3), Some(record)), "{behaviour:?}: {fault}");
            assert!(matches!(&fault, Fault::WrongClaim(w) if w.contains(why)), "{behaviour:?}: {fault}");
            let judgement = s.disputes[0].summary.judgement.as_ref().expect("judged");
            assert!(judgement.replayed.is_none(), "{behaviour:?}: settled without re-executing an operator");
        }
    }
}

/// Whatever an operator reads — an earlier output, a state tensor, a constant, the batch, a re-laid
/// tensor, a gradient sum — reading it mislaid loses: for inputs of every origin across the step, the
/// mislaid run either computes the same state (the change did not matter) or loses its dispute at that
/// operator, never leaving both sides losing.
#[test]
fn a_mislaid_input_of_any_origin_loses() {
    let f = fixture();
    let shape = f.structure.step(2);
    let kind = |o: &verde::Origin| match o {
        verde::Origin::Is(verde::Source::Op(_)) => "op",
        verde::Origin::Is(verde::Source::Input { .. }) => "input",
        verde::Origin::Is(verde::Source::State(_)) => "state",
        verde::Origin::Is(verde::Source::Constant(_)) => "constant",
        verde::Origin::Is(verde::Source::Batch(_)) => "batch",
        verde::Origin::Glue(g) if g.accumulate => "sum",
        verde::Origin::Glue(_) => "layout",
        verde::Origin::Unknown => "unknown",
    };
    let inputs: Vec<(usize, usize, &str)> = shape
        .ops
        .iter()
        .enumerate()
        .flat_map(|(op, o)| o.inputs.iter().enumerate().map(move |(input, origin)| (op, input, kind(origin))))
        .collect();
    assert!(inputs.iter().all(|i| i.2 != "unknown"), "every input has an origin");
    for k in ["op", "state", "constant", "batch", "sum", "layout"] {
        // Up to six inputs of this origin, spread over the step, until one whose mislaying matters.
        let of_kind: Vec<_> = inputs.iter().filter(|i| i.2 == k).collect();
        assert!(!of_kind.is_empty(), "no input of origin {k}");
        let stride = (of_kind.len() / 6).max(1);
        let mut changed = false;
        for &&(op, input, _) in of_kind.iter().step_by(stride).take(6) {
            let behaviour = Behaviour::MislaidInput { step: 2, op, input };
            let cheat = f.cheat(behaviour);
            if cheat.hashes == f.honest.hashes {
                continue;
            }
            let s = f.duel(&cheat, Conduct::Faithful, false);
            let (at_step, at_record, fault) = honest_won(&s, false);
            assert_eq!((at_step, at_record), (Some(2), Some(op as u64)), "{behaviour:?} ({k}): {fault}");
            changed = true;
            break;
        }
        assert!(changed, "no mislaid input of origin {k} changed the run");
    }
}

/// Verifiable evaluation: a forged score — made up, from skipped items, on other items, on another
/// model, or from a mislaid tensor — loses its dispute against an honest evaluator, found at the item
/// it first departs at; honest evaluators agree on the score.
#[test]
fn a_forged_evaluation_score_loses() {
    let trained = Program::tiny(4);
    let weights = verde::Weights::trained_by(&trained).expect("trained");
    let items = 6;
    let program = trained.evaluation(weights, items);
    let structure = Arc::new(Structure::of(&program).expect("structure"));
    let honest = Arc::new(execute(&program, Behaviour::Honest).expect("evaluation"));
    let f = Fixture { program: program.clone(), structure: structure.clone(), honest: honest.clone() };
    let score = honest.score().expect("a score");
    let twin = f.cheat(Behaviour::Honest);
    let s = f.settle(vec![(honest.clone(), Conduct::Faithful), (twin, Conduct::Faithful)]);
    assert!(s.disputes.is_empty(), "honest evaluators agree");
    score.check(&s.accepted.expect("accepted")).expect("the accepted state holds the honest score");

    let shape = structure.step(3);
    assert!(shape.ops.iter().all(|o| !o.kind().starts_with("adam")), "an evaluation does not train");
    let constants = shape.ops.iter().flat_map(|o| &o.inputs);
    assert!(constants.filter(|o| matches!(o, verde::Origin::Is(verde::Source::Constant(_)))).count() > 10, "weights");
    let sum_record = shape.state_index();
    let norm = shape.ops.iter().position(|o| o.kind() == "rms_norm").expect("a norm");
    let cases = [
        (Behaviour::PerturbWeight { step: 3, delta: -0.5 }, 3, sum_record, "made up"),
        (Behaviour::Lazy { from: 4 }, 4, structure.step(4).state_index(), "skipped items"),
        (Behaviour::ForgeBatch { step: 2, data_step: 9 }, 2, 0, "other items"),
        (Behaviour::MislaidInput { step: 5, op: norm, input: 0 }, 5, norm as u64, "a mislaid activation"),
    ];
    for (behaviour, item, record, what) in cases {
        let cheat = f.cheat(behaviour);
        let claim = cheat.score().expect("a score");
        assert_ne!(claim.sum, score.sum, "{what}: the cheat claims another score");
        claim.check(cheat.hashes.last().expect("hashes")).expect("the cheat's claim matches its own commitment");
        for cheat_first in [false, true] {
            let s = f.duel(&cheat, Conduct::Faithful, cheat_first);
            let (at_item, at_record, fault) = honest_won(&s, cheat_first);
            assert_eq!((at_item, at_record), (Some(item), Some(record)), "{what}: {fault}");
            assert_eq!(s.accepted, honest.hashes.last().copied(), "{what}");
        }
    }
    // Another model's score: its weights are not the program's constants.
    let other = trained.evaluation(verde::Weights::trained_by(&Program::tiny(2)).expect("trained"), items);
    let cheat = Arc::new(execute(&other, Behaviour::Honest).expect("evaluation"));
    let s = f.duel(&cheat, Conduct::Faithful, true);
    let (at_item, _, fault) = honest_won(&s, true);
    assert_eq!(at_item, Some(1), "another model: {fault}");
}

#[test]
fn breaking_the_protocol_loses() {
    let f = fixture();
    let cheat = f.cheat(Behaviour::PerturbWeight { step: 2, delta: 1e-3 });
    // Inconsistent openings, in the step bisection and in the op bisection.
    for from in [1, 4] {
        let s = f.duel(&cheat, Conduct::Inconsistent { from }, true);
        let (_, _, fault) = honest_won(&s, true);
        assert!(matches!(fault, Fault::BadAnswer(_)), "{fault}");
    }
    // Silence at the claim, in a bisection, at the trace, at the evidence: a timeout, whatever the stage.
    let s = f.duel(&cheat, Conduct::Faithful, false);
    let asks = 1 + s.disputes[0].summary.step_rounds + 1 + s.disputes[0].summary.op_rounds + 1;
    for from in [1, 2, asks - 1, asks] {
        let s = f.duel(&cheat, Conduct::Silent { from }, false);
        let (_, _, fault) = honest_won(&s, false);
        assert_eq!(fault, Fault::Timeout, "silent from question {from}");
    }
    // An honest trainer that falls silent loses too: the protocol, not the claim, decides.
    let s = f.duel(&cheat, Conduct::Faithful, true);
    assert!(matches!(s.disputes[0].outcome, Outcome::Won { winner: Party::Challenger, .. }));
    let silent_honest =
        f.settle(vec![(cheat.clone(), Conduct::Faithful), (f.honest.clone(), Conduct::Silent { from: 3 })]);
    assert!(matches!(
        silent_honest.disputes[0].outcome,
        Outcome::Won { winner: Party::Trainer, fault: Fault::Timeout }
    ));
}

/// A claim is not lost with a member that fails by its own conduct: when the honest side's first
/// member falls silent, the next member of the same claim takes the dispute up and wins it; a claim the
/// referee judged wrong is out with every member.
#[test]
fn a_silent_member_hands_its_claim_to_the_next_one() {
    let f = fixture();
    let cheat = f.cheat(Behaviour::PerturbWeight { step: 2, delta: 1e-3 });
    let s = f.settle(vec![
        (f.honest.clone(), Conduct::Silent { from: 3 }),
        (cheat.clone(), Conduct::Faithful),
        (f.honest.clone(), Conduct::Faithful),
        (cheat.clone(), Conduct::Faithful),
    ]);
    assert_eq!(s.disputes.len(), 2, "{:?}", s.disputes);
    assert!(matches!(s.disputes[0].outcome, Outcome::Won { winner: Party::Challenger, fault: Fault::Timeout }));
    assert_eq!((s.disputes[1].trainer, s.disputes[1].challenger), (2, 1), "the next honest member takes over");
    assert!(matches!(s.disputes[1].outcome, Outcome::Won { winner: Party::Trainer, fault: Fault::WrongClaim(_) }));
    assert_eq!(s.accepted, f.honest.hashes.last().copied());
    assert_eq!(s.standing, vec![false, false, true, false], "the silent member and both cheats are out");
    assert!(s.ledger.balance("trainer2") > s.ledger.balance("trainer0"), "the silent member lost its stake");
}

#[test]
fn one_honest_trainer_among_cheats_is_enough() {
    let f = fixture();
    let trainers = vec![
        (f.cheat(Behaviour::Lazy { from: 2 }), Conduct::Faithful),
        (f.cheat(Behaviour::PerturbWeight { step: 5, delta: 1e-3 }), Conduct::Faithful),
        (f.honest.clone(), Conduct::Faithful),
        (f.cheat(Behaviour::PerturbOp { step: 1, op: 5, delta: 0.5 }), Conduct::Faithful),
        (f.cheat(Behaviour::Honest), Conduct::Faithful),
    ];
    let s = f.settle(trainers);
    assert_eq!(s.standing, vec![false, false, true, false, true]);
    assert_eq!(s.accepted, f.honest.hashes.last().copied());
    assert_eq!(s.disputes.len(), 3, "one per wrong claim");
    assert!(s.disputes.iter().all(|d| d.traffic.bytes > 0 && d.summary.judgement.is_some()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Two honest trainers on different thread counts compute the same bits, whatever the data order and
    /// length: on repops they never dispute.
    #[test]
    fn honest_trainers_on_different_thread_counts_never_dispute(data_seed in 0u64..1000, steps in 1u64..6) {
        let program = Program { data_seed, ..Program::tiny(steps) };
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| execute(&program, Behaviour::Honest).expect("run")).hashes
        };
        prop_assert_eq!(on(1), on(3));
    }

    /// Random cheats at random steps and operators: the honest side always wins, at the exact step and
    /// record the cheat corrupted (a perturbed operator whose change does not reach the state leaves
    /// the same final claim: no dispute).
    #[test]
    fn the_cheater_is_found_at_its_step_and_op(step in 1u64..=STEPS, how in 0usize..4, op in 0usize..10_000, cheat_first: bool) {
        let f = fixture();
        let shape = f.structure.step(step);
        let op = op % shape.ops.len();
        let (behaviour, record) = match how {
            0 => (Behaviour::PerturbWeight { step, delta: 1e-3 }, shape.state_index()),
            1 => (Behaviour::PerturbOp { step, op, delta: 0.5 }, op as u64),
            2 => (Behaviour::Lazy { from: step }, shape.state_index()),
            _ => (Behaviour::LieInCommitment { step: STEPS }, f.structure.step(STEPS).state_index()),
        };
        let cheat = f.cheat(behaviour);
        let s = f.duel(&cheat, Conduct::Faithful, cheat_first);
        if cheat.hashes.last() == f.honest.hashes.last() {
            let harmless = matches!(behaviour, Behaviour::PerturbOp { .. });
            prop_assert!(s.disputes.is_empty() && harmless, "{:?}", behaviour);
        } else {
            let expected_step = if how == 3 { STEPS } else { step };
            let (at_step, at_record, _) = honest_won(&s, cheat_first);
            prop_assert_eq!((at_step, at_record), (Some(expected_step), Some(record)), "{:?}", behaviour);
            let d = &s.disputes[0].summary;
            let bound = |n: u64| 64 - (n - 1).leading_zeros();
            prop_assert!(d.step_rounds <= bound(STEPS + 1) && d.op_rounds <= bound(shape.positions()));
        }
    }
}
