use super::*;
use crate::TransportExt;

fn quick_config() -> EndpointConfig {
    EndpointConfig {
        stream_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(5),
        ..EndpointConfig::default()
    }
}

/// `n` endpoints that all know each other.
fn swarm(n: usize, config: EndpointConfig) -> Result<(Vec<Identity>, Vec<Endpoint>), TransportError> {
    let ids: Vec<Identity> = (0..n)
        .map(|_| Identity::generate())
        .collect::<Result<_, _>>()
        .map_err(|e| TransportError::Setup(e.to_string()))?;
    let endpoints: Vec<Endpoint> =
        ids.iter().map(|id| Endpoint::bind(id, PeerBook::new(), config.clone())).collect::<Result<_, _>>()?;
    for a in &endpoints {
        for (b, id) in endpoints.iter().zip(&ids) {
            a.add_peer(id.peer_id(), b.local_addr()?, None);
        }
    }
    Ok((ids, endpoints))
}

/// Polls `check` until it holds, for at most 10 s: what happens on real sockets takes a moment to land.
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

async fn recv_within(ep: &Endpoint, d: Duration) -> Option<Envelope> {
    tokio::time::timeout(d, ep.recv()).await.ok().and_then(Result::ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_endpoints_exchange_ten_thousand_messages() -> Result<(), Box<dyn std::error::Error>> {
    let (_ids, eps) = swarm(3, quick_config())?;
    let per_pair = 10_000 / 6 + 1; // 6 ordered pairs, >= 10,000 messages in all
    let mut senders = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        for (j, other) in eps.iter().enumerate() {
            if i == j {
                continue;
            }
            let (ep, to) = (ep.clone(), other.local_peer());
            senders.push(tokio::spawn(async move {
                for k in 0..per_pair {
                    ep.send_msg(to, &(i as u32, k as u32)).await?;
                }
                Ok::<_, TransportError>(())
            }));
        }
    }
    let mut receivers = Vec::new();
    for ep in &eps {
        let ep = ep.clone();
        receivers.push(tokio::spawn(async move {
            let mut seen = HashMap::<u32, HashSet<u32>>::new();
            for _ in 0..2 * per_pair {
                let (from, (i, k)): (PeerId, (u32, u32)) = ep.recv_msg().await?;
                assert_ne!(from, ep.local_peer());
                assert!(seen.entry(i).or_default().insert(k), "duplicate message");
            }
            Ok::<_, TransportError>(seen)
        }));
    }
    for s in senders {
        s.await??;
    }
    for r in receivers {
        let seen = tokio::time::timeout(Duration::from_secs(60), r).await???;
        assert_eq!(seen.len(), 2);
        assert!(seen.values().all(|ks| ks.len() == per_pair));
    }
    let total: u64 = eps.iter().map(|e| e.stats().received_messages).sum();
    assert_eq!(total, 6 * per_pair as u64);
    assert!(total >= 10_000);
    Ok(())
}

#[tokio::test]
async fn dialling_the_wrong_identity_is_rejected() -> Result<(), Box<dyn std::error::Error>> {
    let (ids, eps) = swarm(2, quick_config())?;
    // The book says an impostor id lives at endpoint 1's address: endpoint 1 cannot prove that id.
    let impostor = Identity::generate()?.peer_id();
    eps[0].add_peer(impostor, eps[1].local_addr()?, None);
    let err = eps[0].send(impostor, Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, TransportError::Connection { .. }), "{err}");
    assert!(err.to_string().contains("expected"), "{err}");
    // The real id still works.
    eps[0].send(ids[1].peer_id(), Bytes::from_static(b"ok")).await?;
    let got = recv_within(&eps[1], Duration::from_secs(5)).await.ok_or("nothing received")?;
    assert_eq!(&got.payload[..], b"ok");
    Ok(())
}

#[tokio::test]
async fn unlisted_peer_is_refused_at_the_handshake() -> Result<(), Box<dyn std::error::Error>> {
    let (ids, eps) = swarm(1, quick_config())?;
    let stranger_id = Identity::generate()?;
    let stranger = Endpoint::bind(&stranger_id, PeerBook::new(), quick_config())?;
    stranger.add_peer(ids[0].peer_id(), eps[0].local_addr()?, None);
    let err = stranger.send(ids[0].peer_id(), Bytes::from_static(b"let me in")).await.unwrap_err();
    assert!(matches!(err, TransportError::Connection { .. }), "{err}");
    assert!(recv_within(&eps[0], Duration::from_millis(300)).await.is_none());
    // The refusal is recorded on the listening side.
    assert!(eventually(|| eps[0].faults().iter().any(|f| matches!(f.kind, FaultKind::HandshakeRejected(_)))).await);
    Ok(())
}

