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

/// One-way latencies a configured link may have, in milliseconds (up to ten minutes).
pub const LATENCY_MS: std::ops::RangeInclusive<f64> = 0.0..=600_000.0;

/// Bandwidths a configured link may have, in megabits per second (1 kbit/s to 10 Tbit/s).
pub const MBIT_PER_S: std::ops::RangeInclusive<f64> = 0.001..=10_000_000.0;

impl LinkSpec {
    /// A link with `latency_ms` milliseconds of one-way latency and `mbit_per_s` megabits per second. It
    /// never panics: a latency too large for a `Duration` saturates, a negative or NaN one is 0, and the
    /// bandwidth is taken as given ([`LinkSpec::validate`] refuses what is not positive). Use
    /// [`LinkSpec::try_mbit`] for numbers that come from outside.
    pub fn mbit(latency_ms: f64, mbit_per_s: f64) -> Self {
        let latency = if latency_ms > 0.0 {
            Duration::try_from_secs_f64(latency_ms / 1e3).unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        };
        Self { latency, bandwidth: mbit_per_s * 1e6 / 8.0, jitter: Duration::ZERO, loss: 0.0 }
    }

    /// [`LinkSpec::mbit`] for configured numbers: each must be finite and within its range, else an error
    /// naming `<field>.latency_ms` or `<field>.mbit_per_s` (or the names given) and the range.
    pub fn try_mbit(latency_ms: f64, mbit_per_s: f64, fields: (&str, &str)) -> Result<Self, TransportError> {
        if !LATENCY_MS.contains(&latency_ms) {
            return Err(TransportError::config(
                fields.0,
                format!("{latency_ms} is not a latency in [{}, {}] ms", LATENCY_MS.start(), LATENCY_MS.end()),
            ));
        }
        if !MBIT_PER_S.contains(&mbit_per_s) {
            return Err(TransportError::config(
                fields.1,
                format!("{mbit_per_s} is not a bandwidth in [{}, {}] Mbit/s", MBIT_PER_S.start(), MBIT_PER_S.end()),
            ));
        }
        Ok(Self::mbit(latency_ms, mbit_per_s))
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
    /// Saturates at [`Duration::MAX`] (a link too slow to finish ever), never panics.
    pub fn transfer_time(&self, bytes: usize) -> Duration {
        Duration::try_from_secs_f64(bytes as f64 / self.bandwidth).unwrap_or(Duration::MAX)
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
    fn configured_links_are_checked_and_never_panic() {
        let fields = ("network.latency_ms", "network.mbit_per_s");
        for bad in [f64::INFINITY, 1e300, f64::NAN, -1.0] {
            let err = LinkSpec::try_mbit(bad, 100.0, fields).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("network.latency_ms") && err.contains("600000"), "{bad}: {err}");
        }
        for bad in [1e-300, 0.0, f64::NAN, f64::INFINITY, -5.0] {
            let err = LinkSpec::try_mbit(10.0, bad, fields).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("network.mbit_per_s"), "{bad}: {err}");
        }
        assert!(LinkSpec::try_mbit(10.0, 100.0, fields).is_ok());
        // The unchecked constructor saturates, and so do transfer times.
        let slow = LinkSpec::mbit(f64::INFINITY, 1e-300);
        assert_eq!(slow.latency, Duration::MAX);
        assert_eq!(slow.transfer_time(1 << 20), Duration::MAX);
        assert_eq!(LinkSpec::mbit(f64::NAN, 1.0).latency, Duration::ZERO);
        assert_eq!(LinkSpec::mbit(-3.0, 1.0).latency, Duration::ZERO);
    }

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
