use super::*;
use crate::TransportExt;

fn identities(n: usize) -> Vec<Identity> {
    (0..n).map(|_| Identity::generate().expect("random source")).collect()
}

/// A book that lists `ids` (addresses are not used by this endpoint).
fn book(ids: &[&Identity]) -> PeerBook {
    let mut book = PeerBook::new();
    for id in ids {
        book.insert(id.peer_id(), SocketAddr::from(([0, 0, 0, 0], 0)), None);
    }
    book
}

fn quick() -> Config {
    Config { connect_timeout: Duration::from_secs(10), stream_timeout: Duration::from_secs(2), ..Config::default() }
}

async fn relay(identity: &Identity) -> Result<Endpoint, TransportError> {
    Endpoint::start(identity, PeerBook::new(), Config { role: Role::Relay, ..quick() }).await
}

async fn member(
    identity: &Identity,
    book: PeerBook,
    relay: &Endpoint,
    relay_only: bool,
) -> Result<Endpoint, TransportError> {
    let bootstrap = relay.listen_addrs();
    Endpoint::start(identity, book, Config { bootstrap, relay_only, ..quick() }).await
}

/// A relay and two members that know only its address (and list each other).
async fn relay_and_two_members(relay_only: bool) -> Result<(Endpoint, Endpoint, Endpoint), TransportError> {
    let ids = identities(3);
    let relay = relay(&ids[0]).await?;
    let listed = book(&[&ids[1], &ids[2]]);
    let a = member(&ids[1], listed.clone(), &relay, relay_only).await?;
    let b = member(&ids[2], listed, &relay, relay_only).await?;
    Ok((relay, a, b))
}

async fn recv_within(ep: &Endpoint, d: Duration) -> Option<Envelope> {
    tokio::time::timeout(d, ep.recv()).await.ok().and_then(Result::ok)
}

#[test]
fn the_libp2p_id_of_a_key_leads_back_to_its_swarmlab_id() -> Result<(), TransportError> {
    for identity in identities(4) {
        let libp2p = keypair(&identity)?.public().to_peer_id();
        assert_eq!(swarmlab_id(&libp2p), Some(identity.peer_id()));
    }
    // A secp256k1 or RSA id (hashed, not embedded) has no swarmlab id.
    let hashed = libp2p::PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &[7; 32]).expect("32 bytes"));
    assert_eq!(hashed.ok().and_then(|h| swarmlab_id(&h)), None);
    Ok(())
}

/// A record found in the table is believed only if its key proves the id it was found under, and names
/// an address this node may dial; anything else is refused by name.
#[test]
fn a_record_is_checked_before_its_addresses_are_dialled() -> Result<(), TransportError> {
    let ids = identities(2);
    let (owner, other) = (ids[0].peer_id(), ids[1].peer_id());
    let codec = Codec::default();
    let direct: Multiaddr = "/ip4/10.0.0.1/udp/4000/quic-v1".parse().expect("multiaddr");
    let relayed: Multiaddr =
        format!("/ip4/10.0.0.9/udp/4001/quic-v1/p2p/{}/p2p-circuit", keypair(&ids[1])?.public().to_peer_id())
            .parse()
            .expect("multiaddr");
    let value = |addrs: &[&Multiaddr]| -> Result<Vec<u8>, TransportError> {
        let public_key = keypair(&ids[0])?.public().encode_protobuf();
        let record = PeerRecord { public_key, addrs: addrs.iter().map(|a| a.to_vec()).collect() };
        Ok(codec.encode(&record)?.to_vec())
    };
    let both = value(&[&direct, &relayed])?;
    let (libp2p, addrs) = PeerRecord::read(owner, &both, codec, false).map_err(TransportError::Setup)?;
    assert_eq!((libp2p, addrs), (keypair(&ids[0])?.public().to_peer_id(), vec![direct.clone(), relayed.clone()]));
    let (_, addrs) = PeerRecord::read(owner, &both, codec, true).map_err(TransportError::Setup)?;
    assert_eq!(addrs, vec![relayed]);
    let refused =
        |peer, value: &[u8], relay_only| PeerRecord::read(peer, value, codec, relay_only).expect_err("refused");
    assert!(refused(other, &both, false).contains("does not prove this id"));
    assert!(refused(owner, &value(&[&direct])?, true).contains("no address this node may dial"));
    assert!(refused(owner, b"\x01\x02", false).contains("malformed record"));
    let garbled_key = codec.encode(&PeerRecord { public_key: vec![7; 36], addrs: Vec::new() })?.to_vec();
    assert!(refused(owner, &garbled_key, false).contains("record's key"));
    Ok(())
}