/// A raw connection that speaks for `identity` to `ep`, bypassing the endpoint's own sending code.
async fn raw_connection(
    identity: &Identity,
    ep: &Endpoint,
    expected: PeerId,
) -> Result<quinn::Connection, Box<dyn std::error::Error>> {
    let creds = Credentials::new(identity)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(creds.client_config(expected)?)?;
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = client.connect(ep.local_addr()?, tls::SERVER_NAME)?.await?;
    let mut confirm = conn.accept_uni().await?;
    let mut header = [0u8; 4];
    confirm.read_exact(&mut header).await?;
    Ok(conn)
}

#[tokio::test]
async fn hostile_streams_are_faults_and_the_endpoint_keeps_serving() -> Result<(), Box<dyn std::error::Error>> {
    let (ids, eps) = swarm(2, quick_config())?;
    let (server, honest) = (&eps[0], &eps[1]);
    let conn = raw_connection(&ids[1], server, ids[0].peer_id()).await?;

    // 1. A header claiming 4 GiB: stopped at once with the frame-too-large code.
    let mut s = conn.open_uni().await?;
    s.write_all(&u32::MAX.to_le_bytes()).await?;
    let _ = s.write_all(&[0u8; 1024]).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), s.stopped()).await?;
    assert_eq!(stopped?, Some(CODE_FRAME_TOO_LARGE.into()));

    // 2. A truncated frame: claims 100 bytes, sends 10, finishes.
    let mut s = conn.open_uni().await?;
    s.write_all(&100u32.to_le_bytes()).await?;
    s.write_all(&[1u8; 10]).await?;
    s.finish()?;

    // 3. A stream that sends nothing at all (stalls past the stream timeout).
    let mut stalled = conn.open_uni().await?;
    stalled.write_all(&[]).await?;
    stalled.write_all(&8u32.to_le_bytes()[..2]).await?;

    // 4. Random garbage that frames correctly but is not the expected message type.
    let mut s = conn.open_uni().await?;
    s.write_all(&5u32.to_le_bytes()).await?;
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 0xff]).await?;
    s.finish()?;

    // 5. A reset mid-message.
    let mut s = conn.open_uni().await?;
    s.write_all(&100u32.to_le_bytes()).await?;
    s.write_all(&[2u8; 10]).await?;
    s.reset(7u32.into())?;

    // The garbage arrives as a message; decoding it as a typed message is a typed error naming the sender.
    let got = recv_within(server, Duration::from_secs(5)).await.ok_or("garbage not delivered")?;
    let decoded = server.codec().decode::<(u32, String)>(&got.payload);
    assert!(decoded.is_err());

    // Meanwhile the endpoint serves honest traffic.
    honest.send_msg(server.local_peer(), &"still here".to_string()).await?;
    let (from, text): (PeerId, String) = tokio::time::timeout(Duration::from_secs(5), server.recv_msg()).await??;
    assert_eq!((from, text.as_str()), (honest.local_peer(), "still here"));

    // The stalled stream times out after 500 ms; wait for all four faults to be recorded.
    let kinds = |faults: &[Fault]| {
        let has = |pred: &dyn Fn(&FaultKind) -> bool| faults.iter().any(|f| pred(&f.kind));
        has(&|k| matches!(k, FaultKind::BadFrame(CodecError::FrameTooLarge { .. })))
            && has(&|k| matches!(k, FaultKind::BadFrame(CodecError::Truncated { .. })))
            && has(&|k| matches!(k, FaultKind::StreamTimeout))
            && has(&|k| matches!(k, FaultKind::StreamBroken(_)))
    };
    assert!(eventually(|| kinds(&server.faults())).await, "{:?}", server.faults());
    let faults = server.faults();
    let has = |pred: &dyn Fn(&FaultKind) -> bool| faults.iter().any(|f| pred(&f.kind));
    assert!(has(&|k| matches!(k, FaultKind::BadFrame(CodecError::FrameTooLarge { .. }))), "{faults:?}");
    assert!(has(&|k| matches!(k, FaultKind::BadFrame(CodecError::Truncated { .. }))), "{faults:?}");
    assert!(has(&|k| matches!(k, FaultKind::StreamTimeout)), "{faults:?}");
    assert!(has(&|k| matches!(k, FaultKind::StreamBroken(_))), "{faults:?}");
    assert!(faults.iter().all(|f| f.peer == Some(ids[1].peer_id())));

    // 6. A peer that disconnects mid-message.
    let mut s = conn.open_uni().await?;
    s.write_all(&1000u32.to_le_bytes()).await?;
    s.write_all(&[3u8; 100]).await?;
    conn.close(0u32.into(), b"gone");
    drop(stalled);
    honest.send_msg(server.local_peer(), &"and still".to_string()).await?;
    let (_, text): (PeerId, String) = tokio::time::timeout(Duration::from_secs(5), server.recv_msg()).await??;
    assert_eq!(text, "and still");
    Ok(())
}

