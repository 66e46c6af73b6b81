//! The collectives on the simulated network: all-reduces agree with a plain sum, a gather round
//! neither stalls on a silent peer nor averages in a poisoned contribution, and an elastic group is who
//! is there.

use std::time::Duration;

use candle_core::{Device, Tensor};
use genrl::{DeviceProfile, SimSwarm, World, run_simulation};
use pipeline::collective::{
    GatherOutcome, Mailbox, QuorumTimeouts, Summand, gather_mean, quorum, ring_all_reduce, tree_all_reduce,
};
use pipeline::sync::check_finite;
use transport::sim::LinkSpec;

fn swarm(n: usize) -> SimSwarm {
    SimSwarm::build(&World::uniform(n, DeviceProfile::a10(), LinkSpec::mbit(20.0, 100.0)), 3).expect("swarm")
}

fn values(agent: usize) -> Vec<f32> {
    (0..10).map(|i| (agent * 10 + i) as f32 * 0.25).collect()
}

#[test]
fn ring_and_tree_all_reduce_sum_every_members_values() {
    for n in [1, 2, 3, 5, 8] {
        let out = run_simulation(async move {
            let swarm = swarm(n);
            swarm
                .run(move |ctx| async move {
                    let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock, Duration::from_secs(30), "t");
                    let me = ctx.index as usize;
                    let ring = ring_all_reduce(&mut mail, &ctx.peers, me, 1, 0, values(me)).await;
                    let tree = tree_all_reduce(&mut mail, &ctx.peers, me, 1, 100, values(me)).await;
                    Ok((ring.expect("ring"), tree.expect("tree")))
                })
                .await
        })
        .expect("runtime");
        let want: Vec<f32> = (0..10).map(|i| (0..n).map(|a| values(a)[i]).sum()).collect();
        for result in out {
            let (ring, tree) = result.expect("agent");
            for ((r, t), w) in ring.iter().zip(&tree).zip(&want) {
                assert!((r - w).abs() < 1e-3 && (t - w).abs() < 1e-3, "n={n}: ring {r}, tree {t}, want {w}");
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A tensor that stays on its device, its chunks sent resident, sums to the host values' bits, and each
/// member sends the bytes it would have sent as values (the simulated link charges them the same).
#[test]
fn device_tensors_reduce_to_the_host_values_bits_and_cost_the_same_bytes() {
    // Values whose sums round differently in another order.
    let values =
        |agent: usize| -> Vec<f32> { (0..23).map(|i| ((agent * 37 + i * 11) % 17) as f32 / 7.0 - 1.1).collect() };
    for n in [2, 3, 5] {
        let out = run_simulation(async move {
            let swarm = swarm(n);
            swarm
                .run(move |ctx| async move {
                    let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock, Duration::from_secs(30), "t");
                    mail.set_resident_tensors(true);
                    let me = ctx.index as usize;
                    let tensor = Tensor::new(values(me).as_slice(), &Device::Cpu).expect("tensor");
                    let message = tensor.to_message(mail.leaves_tensors_resident()).expect("message");
                    assert!(message.resident_elements().is_some(), "a chunk goes resident on the simulated network");
                    let sent = mail.sent();
                    let host = (
                        ring_all_reduce(&mut mail, &ctx.peers, me, 1, 0, values(me)).await.expect("ring"),
                        tree_all_reduce(&mut mail, &ctx.peers, me, 1, 100, values(me)).await.expect("tree"),
                    );
                    let host_bytes = mail.sent() - sent;
                    let sent = mail.sent();
                    let ring = ring_all_reduce(&mut mail, &ctx.peers, me, 2, 0, tensor.clone()).await.expect("ring");
                    let tree = tree_all_reduce(&mut mail, &ctx.peers, me, 2, 100, tensor).await.expect("tree");
                    let device = (ring.to_vec1::<f32>().expect("ring"), tree.to_vec1::<f32>().expect("tree"));
                    Ok((host, device, host_bytes, mail.sent() - sent))
                })
                .await
        })
        .expect("runtime");
        for result in out {
            let ((ring, tree), (dring, dtree), host_bytes, device_bytes) = result.expect("agent");
            assert_eq!(bits(&ring), bits(&dring), "n={n}: ring");
            assert_eq!(bits(&tree), bits(&dtree), "n={n}: tree");
            assert_eq!(host_bytes, device_bytes, "n={n}: bytes sent");
        }
    }
}

/// Agent 3 never shows up; agent 2 sends NaNs. The root averages agents 0 and 1 only, logs both, and
/// nobody waits longer than the deadlines.
#[test]
fn a_gather_round_leaves_out_silent_and_poisoned_peers() {
    let timeout = Duration::from_secs(5);
    let (outcomes, finished) = run_simulation(async move {
        let swarm = swarm(4);
        let out = swarm
            .run(move |ctx| async move {
                let me = ctx.index as usize;
                if me == 3 {
                    return Ok(None);
                }
                let own = if me == 2 { vec![f32::NAN; 10] } else { values(me) };
                let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), Duration::from_secs(600), "t");
                let outcome =
                    gather_mean(&mut mail, &ctx.peers, me, 7, 0, own, timeout, check_finite).await.expect("gather");
                Ok(Some((outcome, ctx.clock.now())))
            })
            .await;
        (out, swarm.network().now())
    })
    .expect("runtime");
    let outcomes: Vec<Option<(GatherOutcome, Duration)>> = outcomes.into_iter().map(|r| r.expect("agent")).collect();
    let want: Vec<f32> = (0..10).map(|i| (values(0)[i] + values(1)[i]) / 2.0).collect();
    let (root, root_done) = outcomes[0].clone().expect("root");
    assert_eq!(root.mean, want);
    assert_eq!(root.members, 2);
    assert_eq!(root.missing.len(), 1, "agent 3 is missing");
    assert_eq!(root.rejected.len(), 1, "agent 2 is rejected");
    assert!(root.rejected[0].1.contains("non-finite"));
    assert!(root_done < timeout + Duration::from_secs(1), "the root waited only its deadline: {root_done:?}");
    let (member, _) = outcomes[1].clone().expect("member");
    assert_eq!(member.mean, want, "the member gets the root's mean");
    assert!(!member.root_lost);
    assert!(finished < 3 * timeout, "nobody hangs: {finished:?}");
}

