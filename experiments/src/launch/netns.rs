//! `swarmlab launch --netns`: every node in a network namespace of its own, as if on hosts of its own.
//! The namespaces are joined by veth pairs to a bridge in one more namespace (the "switch"), each node
//! owns an address of one private /24 and listens on it; nothing outside the namespaces is touched.
//! Creating namespaces needs root (`ip netns add`); the namespaces, and with them every veth, are
//! deleted when the launch ends, however it ends.
//!
//! With `--behind-nat`, such a node sits behind a router of its own instead: the node's namespace holds
//! a private address (`10.214.<i+1>.2`) whose default route leads to a router namespace on the bridge,
//! which masquerades (nftables) everything it forwards — a home router, so no other node can dial it.
//! With `--p2p`, one more namespace on the bridge holds the relay (`10.213.0.254`).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The port every node listens on inside its namespace (each namespace has ports of its own).
const PORT: u16 = 7400;

/// The namespaces of one launch: a switch and one per node. Dropping it deletes them.
pub(crate) struct Namespaces {
    tag: String,
    nodes: usize,
    /// Nodes each behind a NAT router of its own.
    behind_nat: Vec<usize>,
    /// Whether a namespace holds a relay.
    relay: bool,
    /// Whether the switch holds an address per node for its link emulator.
    emulated: bool,
    created: Vec<String>,
}

/// Runs `ip` with `args`; an error names the command and what `ip` said.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!("`ip {}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Loads an nftables ruleset into namespace `ns`; an error names what `nft` said.
fn nft(ns: &str, ruleset: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `nft` (nftables)")?;
    child.stdin.take().context("nft's input")?.write_all(ruleset.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("`nft` in {ns}: {} (is nftables installed?)", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A home router's rules: masquerade everything forwarded out of `eth0` (the bridge side), and drop what
/// arrives for the router itself unasked. Dropping matters for hole punching: an unsolicited packet that
/// were delivered would leave a connection-tracking entry on the router's public port, and the node's own
/// packet to that peer a moment later would then be masqueraded from another port.
const ROUTER_RULES: &str = "table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname \"eth0\" masquerade
  }
}
table ip filter {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
  }
}
";

impl Namespaces {
    /// Namespaces for `nodes` nodes, named after this process (so that concurrent launches never meet).
    /// `behind_nat` nodes each get a NAT router of their own; `relay` adds a namespace for a relay;
    /// `emulated` gives the switch an address per node for the link emulator in front of it.
    pub(crate) fn create(nodes: usize, behind_nat: &[usize], relay: bool, emulated: bool) -> Result<Self> {
        if nodes > 250 || (emulated && nodes > 100) {
            bail!(
                "--netns: {nodes} nodes do not fit one /24 (100 with --emulate-link: each has an emulator's address too)"
            );
        }
        if let Some(i) = behind_nat.iter().find(|&&i| i >= nodes) {
            bail!("--behind-nat {i}: there are only nodes 0 to {}", nodes - 1);
        }
        let mut spaces = Self {
            tag: format!("swl{}", std::process::id()),
            nodes,
            behind_nat: behind_nat.to_vec(),
            relay,
            emulated,
            created: Vec::new(),
        };
        spaces.build().context("--netns: could not set up network namespaces (this needs root and iproute2)")?;
        Ok(spaces)
    }

    /// The namespace of the bridge that joins the others.
    pub(crate) fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    /// The namespace of node `i`.
    pub(crate) fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    /// The address node `i` listens on: on the bridge, or its private address behind its router.
    pub(crate) fn addr(&self, i: usize) -> SocketAddr {
        let ip = if self.behind_nat.contains(&i) {
            Ipv4Addr::new(10, 214, i as u8 + 1, 2)
        } else {
            Ipv4Addr::new(10, 213, 0, i as u8 + 1)
        };
        SocketAddr::new(IpAddr::V4(ip), PORT)
    }