#[tokio::test]
async fn oversized_send_is_refused_locally_and_the_receiver_limit_holds() -> Result<(), Box<dyn std::error::Error>> {
    let small = EndpointConfig { codec: Codec::new(1024)?, ..quick_config() };
    let (ids, eps) = swarm(2, small)?;
    let err = eps[0].send(ids[1].peer_id(), Bytes::from(vec![0u8; 2048])).await.unwrap_err();
    assert!(matches!(err, TransportError::Codec(CodecError::FrameTooLarge { .. })), "{err}");
    // A sender with a larger limit than the receiver: the receiver stops that stream and keeps serving.
    let big_id = Identity::generate()?;
    let big = Endpoint::bind(&big_id, PeerBook::new(), quick_config())?;
    big.add_peer(ids[0].peer_id(), eps[0].local_addr()?, None);
    eps[0].add_peer(big_id.peer_id(), big.local_addr()?, None);
    big.send(ids[0].peer_id(), Bytes::from(vec![0u8; 4096])).await?;
    big.send(ids[0].peer_id(), Bytes::from_static(b"small")).await?;
    let got = recv_within(&eps[0], Duration::from_secs(5)).await.ok_or("small message lost")?;
    assert_eq!(&got.payload[..], b"small");
    assert!(
        eventually(|| eps[0]
            .faults()
            .iter()
            .any(|f| matches!(f.kind, FaultKind::BadFrame(CodecError::FrameTooLarge { .. }))))
        .await
    );
    Ok(())
}

#[tokio::test]
async fn reconnects_after_the_peer_restarts() -> Result<(), Box<dyn std::error::Error>> {
    let (ids, eps) = swarm(2, quick_config())?;
    let (a, b) = (eps[0].clone(), eps[1].clone());
    let b_addr = b.local_addr()?;
    a.send(ids[1].peer_id(), Bytes::from_static(b"one")).await?;
    assert_eq!(&recv_within(&b, Duration::from_secs(5)).await.ok_or("lost")?.payload[..], b"one");

    // Restart b: same identity, same address.
    b.close().await;
    drop(b);
    drop(eps);
    let config = EndpointConfig { bind: b_addr, ..quick_config() };
    let mut restarted = None;
    for _ in 0..50 {
        match Endpoint::bind(&ids[1], PeerBook::new(), config.clone()) {
            Ok(ep) => {
                restarted = Some(ep);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let b = restarted.ok_or("could not rebind")?;
    b.add_peer(ids[0].peer_id(), a.local_addr()?, None);
    // `a` learns that its old connection closed (the restarted peer's close reached it).
    let slot = a.slot(ids[1].peer_id());
    let closed = || slot.try_lock().map(|c| c.as_ref().is_none_or(|c| c.close_reason().is_some())).unwrap_or(false);
    assert!(eventually(closed).await, "the old connection never closed");
    a.send(ids[1].peer_id(), Bytes::from_static(b"two")).await?;
    assert_eq!(&recv_within(&b, Duration::from_secs(5)).await.ok_or("lost after restart")?.payload[..], b"two");
    Ok(())
}

#[tokio::test]
async fn bad_configs_are_named() {
    let identity = Identity::generate().expect("identity");
    let config = EndpointConfig { keep_alive: Duration::from_secs(60), ..EndpointConfig::default() };
    let err = Endpoint::bind(&identity, PeerBook::new(), config).unwrap_err();
    assert!(err.to_string().contains("quic.keep_alive"), "{err}");
    let config = EndpointConfig { stream_timeout: Duration::ZERO, ..EndpointConfig::default() };
    let err = Endpoint::bind(&identity, PeerBook::new(), config).unwrap_err();
    assert!(err.to_string().contains("quic.stream_timeout"), "{err}");
}

#[tokio::test]
async fn self_send_and_unknown_peer() -> Result<(), Box<dyn std::error::Error>> {
    let (ids, eps) = swarm(1, quick_config())?;
    eps[0].send(ids[0].peer_id(), Bytes::from_static(b"me")).await?;
    assert_eq!(recv_within(&eps[0], Duration::from_secs(1)).await.ok_or("lost")?.from, ids[0].peer_id());
    let err = eps[0].send(PeerId::simulated(9), Bytes::new()).await.unwrap_err();
    assert!(matches!(err, TransportError::UnknownPeer(_)));
    Ok(())
}
