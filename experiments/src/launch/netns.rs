//! `swarmlab launch --netns`: every node in a network namespace of its own, as if on hosts of its own.
//! The namespaces are joined by veth pairs to a bridge in one more namespace (the "switch"), each node
//! owns an address of one private /24 and listens on it; nothing outside the namespaces is touched.
//! Creating namespaces needs root (`ip netns add`); the namespaces, and with them every veth, are
//! deleted when the launch ends, however it ends.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The port every node listens on inside its namespace (each namespace has ports of its own).
const PORT: u16 = 7400;

/// The namespaces of one launch: a switch and one per node. Dropping it deletes them.
pub(crate) struct Namespaces {
    tag: String,
    nodes: usize,
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

impl Namespaces {
    /// Namespaces for `nodes` nodes, named after this process (so that concurrent launches never meet).
    pub(crate) fn create(nodes: usize) -> Result<Self> {
        if nodes > 250 {
            bail!("--netns: {nodes} nodes do not fit one /24");
        }
        let mut spaces = Self { tag: format!("swl{}", std::process::id()), nodes, created: Vec::new() };
        spaces.build().context("--netns: could not set up network namespaces (this needs root and iproute2)")?;
        Ok(spaces)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    /// The namespace of node `i`.
    pub(crate) fn name(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    /// The address node `i` listens on.
    pub(crate) fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 213, 0, i as u8 + 1)), PORT)
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
            let (ns, addr) = (self.name(i), self.addr(i));
            self.add(ns.clone())?;
            // The node's end is `eth0` in its namespace; the switch's end is `n<i>` on the bridge.
            let port = format!("n{i}");
            ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &switch])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", addr.ip()), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// A line for the launch's journal.
    pub(crate) fn describe(&self) -> String {
        format!(
            "every node in a network namespace of its own ({}-<i>), at 10.213.0.<i+1>:{PORT}, joined by veth pairs to a bridge in {}",
            self.tag,
            self.switch()
        )
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
