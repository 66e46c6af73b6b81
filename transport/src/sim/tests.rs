use super::*;
use crate::TransportExt;

fn ids(n: u64) -> Vec<PeerId> {
    (0..n).map(PeerId::simulated).collect()
}

#[tokio::test(start_paused = true)]
async fn one_megabyte_over_ten_mb_per_s_and_50_ms_arrives_at_150_ms() -> Result<(), TransportError> {
    // 10 MB/s = 80 Mbit/s.
    let net = Network::builder(1).default_link(LinkSpec::mbit(50.0, 80.0)).build()?;
    let p = ids(2);
    let (a, b) = (net.add_peer(p[0])?, net.add_peer(p[1])?);
    // Payload plus the 4-byte frame header is exactly 1,000,000 bytes on the wire.
    a.send(p[1], Bytes::from(vec![7u8; 1_000_000 - FRAME_HEADER_LEN])).await?;
    let got = b.recv().await?;
    assert_eq!(got.from, p[0]);
    assert_eq!(net.now(), Duration::from_millis(150));
    assert_eq!(net.link_stats(p[0], p[1]).delivered_bytes, 1_000_000);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn messages_queue_behind_each_other_on_a_link() -> Result<(), TransportError> {
    let net = Network::builder(1).default_link(LinkSpec::mbit(10.0, 8.0)).build()?; // 1 MB/s
    let p = ids(2);
    let (a, b) = (net.add_peer(p[0])?, net.add_peer(p[1])?);
    let payload = Bytes::from(vec![0u8; 100_000 - FRAME_HEADER_LEN]); // 100 ms each
    a.send(p[1], payload.clone()).await?;
    a.send(p[1], payload).await?;
    b.recv().await?;
    assert_eq!(net.now(), Duration::from_millis(110));
    b.recv().await?;
    assert_eq!(net.now(), Duration::from_millis(210));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn egress_limit_is_shared_across_links() -> Result<(), TransportError> {
    let net = Network::builder(1).default_link(LinkSpec::mbit(0.0, 8000.0)).build()?;
    let p = ids(3);
    let a = net.add_peer(p[0])?;
    let (b, c) = (net.add_peer(p[1])?, net.add_peer(p[2])?);
    net.set_egress(p[0], Some(1e6))?; // 1 MB/s out of a, whatever the links allow
    let payload = Bytes::from(vec![0u8; 100_000 - FRAME_HEADER_LEN]);
    a.broadcast(&[p[1], p[2]], payload).await?;
    b.recv().await?;
    assert_eq!(net.now(), Duration::from_millis(100));
    c.recv().await?;
    assert_eq!(net.now(), Duration::from_millis(200));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn clock_sleeps_and_timeouts_are_exact() -> Result<(), TransportError> {
    let net = Network::builder(1).build()?;
    let clock = net.clock();
    clock.sleep(Duration::from_micros(1234)).await;
    assert_eq!(clock.now(), Duration::from_micros(1234));
    let b = net.add_peer(PeerId::simulated(0))?;
    let r = clock.timeout(Duration::from_millis(5), b.recv()).await;
    assert!(r.is_err());
    assert_eq!(clock.now(), Duration::from_micros(6234));
    Ok(())
}

/// A small gossip workload with jitter and loss; returns the delivery trace.
async fn gossip_trace(seed: u64) -> Result<Vec<Delivery>, TransportError> {
    let link = LinkSpec::mbit(5.0, 100.0).with_jitter(Duration::from_millis(3)).with_loss(0.05);
    let net = Network::builder(seed).default_link(link).record_trace(true).build()?;
    let p = ids(8);
    let eps: Vec<_> = p.iter().map(|&id| net.add_peer(id)).collect::<Result<_, _>>()?;
    let mut tasks = Vec::new();
    for (i, ep) in eps.into_iter().enumerate() {
        let p = p.clone();
        let clock = net.clock();
        tasks.push(tokio::spawn(async move {
            for round in 0..5u32 {
                for k in 1..4 {
                    ep.send_msg(p[(i + k) % p.len()], &(i as u32, round)).await?;
                }
                // Take whatever arrives within 20 ms.
                let deadline = clock.now() + Duration::from_millis(20);
                while clock.now() < deadline {
                    let left = deadline - clock.now();
                    if clock.timeout(left, ep.recv()).await.is_err() {
                        break;
                    }
                }
            }
            Ok::<_, TransportError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| TransportError::Setup(e.to_string()))??;
    }
    Ok(net.trace())
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_trace_other_seed_other_trace() -> Result<(), TransportError> {
    let a = gossip_trace(42).await?;
    let b = gossip_trace(42).await?;
    let c = gossip_trace(43).await?;
    assert!(a.len() > 50, "trace too short: {}", a.len());
    assert!(a.len() < 8 * 3 * 5, "no message was lost at 5% loss");
    assert_eq!(a, b);
    assert_ne!(a, c);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn partitions_drop_and_heal() -> Result<(), TransportError> {
    let net = Network::builder(3).build()?;
    let p = ids(3);
    let eps: Vec<_> = p.iter().map(|&id| net.add_peer(id)).collect::<Result<_, _>>()?;
    let cut = net.partition(&[p[0]], &[p[1], p[2]]);
    eps[0].send(p[1], Bytes::from_static(b"lost")).await?;
    eps[2].send(p[0], Bytes::from_static(b"lost")).await?;
    eps[1].send(p[2], Bytes::from_static(b"same side")).await?;
    assert_eq!(&eps[2].recv().await?.payload[..], b"same side");
    assert!(net.clock().timeout(Duration::from_secs(1), eps[1].recv()).await.is_err());
    assert_eq!(net.link_stats(p[0], p[1]).partitioned_messages, 1);
    assert_eq!(net.link_stats(p[2], p[0]).partitioned_messages, 1);
    net.heal(cut);
    eps[0].send(p[1], Bytes::from_static(b"healed")).await?;
    assert_eq!(&eps[1].recv().await?.payload[..], b"healed");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn crash_drops_in_flight_and_fails_handles_then_rejoin_works() -> Result<(), TransportError> {
    let net = Network::builder(4).default_link(LinkSpec::mbit(10.0, 1000.0)).build()?;
    let p = ids(2);
    let (a, b) = (net.add_peer(p[0])?, net.add_peer(p[1])?);
    a.send(p[1], Bytes::from_static(b"in flight")).await?;
    // A receiver blocked in recv when its peer crashes gets an error, not a hang.
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.recv().await }
    });
    tokio::task::yield_now().await;
    net.crash(p[1])?;
    let result = waiting.await.map_err(|e| TransportError::Setup(e.to_string()))?;
    assert!(matches!(result, Err(TransportError::PeerDown(id)) if id == p[1]));
    assert!(matches!(b.send(p[0], Bytes::new()).await, Err(TransportError::PeerDown(_))));
    // Sending to a crashed peer is a documented drop, counted on the link.
    a.send(p[1], Bytes::from_static(b"to the dead")).await?;
    net.clock().sleep(Duration::from_millis(50)).await;
    assert_eq!(net.link_stats(p[0], p[1]).crashed_messages, 2);
    assert_eq!(net.in_flight(), 0);

    let b2 = net.rejoin(p[1])?;
    assert!(matches!(b.try_recv(), Err(TransportError::PeerDown(_))), "old handle stays dead");
    a.send(p[1], Bytes::from_static(b"welcome back")).await?;
    assert_eq!(&b2.recv().await?.payload[..], b"welcome back");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn unknown_peers_and_bad_settings_are_errors() -> Result<(), TransportError> {
    let net = Network::builder(5).build()?;
    let a = net.add_peer(PeerId::simulated(0))?;
    let stranger = PeerId::simulated(99);
    assert!(matches!(a.send(stranger, Bytes::new()).await, Err(TransportError::UnknownPeer(id)) if id == stranger));
    assert!(net.add_peer(PeerId::simulated(0)).is_err(), "duplicate peer");
    assert!(net.slow_down(PeerId::simulated(0), 0.0).is_err());
    assert!(net.crash(stranger).is_err());
    assert!(net.add_peer_in_region(PeerId::simulated(1), "belgium").is_err(), "no region table");
    let big = Bytes::from(vec![0u8; crate::DEFAULT_MAX_FRAME + 1]);
    assert!(matches!(a.send(PeerId::simulated(0), big).await, Err(TransportError::Codec(_))));
    let err = Network::builder(0).default_link(LinkSpec::mbit(1.0, -1.0)).build().unwrap_err();
    assert!(err.to_string().contains("links.default.bandwidth"), "{err}");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn regions_and_slow_peers_shape_the_links() -> Result<(), TransportError> {
    let net = Network::builder(6).regions(RegionTable::geo_distributed()).build()?;
    let p = ids(3);
    let eu = net.add_peer_in_region(p[0], "belgium")?;
    let _eu2 = net.add_peer_in_region(p[1], "germany")?;
    let au = net.add_peer_in_region(p[2], "australia")?;
    assert!(net.link_spec(p[0], p[1])?.latency < net.link_spec(p[0], p[2])?.latency);
    eu.send(p[2], Bytes::from_static(b"g'day")).await?;
    au.recv().await?;
    let one_way = net.link_spec(p[0], p[2])?.latency;
    assert!(net.now() >= one_way && net.now() < one_way + Duration::from_millis(1));
    net.slow_down(p[2], 4.0)?;
    assert_eq!(net.link_spec(p[0], p[2])?.latency, one_way * 4);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn typed_messages_and_decode_errors() -> Result<(), TransportError> {
    let net = Network::builder(7).build()?;
    let p = ids(2);
    let (a, b) = (net.add_peer(p[0])?, net.add_peer(p[1])?);
    a.send(p[1], Bytes::from_static(&[0xff; 3])).await?;
    a.send_msg(p[1], &vec![1u64, 2, 3]).await?;
    let bad = b.recv_msg::<Vec<u64>>().await;
    assert!(matches!(bad, Err(TransportError::Decode { from, .. }) if from == p[0]));
    let (_, good) = b.recv_msg::<Vec<u64>>().await?;
    assert_eq!(good, vec![1, 2, 3]);
    Ok(())
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    assert!(matches!(Network::builder(0).build(), Err(TransportError::Setup(_))));
}

/// A resident tensor reaches a peer of the simulated network as the same handle, and the link counts
/// the bytes its elements would have taken: the same arrival time and traffic as the encoded tensor.
#[tokio::test(start_paused = true)]
async fn a_resident_tensor_arrives_as_its_handle_at_the_time_of_its_bytes() -> Result<(), TransportError> {
    use crate::TensorBytes;
    use crate::resident::Resident;
    use std::sync::Arc;
    let values = vec![0.5f32; 30_000];
    let arrival = |resident: bool| {
        let values = values.clone();
        async move {
            let net = Network::builder(1).default_link(LinkSpec::mbit(5.0, 8.0)).build()?;
            let p = ids(2);
            let (a, b) = (net.add_peer(p[0])?, net.add_peer(p[1])?);
            let handle: Arc<dyn std::any::Any + Send + Sync> = Arc::new(values.clone());
            let tensor = if resident {
                TensorBytes::resident(crate::DType::F32, vec![100, 300], Resident::new(handle.clone()))?
            } else {
                TensorBytes::from_f32(vec![100, 300], &values)?
            };
            a.send_msg(p[1], &(7u32, tensor)).await?;
            let (from, (tag, got)): (PeerId, (u32, TensorBytes)) = b.recv_msg().await?;
            assert_eq!((from, tag, got.shape()), (p[0], 7, &[100usize, 300][..]));
            match got.resident_elements() {
                Some(r) => assert!(resident && Arc::ptr_eq(r.handle(), &handle), "the sender's own handle"),
                None => assert!(!resident && got.to_f32_vec()? == values),
            }
            Ok::<_, TransportError>((net.now(), net.link_stats(p[0], p[1])))
        }
    };
    let (bytes_at, bytes_stats) = arrival(false).await?;
    let (resident_at, resident_stats) = arrival(true).await?;
    assert_eq!(resident_at, bytes_at);
    assert_eq!(LinkStats { resident_bytes: 0, ..resident_stats }, bytes_stats, "the same traffic");
    // The elements and their length prefix, counted but handed over on their device.
    assert_eq!(resident_stats.resident_bytes, 120_004, "{resident_stats:?}");
    assert_eq!(bytes_stats.resident_bytes, 0);
    assert!(bytes_stats.delivered_bytes > 120_000, "{bytes_stats:?}");
    Ok(())
}

/// Resident tensors stay in the process: encoding one outside a collecting send fails, a payload that
/// names elements that did not come with it does not decode, and a transport whose peers are elsewhere
/// refuses attachments.
#[tokio::test(start_paused = true)]
async fn resident_tensors_do_not_leave_the_process() -> Result<(), TransportError> {
    use crate::TensorBytes;
    use crate::resident::{self, Resident};
    let tensor = TensorBytes::resident(crate::DType::F32, vec![4], Resident::new(std::sync::Arc::new(0u8)))?;
    let codec = Codec::default();
    assert!(codec.encode(&tensor).is_err(), "no encoding without somewhere to put the elements");
    let (payload, attachments) = resident::collect(|| codec.encode(&tensor));
    let payload = payload?;
    assert_eq!(attachments.len(), 1, "one attachment, though the codec encodes twice");
    assert!(codec.decode::<TensorBytes>(&payload).is_err(), "the elements are missing");
    let back: TensorBytes = resident::provide(attachments.clone(), || codec.decode(&payload))?;
    assert_eq!(back, tensor);

    /// A transport to peers in other processes: it keeps the trait's defaults.
    #[derive(Clone)]
    struct Remote;
    impl Transport for Remote {
        fn local_peer(&self) -> PeerId {
            PeerId::simulated(0)
        }
        fn codec(&self) -> Codec {
            Codec::default()
        }
        async fn send(&self, _: PeerId, _: Bytes) -> Result<(), TransportError> {
            Ok(())
        }
        async fn recv(&self) -> Result<Envelope, TransportError> {
            Err(TransportError::Closed)
        }
    }
    assert!(!Remote.carries_attachments());
    let refused = Remote.send_msg(PeerId::simulated(1), &tensor).await.unwrap_err();
    assert!(refused.to_string().contains("resident tensors"), "{refused}");
    Ok(())
}