#[test]
fn a_member_without_a_bootstrap_or_with_a_malformed_one_is_refused_by_name() {
    let identity = Identity::generate().expect("random source");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let start = |config: Config| rt.block_on(Endpoint::start(&identity, PeerBook::new(), config));
    let err = start(quick()).expect_err("no bootstrap");
    assert!(err.to_string().contains("p2p.bootstrap"), "{err}");
    let no_id: Multiaddr = "/ip4/127.0.0.1/udp/4000/quic-v1".parse().expect("multiaddr");
    let err = start(Config { bootstrap: vec![no_id], ..quick() }).expect_err("no /p2p");
    assert!(err.to_string().contains("does not end in /p2p/"), "{err}");
    let err = start(Config { connect_timeout: Duration::ZERO, role: Role::Relay, ..quick() }).expect_err("zero");
    assert!(err.to_string().contains("p2p.connect_timeout"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_relay_is_unreachable_says_it_could_not_join() -> Result<(), TransportError> {
    let ids = identities(2);
    // A relay's address, on a port nothing listens on.
    let (id, _) = split_bootstrap(&relay(&ids[0]).await?.listen_addrs()[0])?;
    let dead: Multiaddr = format!("/ip4/127.0.0.1/udp/9/quic-v1/p2p/{id}").parse().expect("multiaddr");
    let config = Config { bootstrap: vec![dead], connect_timeout: Duration::from_secs(1), ..quick() };
    let err = Endpoint::start(&ids[1], PeerBook::new(), config).await.expect_err("nobody there");
    assert!(err.to_string().contains("could not join the swarm"), "{err}");
    Ok(())
}

/// Two members that know only the relay's address find each other by their swarmlab ids, exchange
/// messages both ways, and (on loopback, with nothing in between) end up connected directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_find_each_other_from_one_bootstrap_address_and_connect_directly() -> Result<(), TransportError> {
    let (_relay, a, b) = relay_and_two_members(false).await?;
    a.send_msg(b.local_peer(), &"hello".to_string()).await?;
    let got = recv_within(&b, Duration::from_secs(5)).await.expect("a's message");
    assert_eq!(got.from, a.local_peer());
    b.send_msg(a.local_peer(), &"and back".to_string()).await?;
    let (from, text): (PeerId, String) = tokio::time::timeout(Duration::from_secs(5), a.recv_msg())
        .await
        .map_err(|_| TransportError::Setup("no answer".into()))??;
    assert_eq!((from, text.as_str()), (b.local_peer(), "and back"));
    // Both addresses in b's record are dialled at once; the relayed connection may come first on a busy
    // machine, and is then upgraded.
    let path = a.paths()[&b.local_peer()];
    assert!(path.direct, "{path:?}");
    Ok(())
}

/// With `relay_only`, every byte goes through the relay, and large messages arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_members_exchange_large_messages_through_the_relay() -> Result<(), TransportError> {
    let (_relay, a, b) = relay_and_two_members(true).await?;
    let big = Bytes::from((0..3 << 20).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>());
    for _ in 0..3 {
        a.send(b.local_peer(), big.clone()).await?;
    }
    for _ in 0..3 {
        let got = recv_within(&b, Duration::from_secs(10)).await.expect("a large message");
        assert_eq!(got.payload, big);
    }
    let path = a.paths()[&b.local_peer()];
    assert!(path.relayed && !path.direct && !path.hole_punched, "{path:?}");
    Ok(())
}

/// A message from an id outside the peers file is dropped and recorded; listed ids still get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_ids_outside_the_peers_file_are_dropped() -> Result<(), TransportError> {
    let ids = identities(4);
    let relay = relay(&ids[0]).await?;
    let a = member(&ids[1], book(&[&ids[1], &ids[2]]), &relay, false).await?;
    let friend = member(&ids[2], book(&[&ids[1]]), &relay, false).await?;
    let stranger = member(&ids[3], book(&[&ids[1]]), &relay, false).await?;
    // The refused stream is stopped: the stranger may learn it at once, or not.
    let _ = stranger.send_msg(a.local_peer(), &1u32).await;
    friend.send_msg(a.local_peer(), &2u32).await?;
    let got = recv_within(&a, Duration::from_secs(5)).await.expect("the friend's message");
    assert_eq!(got.from, friend.local_peer());
    assert!(recv_within(&a, Duration::from_millis(300)).await.is_none());
    let faults = a.faults();
    assert!(faults.iter().any(|f| f.peer == Some(stranger.local_peer())), "{faults:?}");
    Ok(())
}
