//! Link models: latency, bandwidth, jitter and loss of one direction of a link, and region tables.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::TransportError;

/// How one direction of a link behaves.
///
/// A message of `B` bytes that starts transmitting at `t` leaves the link at `t + B / bandwidth` and
/// arrives `latency + U(0, jitter)` later. A link sends one message at a time, so messages queue behind
/// each other (and behind the sender's egress limit, if it has one).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Bytes per second.
    pub bandwidth: f64,
    /// Upper bound of a uniform random extra delay per message.
    #[serde(default)]
    pub jitter: Duration,
    /// Probability that a message is lost, in `[0, 1)`.
    #[serde(default)]
    pub loss: f64,
}

impl Default for LinkSpec {
    /// A data-centre link: 0.5 ms, 10 Gbit/s, no jitter, no loss.
    fn default() -> Self {
        Self::mbit(0.5, 10_000.0)
    }
}

impl LinkSpec {
    /// A link with `latency_ms` milliseconds of one-way latency and `mbit_per_s` megabits per second.
    pub fn mbit(latency_ms: f64, mbit_per_s: f64) -> Self {
        Self {
            latency: Duration::from_secs_f64(latency_ms.max(0.0) / 1e3),
            bandwidth: mbit_per_s * 1e6 / 8.0,
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }

    /// The same link with jitter up to `jitter`.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same link losing each message with probability `loss`.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// Time to put `bytes` on the wire.
    pub fn transfer_time(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.bandwidth)
    }

    /// Checks that the numbers describe a link; errors name `field`.
    pub fn validate(&self, field: &str) -> Result<(), TransportError> {
        if !(self.bandwidth.is_finite() && self.bandwidth > 0.0) {
            return Err(TransportError::config(
                format!("{field}.bandwidth"),
                format!("{} is not a positive number of bytes per second", self.bandwidth),
            ));
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err(TransportError::config(
                format!("{field}.loss"),
                format!("{} is not a probability in [0, 1)", self.loss),
            ));
        }
        Ok(())
    }

    /// This link with a peer `factor` times slower: latency multiplied, bandwidth divided.
    pub(crate) fn slowed(mut self, factor: f64) -> Self {
        if factor != 1.0 {
            self.latency = self.latency.mul_f64(factor);
            self.bandwidth /= factor;
        }
        self
    }
}

/// Named regions and the link between every ordered pair of them (and inside each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionTable {
    names: Vec<String>,
    links: BTreeMap<(usize, usize), LinkSpec>,
    intra: LinkSpec,
}

impl RegionTable {
    /// Regions with the given names; links inside a region are `intra`, links between regions must be set
    /// with [`RegionTable::set`] (unset pairs fall back to the network's default link).
    pub fn new(names: impl IntoIterator<Item = impl Into<String>>, intra: LinkSpec) -> Self {
        Self { names: names.into_iter().map(Into::into).collect(), links: BTreeMap::new(), intra }
    }

    /// Sets the link between regions `a` and `b`, both directions.
    pub fn set(&mut self, a: &str, b: &str, spec: LinkSpec) -> Result<(), TransportError> {
        let (i, j) = (self.index(a)?, self.index(b)?);
        self.links.insert((i, j), spec);
        self.links.insert((j, i), spec);
        Ok(())
    }

    /// The region names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The index of region `name`, or an error listing the known regions.
    pub fn index(&self, name: &str) -> Result<usize, TransportError> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            TransportError::config("region", format!("unknown region {name:?}; known: {}", self.names.join(", ")))
        })
    }

    /// The link from region `i` to region `j`, if set.
    pub fn link(&self, i: usize, j: usize) -> Option<LinkSpec> {
        if i == j { Some(self.intra) } else { self.links.get(&(i, j)).copied() }
    }

    /// Twelve cloud regions like those of SkipPipe's geo-distributed experiments, with one-way latencies
    /// taken as half of typical public inter-region round-trip times (approximate, rounded; they set the
    /// shape of a geo-distributed swarm, not any provider's exact figures). Bandwidth between regions:
    /// 1 Gbit/s within a continent, 500 Mbit/s across one ocean, 200 Mbit/s further; 10 Gbit/s inside.
    pub fn geo_distributed() -> Self {
        // (name, continent, longitude-ish position used only for readability below)
        const REGIONS: [&str; 12] = [
            "belgium",
            "netherlands",
            "london",
            "germany",
            "canada",
            "iowa",
            "oregon",
            "los-angeles",
            "japan",
            "taiwan",
            "singapore",
            "australia",
        ];
        // Approximate round-trip times in ms (upper triangle, same order as REGIONS).
        const RTT: [[u16; 12]; 12] = [
            [0, 7, 8, 8, 80, 100, 135, 140, 225, 250, 160, 270],
            [0, 0, 8, 8, 82, 100, 135, 140, 225, 250, 160, 270],
            [0, 0, 0, 14, 75, 95, 130, 135, 220, 245, 165, 265],
            [0, 0, 0, 0, 88, 105, 140, 145, 230, 245, 155, 275],
            [0, 0, 0, 0, 0, 30, 65, 70, 150, 175, 210, 200],
            [0, 0, 0, 0, 0, 0, 35, 45, 130, 150, 190, 175],
            [0, 0, 0, 0, 0, 0, 0, 25, 90, 115, 160, 140],
            [0, 0, 0, 0, 0, 0, 0, 0, 105, 125, 170, 140],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 35, 70, 110],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50, 130],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 95],
            [0; 12],
        ];
        const CONTINENT: [u8; 12] = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3];
        let mut table = Self::new(REGIONS, LinkSpec::mbit(0.5, 10_000.0));
        for i in 0..REGIONS.len() {
            for j in (i + 1)..REGIONS.len() {
                let one_way = f64::from(RTT[i][j]) / 2.0;
                let mbit = match (CONTINENT[i], CONTINENT[j]) {
                    (a, b) if a == b => 1000.0,
                    (0, 1) | (1, 0) | (1, 2) | (2, 1) => 500.0,
                    _ => 200.0,
                };
                let spec = LinkSpec::mbit(one_way, mbit);
                table.links.insert((i, j), spec);
                table.links.insert((j, i), spec);
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_time_is_bytes_over_bandwidth() {
        let link = LinkSpec::mbit(50.0, 80.0); // 10 MB/s
        assert_eq!(link.transfer_time(1_000_000), Duration::from_millis(100));
        assert_eq!(link.latency, Duration::from_millis(50));
    }

    #[test]
    fn invalid_links_are_named() {
        let err = LinkSpec::mbit(1.0, 0.0).validate("links.default").unwrap_err();
        assert!(err.to_string().contains("links.default.bandwidth"), "{err}");
        let err = LinkSpec::mbit(1.0, 1.0).with_loss(1.5).validate("x").unwrap_err();
        assert!(err.to_string().contains("x.loss"), "{err}");
    }

    #[test]
    fn geo_table_is_symmetric_and_complete() -> Result<(), TransportError> {
        let t = RegionTable::geo_distributed();
        let n = t.names().len();
        for i in 0..n {
            for j in 0..n {
                let (a, b) = (t.link(i, j).expect("set"), t.link(j, i).expect("set"));
                assert_eq!(a, b);
                a.validate("geo")?;
            }
        }
        let eu = t.link(t.index("belgium")?, t.index("germany")?).expect("set");
        let far = t.link(t.index("belgium")?, t.index("australia")?).expect("set");
        assert!(eu.latency < far.latency && eu.bandwidth > far.bandwidth);
        assert!(t.index("mars").is_err());
        Ok(())
    }
}
