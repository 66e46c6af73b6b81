//! A SAPO swarm end to end on the simulated network, at test scale.

use genrl::env::gym::GymQuestion;
use genrl::env::{Family, Level, Question, Task, TaskSetConfig};
use genrl::game::Entry;
use proptest::prelude::*;
use sapo::swarm::run_alone;
use sapo::{Mix, SapoConfig, run, warm_start};
use transport::{Codec, PeerId};

/// A small swarm: few rounds of few questions with few completions.
fn tiny_swarm(agents: usize, rounds: u64, mix: Mix) -> SapoConfig {
    let mut cfg = SapoConfig { agents, rounds, mix, completions: 8, ..SapoConfig::default() };
    // Truth tables of one operator: few questions, so a tiny policy learns them in a few dozen rounds.
    cfg.tasks = TaskSetConfig {
        families: vec!["propositional_logic".into()],
        max_level: 1,
        eval_per_level: 1,
        ..Default::default()
    };
    cfg.policy.optim.lr = 1e-3;
    cfg.policy.optim.min_lr = 1e-3;
    cfg.warm_start.steps = 30;
    cfg.warm_start.batch = 16;
    // A round of this tiny policy takes a few milliseconds of virtual time: links as fast, so that
    // rollouts arrive within a few rounds of the few played.
    cfg.latency_ms = 1.0;
    cfg
}

#[test]
fn an_agent_that_takes_nothing_from_the_swarm_learns_what_it_would_alone() -> sapo::Result<()> {
    let cfg = tiny_swarm(3, 6, Mix { local: 1, external: 0 });
    let warm = warm_start(&cfg, "tiny")?;
    let warm = [warm];
    let swarm = run(&cfg, &warm, |_| {})?;
    assert_eq!(swarm.agents.len(), 3);
    for k in 0..3 {
        let alone = run_alone(&cfg, &warm, k)?;
        assert_eq!(swarm.agents[k].rounds, alone.rounds, "agent {k}");
        assert_eq!(swarm.agents[k].eval, alone.eval, "agent {k}");
    }
    // The same swarm sharing: now the agents' steps differ from their solo runs.
    let sharing = run(&SapoConfig { mix: Mix { local: 1, external: 1 }, ..cfg.clone() }, &warm, |_| {})?;
    assert!(
        sharing.honest().any(|a| a.rounds.iter().any(|r| r.external > 0)),
        "{:?}",
        sharing
            .agents
            .iter()
            .map(|a| (a.dropped, a.rejected, a.virtual_time, a.rounds.iter().map(|r| r.external).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    );
    assert_ne!(
        sharing.agents.iter().map(|a| &a.rounds).collect::<Vec<_>>(),
        swarm.agents.iter().map(|a| &a.rounds).collect::<Vec<_>>()
    );
    Ok(())
}

#[test]
fn a_swarm_with_a_lying_peer_drops_its_rollouts_and_still_improves() -> sapo::Result<()> {
    let rounds = 40;
    let cfg = SapoConfig { liars: 1, ..tiny_swarm(3, rounds, Mix { local: 1, external: 1 }) };
    let warm = [warm_start(&cfg, "tiny")?];
    let out = run(&cfg, &warm, |_| {})?;
    assert_eq!(out.agents.len(), 4);
    assert!(out.agents[3].liar);
    for a in out.honest() {
        assert!(a.dropped.forged > 0, "agent {}: {:?}", a.index, a.dropped);
        assert!(a.dropped.unreadable > 0, "agent {}: {:?}", a.index, a.dropped);
    }
    let start = out.mean_reward(0..1);
    let end = out.mean_reward(rounds as usize - 10..rounds as usize);
    assert!(end > start + 0.05, "reward {start:.3} → {end:.3}");
    Ok(())
}

fn task() -> impl Strategy<Value = Task> {
    prop_oneof![
        (0..Family::ALL.len(), 1u8..=3, ".{0,30}", ".{0,20}").prop_map(|(f, l, prompt, answer)| {
            Task::Generated(Question { family: Family::ALL[f], level: Level::new(l).expect("level"), prompt, answer })
        }),
        (".{0,12}", ".{0,200}", ".{0,20}").prop_map(|(dataset, question, answer)| Task::Gym(GymQuestion {
            dataset,
            question,
            answer
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rollouts_survive_the_wire(items in prop::collection::vec((task(), prop::collection::vec(".{0,40}", 0..9)), 0..9), peer in any::<u64>()) {
        let entries: Vec<Entry<Task, String>> = items
            .into_iter()
            .map(|(item, actions)| Entry { source: PeerId::simulated(peer), stage: 0, item, actions })
            .collect();
        let codec = Codec::default();
        let bytes = codec.encode(&entries).expect("encode");
        let back: Vec<Entry<Task, String>> = codec.decode(&bytes).expect("decode");
        prop_assert_eq!(back, entries);
        // Cut short or corrupted: an error, never a panic.
        if bytes.len() > 1 {
            prop_assert!(codec.decode::<Vec<Entry<Task, String>>>(&bytes.slice(..bytes.len() - 1)).is_err());
        }
    }
}