#[test]
fn a_member_whose_root_is_silent_carries_on_alone() {
    let timeout = Duration::from_secs(2);
    let outcomes = run_simulation(async move {
        swarm(2)
            .run(move |ctx| async move {
                let me = ctx.index as usize;
                if me == 0 {
                    return Ok(None);
                }
                let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), Duration::from_secs(600), "t");
                let outcome = gather_mean(&mut mail, &ctx.peers, me, 1, 0, values(me), timeout, check_finite)
                    .await
                    .expect("gather");
                Ok(Some(outcome))
            })
            .await
    })
    .expect("runtime");
    let member = outcomes[1].as_ref().expect("agent").clone().expect("member");
    assert!(member.root_lost);
    assert_eq!(member.mean, values(1));
}

/// What one agent of [`quorum_round`] got (`None`: it was silent): its group and attempt (`None`: left
/// out), and when.
type QuorumOutcome = Option<(Option<(Vec<usize>, u32)>, Duration)>;

/// Runs one elastic quorum for step 7 on a swarm of `n` where the agents in `silent` never show up and
/// `joiners` were announced by agent 1; returns each agent's outcome (`None` for the silent ones) and
/// the virtual time at which it had it.
fn quorum_round(n: usize, silent: &'static [usize], joiners: &'static [usize]) -> Vec<QuorumOutcome> {
    let timeouts = QuorumTimeouts::from_wait(Duration::from_secs(1));
    run_simulation(async move {
        swarm(n)
            .run(move |ctx| async move {
                let me = ctx.index as usize;
                if silent.contains(&me) {
                    return Ok(None);
                }
                let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), Duration::from_secs(600), "q");
                // The last agent is the joiner when there is one: its donor's view leaves it out.
                let view: Vec<usize> = (0..n).filter(|q| !joiners.contains(q)).collect();
                let announced: &[usize] = if me == 1 { joiners } else { &[] };
                let got = quorum(&mut mail, &ctx.peers, me, &view, announced, (7, 0), timeouts).await;
                Ok(Some((got.expect("quorum"), ctx.clock.now())))
            })
            .await
    })
    .expect("runtime")
    .into_iter()
    .map(|r| r.expect("agent"))
    .collect()
}

#[test]
fn an_elastic_group_is_everyone_there_without_waiting() {
    for (i, out) in quorum_round(4, &[], &[]).into_iter().enumerate() {
        let (group, at) = out.expect("ran");
        assert_eq!(group, Some((vec![0, 1, 2, 3], 0)), "agent {i}");
        assert!(at < Duration::from_millis(200), "agent {i} waited {at:?}: nobody was missing");
    }
}

#[test]
fn an_elastic_group_leaves_out_a_silent_member_and_lets_in_an_announced_joiner() {
    let out = quorum_round(5, &[2], &[4]);
    for i in [0, 1, 3, 4] {
        let (group, at) = out[i].clone().expect("ran");
        assert_eq!(group, Some((vec![0, 1, 3, 4], 0)), "agent {i}");
        assert!(at >= Duration::from_secs(1) && at < Duration::from_secs(2), "agent {i}: the leader waited {at:?}");
    }
}

