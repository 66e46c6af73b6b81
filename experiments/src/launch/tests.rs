//! Launch's own tests: flags parse, node places match their key files.

use super::*;

#[test]
fn node_i_has_key_file_i_and_rank_i_in_the_peers_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let places = make_places(dir.path(), 5, false, None)?;
    let book = PeerBook::load(dir.path().join("peers.toml"))?;
    for (i, (place, id)) in places.iter().zip(book.ids()).enumerate() {
        assert_eq!(place.key, dir.path().join("keys").join(format!("node{i}.key")));
        assert_eq!(Identity::load(&place.key)?.peer_id(), id, "node {i}");
        assert_eq!(book.iter().nth(i).and_then(|(_, e)| e.name.clone()), Some(format!("node{i}")));
    }
    Ok(())
}

#[test]
fn kills_and_progress_lines_parse() {
    assert_eq!("3@10".parse::<Kill>(), Ok(Kill { node: 3, round: 10 }));
    assert!("3".parse::<Kill>().unwrap_err().contains("NODE@ROUND"));
    assert!("x@1".parse::<Kill>().unwrap_err().contains("node number"));
    assert_eq!(progress("round 12/40"), Some(12));
    assert_eq!(progress("step 3/100"), Some(3));
    assert_eq!(progress("agent 0: reward"), None);
}

#[test]
fn the_paths_table_puts_each_reported_path_in_its_row_and_column() {
    let journal: Vec<String> = [
        "launched 3 sapo nodes",
        "node 1: p2p path to node 2: direct (hole punched after the relay's introduction)",
        "node 2: p2p path to node 1: through the relay",
        "node 0: p2p path to node 1: direct",
    ]
    .map(String::from)
    .to_vec();
    let table = report::paths_table(3, &journal);
    let row = |i: usize| table.lines().find(|l| l.starts_with(&format!("| {i} |"))).unwrap_or_default().to_owned();
    assert_eq!(row(0), "| 0 |  | direct | - |");
    assert_eq!(row(1), "| 1 | - |  | direct (hole punched after the relay's introduction) |");
    assert_eq!(row(2), "| 2 | - | through the relay |  |");
    assert!(table.contains("| from \\ to | 0 | 1 | 2 |"), "{table}");
}
