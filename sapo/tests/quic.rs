//! A SAPO swarm over real QUIC endpoints on loopback, in real time: the same game as on the simulated
//! network, each agent on its own endpoint with mutual TLS.

use std::time::Duration;

use genrl::env::TaskSetConfig;
use genrl::{AgentCtx, DeviceProfile, Metrics, WallClock};
use sapo::swarm::play_agent;
use sapo::{Mix, SapoConfig, warm_start};
use transport::quic::{Endpoint, EndpointConfig};
use transport::{Identity, PeerBook};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_shares_rollouts_over_quic() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg =
        SapoConfig { agents: 3, liars: 1, rounds: 12, mix: Mix { local: 1, external: 1 }, ..SapoConfig::default() };
    cfg.tasks = TaskSetConfig {
        families: vec!["propositional_logic".into()],
        max_level: 1,
        eval_per_level: 1,
        ..Default::default()
    };
    cfg.warm_start.steps = 30;
    let warm = vec![warm_start(&cfg, "tiny")?];
    let n = cfg.agents + cfg.liars;
    let ids: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect::<Result<_, _>>()?;
    // The liar is done long before the others: sends to it fail fast and it is then skipped.
    let config = EndpointConfig { connect_timeout: Duration::from_secs(1), ..EndpointConfig::default() };
    let endpoints: Vec<Endpoint> =
        ids.iter().map(|id| Endpoint::bind(id, PeerBook::new(), config.clone())).collect::<Result<_, _>>()?;
    for a in &endpoints {
        for (b, id) in endpoints.iter().zip(&ids) {
            a.add_peer(id.peer_id(), b.local_addr()?, None);
        }
    }
    let peers: Vec<_> = ids.iter().map(Identity::peer_id).collect();
    let clock = WallClock::new();
    let mut tasks = Vec::new();
    for (index, endpoint) in endpoints.into_iter().enumerate() {
        let ctx = AgentCtx {
            index: index as u32,
            transport: endpoint,
            clock,
            profile: DeviceProfile::laptop(),
            metrics: Metrics::new(),
            peers: peers.clone(),
        };
        let (cfg, warm) = (cfg.clone(), warm.clone());
        tasks.push(tokio::spawn(async move { play_agent(&cfg, &warm, index, ctx, |_| {}).await }));
    }
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await??);
    }
    assert!(runs[3].liar);
    for a in runs.iter().filter(|a| !a.liar) {
        assert_eq!(a.rounds.len(), 12, "agent {}", a.index);
        let seen = a.dropped.forged + a.dropped.unreadable + a.dropped.no_signal + a.dropped.unsampled;
        let used: usize = a.rounds.iter().map(|r| r.external).sum();
        assert!(seen + used > 0, "agent {} received nothing from its peers: {:?}", a.index, a.dropped);
        assert_eq!(a.rejected, 0, "agent {}", a.index);
    }
    // The liar's forged answers arrive over QUIC too, and are dropped.
    assert!(
        runs.iter().filter(|a| !a.liar).any(|a| a.dropped.forged > 0),
        "{:?}",
        runs.iter().map(|a| a.dropped).collect::<Vec<_>>()
    );
    Ok(())
}