#[test]
fn a_joiner_with_the_lowest_index_follows_the_groups_leader() {
    let timeouts = QuorumTimeouts::from_wait(Duration::from_secs(1));
    let out = run_simulation(async move {
        swarm(4)
            .run(move |ctx| async move {
                let me = ctx.index as usize;
                let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), Duration::from_secs(600), "q");
                // Replica 0 joins through replica 1 (the group's leader), with the group's view.
                let announced: &[usize] = if me == 1 { &[0] } else { &[] };
                let got = quorum(&mut mail, &ctx.peers, me, &[1, 2, 3], announced, (3, 0), timeouts).await;
                Ok((got.expect("quorum"), ctx.clock.now()))
            })
            .await
    })
    .expect("runtime");
    for (i, got) in out.into_iter().enumerate() {
        let (group, at) = got.expect("agent");
        assert_eq!(group, Some((vec![0, 1, 2, 3], 0)), "agent {i}");
        assert!(at < Duration::from_millis(500), "agent {i} waited {at:?}");
    }
}

#[test]
fn a_silent_leader_is_replaced_by_the_next_replica() {
    let out = quorum_round(4, &[0], &[]);
    for (i, got) in out.iter().enumerate().skip(1) {
        let (group, at) = got.clone().expect("ran");
        assert_eq!(group, Some((vec![1, 2, 3], 1)), "agent {i}: a second attempt under replica 1");
        // Members give the leader four times the leader's wait, then the new leader waits for replica 0.
        assert!(at >= Duration::from_secs(4), "agent {i} at {at:?}");
    }
}

/// A leader whose group names a replica the stage does not have (or repeats one) is no answer: the
/// member presumes it silent and goes on under the next replica (itself), without a panic.
#[test]
fn a_group_naming_replicas_the_stage_lacks_is_no_answer() {
    use pipeline::wire::Msg;
    let timeouts = QuorumTimeouts::from_wait(Duration::from_secs(1));
    let out = run_simulation(async move {
        swarm(2)
            .run(move |ctx| async move {
                let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), Duration::from_secs(600), "q");
                if ctx.index == 0 {
                    let (from, _) =
                        mail.take("an ask", |_, m| matches!(m, Msg::Alive { .. })).await.expect("the member asks");
                    for members in [vec![0, 1, 9], vec![1, 1]] {
                        mail.send(from, &Msg::Members { step: 7, attempt: 0, members }).await.expect("sent");
                    }
                    return Ok(None);
                }
                let got = quorum(&mut mail, &ctx.peers, 1, &[0, 1], &[], (7, 0), timeouts).await;
                Ok(Some(got.expect("quorum")))
            })
            .await
    })
    .expect("runtime");
    let member = out.into_iter().nth(1).expect("two agents").expect("agent");
    assert_eq!(member, Some(Some((vec![1], 1))));
}

/// Recovery epochs: a message sent in an earlier epoch than the receiver's is void, one of a later
/// epoch waits until the receiver gets there, and a replacement's `Replace` ends whatever wait a
/// halting worker is in (and only then).
#[test]
fn a_mailbox_hears_its_own_epoch_and_halts_for_a_replacement() {
    use pipeline::wire::Msg;
    let norm = |step| Msg::GradNorm { step, stage: 0, squared: 1.0 };
    let out = run_simulation(async move {
        swarm(2)
            .run(move |ctx| async move {
                let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), Duration::from_secs(600), "e");
                let other = ctx.peers[1 - ctx.index as usize];
                if ctx.index == 1 {
                    for (epoch, step) in [(0, 1), (2, 2), (1, 3)] {
                        mail.set_epoch(epoch);
                        mail.send(other, &norm(step)).await.expect("sent");
                    }
                    mail.send(other, &Msg::Replace).await.expect("sent");
                    return Ok(Vec::new());
                }
                mail.set_epoch(1);
                ctx.clock.sleep(Duration::from_secs(5)).await;
                let mut heard = Vec::new();
                let norms = |_: &transport::PeerId, m: &Msg| matches!(m, Msg::GradNorm { .. });
                // Without halting, a Replace is only kept: the wait for a norm ends with the current one.
                if let Ok((_, Msg::GradNorm { step, .. })) = mail.take("a norm", norms).await {
                    heard.push(step);
                }
                mail.set_halts(true);
                let never = |_: &transport::PeerId, m: &Msg| matches!(m, Msg::Members { .. });
                match mail.take("a group", never).await {
                    Err(pipeline::Error::Replaced { by, .. }) if by == other => heard.push(100),
                    other => panic!("expected a halt, got {other:?}"),
                }
                // The future epoch's message is heard once this worker is in it; the past one never.
                mail.set_epoch(2);
                let now = ctx.clock.now();
                while let Some((_, Msg::GradNorm { step, .. })) =
                    mail.take_until(now + Duration::from_secs(1), norms).await.expect("mailbox")
                {
                    heard.push(step);
                }
                Ok(heard)
            })
            .await
    })
    .expect("runtime");
    let receiver = out.into_iter().next().expect("two agents").expect("agent");
    assert_eq!(receiver, vec![3, 100, 2]);
}