    /// Where the link emulator in front of node `i` listens (an address of the switch's).
    pub(crate) fn emulator_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 213, 0, i as u8 + 101)), PORT)
    }

    /// The relay's namespace and address, if there is one.
    pub(crate) fn relay(&self) -> Option<(String, SocketAddr)> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 213, 0, 254)), PORT);
        self.relay.then(|| (format!("{}-relay", self.tag), addr))
    }

    /// Puts namespace `ns` on the bridge as `eth0` at `ip`, through the switch's port `port`.
    fn plug(&self, ns: &str, port: &str, address: Ipv4Addr) -> Result<()> {
        let switch = self.switch();
        ip(&["link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", &switch])?;
        ip(&["-n", &switch, "link", "set", port, "master", "br0", "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("{address}/24"), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// Node `i` behind a router of its own: the router is on the bridge at the node's public address
    /// and masquerades; the node reaches the world only through it.
    fn behind_router(&mut self, i: usize) -> Result<()> {
        let (ns, router) = (self.name(i), format!("{}-nat{i}", self.tag));
        self.add(router.clone())?;
        self.plug(&router, &format!("r{i}"), Ipv4Addr::new(10, 213, 0, i as u8 + 1))?;
        let (inside, gateway) = (Ipv4Addr::new(10, 214, i as u8 + 1, 2), Ipv4Addr::new(10, 214, i as u8 + 1, 1));
        ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", "lan0", "netns", &router])?;
        ip(&["-n", &router, "addr", "add", &format!("{gateway}/24"), "dev", "lan0"])?;
        ip(&["-n", &router, "link", "set", "lan0", "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{inside}/24"), "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &gateway.to_string()])?;
        let forward = Command::new("ip")
            .args(["netns", "exec", &router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            .output()
            .context("cannot run sysctl")?;
        if !forward.status.success() {
            bail!("forwarding in {router}: {}", String::from_utf8_lossy(&forward.stderr).trim());
        }
        nft(&router, ROUTER_RULES)
    }

    fn add(&mut self, name: String) -> Result<()> {
        ip(&["netns", "add", &name])?;
        self.created.push(name);
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let switch = self.switch();
        self.add(switch.clone())?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for i in 0..self.nodes {
            let ns = self.name(i);
            self.add(ns.clone())?;
            if self.behind_nat.contains(&i) {
                self.behind_router(i)?;
            } else {
                // The node's end is `eth0` in its namespace; the switch's end is `n<i>` on the bridge.
                self.plug(&ns, &format!("n{i}"), Ipv4Addr::new(10, 213, 0, i as u8 + 1))?;
            }
        }
        if self.emulated {
            for i in 0..self.nodes {
                ip(&["-n", &switch, "addr", "add", &format!("{}/24", self.emulator_addr(i).ip()), "dev", "br0"])?;
            }
        }
        if let Some((ns, addr)) = self.relay() {
            self.add(ns.clone())?;
            let IpAddr::V4(ip) = addr.ip() else { bail!("the relay's address is IPv4") };
            self.plug(&ns, "relay", ip)?;
        }
        Ok(())
    }

    /// A line for the launch's journal.
    pub(crate) fn describe(&self) -> String {
        let mut text = format!(
            "every node in a network namespace of its own ({}-<i>), at 10.213.0.<i+1>:{PORT}, joined by veth pairs to a bridge in {}",
            self.tag,
            self.switch()
        );
        if !self.behind_nat.is_empty() {
            let nodes: Vec<String> = self.behind_nat.iter().map(ToString::to_string).collect();
            text += &format!(
                "; nodes {} each behind a NAT router of its own ({}-nat<i>, masquerading as 10.213.0.<i+1>; the node at 10.214.<i+1>.2)",
                nodes.join(", "),
                self.tag
            );
        }
        if let Some((ns, addr)) = self.relay() {
            text += &format!("; the relay in {ns} at {addr}");
        }
        if self.emulated {
            text += "; a link emulator in front of each node, in the switch's namespace at 10.213.0.<i+101>";
        }
        text
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &name]) {
                eprintln!("[launch] could not delete network namespace {name}: {e:#}");
            }
        }
    }
}
