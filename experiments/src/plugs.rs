//! The plug registry: one table per plug kind — synchronisation ([`OuterSync`]), routing ([`Router`]),
//! recovery ([`Recovery`]) and stage rebuilding ([`StageRebuild`]) — from a name to a constructor.
//!
//! An arm of a run configuration names each plug by its registered name, with its settings beside it:
//!
//! ```toml
//! [[arms]]
//! label = "NoLoCo"
//! stages = 2
//! replicas = 8
//! sync = { kind = "noloco", every = 20, group_size = 2 }  # or sync = "noloco" for its defaults
//! routing = "random"
//! ```
//!
//! Each protocol's settings are its own serde type (`noloco::NoLoCo`, `checkfree::CheckFree`, …) with
//! unknown fields refused, so a setting that does not belong to the chosen protocol is a parse error that
//! names it. A new protocol is one registration, before the command line is parsed:
//!
//! ```ignore
//! experiments::plugs::register(|r| r.sync("periodic_average", |s: PeriodicAverage, _| Ok(Arc::new(s))));
//! ```
//!
//! (`experiments/examples/periodic_average.rs` does exactly this and runs from a TOML file.)

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use anyhow::{Context, Result, anyhow, bail};
use pipeline::{DataParallel, FixedRouter, Independent, OuterSync, PipelineSpec, Recovery, Router, StageRebuild};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A plug chosen in a configuration: its registered name and its settings (the protocol's own type,
/// parsed when the plug is built).
#[derive(Debug, Clone, PartialEq)]
pub struct Plug {
    /// The registered name.
    pub kind: String,
    /// Its settings; empty for the protocol's defaults.
    pub settings: toml::Table,
}

impl Plug {
    /// The plug `kind` with its default settings.
    pub fn named(kind: &str) -> Self {
        Self { kind: kind.into(), settings: toml::Table::new() }
    }

    /// The plug `kind` with `settings` (any serde type; every field is written out).
    pub fn with<T: Serialize>(kind: &str, settings: &T) -> Self {
        let settings = match toml::Value::try_from(settings) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        Self { kind: kind.into(), settings }
    }

    /// The settings as the protocol's type `T` (its defaults for the fields not given).
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(toml::Value::Table(self.settings.clone()))
            .map_err(|e| anyhow!("{} settings: {}", self.kind, e.to_string().trim()))
    }

    /// An integer setting, if given (for conventions every protocol may follow, such as `every`).
    pub fn int(&self, name: &str) -> Option<i64> {
        self.settings.get(name).and_then(toml::Value::as_integer)
    }
}

impl Serialize for Plug {
    /// A bare name when the settings are the defaults, else a table with `kind` first.
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.settings.is_empty() {
            return s.serialize_str(&self.kind);
        }
        let mut table = toml::Table::new();
        table.insert("kind".into(), toml::Value::String(self.kind.clone()));
        table.extend(self.settings.clone());
        table.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Plug {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match toml::Value::deserialize(d)? {
            toml::Value::String(kind) => Ok(Self::named(&kind)),
            toml::Value::Table(mut settings) => match settings.remove("kind") {
                Some(toml::Value::String(kind)) => Ok(Self { kind, settings }),
                _ => Err(D::Error::custom("a plug table needs `kind = \"<name>\"`")),
            },
            other => Err(D::Error::custom(format!(
                "expected a plug name or a table with `kind`, found {}",
                other.type_str()
            ))),
        }
    }
}

/// What a constructor may look at: the arm's pipeline (grid, model, world, seed) as built so far with
/// the baseline plugs, and the run's recovery settings.
pub struct PlugContext<'a> {
    /// The arm's pipeline.
    pub spec: &'a PipelineSpec,
    /// What a rebuild protocol falls back to when it cannot rebuild a stage.
    pub fallback: pipeline::Fallback,
    /// The run's checkpoint schedule: steps between checkpoints and storage bandwidth (bytes/s).
    pub checkpoints: (u64, f64),
}

type Ctor<T> = Arc<dyn Fn(&Plug, &PlugContext<'_>) -> Result<T> + Send + Sync>;

/// The four tables.
#[derive(Default)]
pub struct Registry {
    sync: BTreeMap<String, Ctor<Arc<dyn OuterSync>>>,
    routing: BTreeMap<String, Ctor<Arc<dyn Router>>>,
    recovery: BTreeMap<String, Ctor<Arc<dyn Recovery>>>,
    rebuild: BTreeMap<String, Ctor<Arc<dyn StageRebuild>>>,
}

/// Wraps a typed constructor: parse the settings as `S`, then build.
fn typed<S: DeserializeOwned, T>(
    build: impl Fn(S, &PlugContext<'_>) -> Result<T> + Send + Sync + 'static,
) -> Ctor<T> {
    Arc::new(move |plug, ctx| build(plug.settings()?, ctx))
}

/// The settings of data parallelism (`all_reduce`, `tree_all_reduce`): elastic or not, and how long the
/// group's leader waits for a member each step when it is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataParallelSettings {
    /// Form the group each step from the replicas that are there ([`DataParallel`]'s `elastic`).
    #[serde(default)]
    pub elastic: bool,
    /// The leader's wait for a member, in seconds (elastic only; 1 by default).
    #[serde(default)]
    pub quorum_timeout_s: Option<f64>,
}

impl DataParallelSettings {
    fn build(self, base: DataParallel) -> Result<Arc<dyn OuterSync>> {
        let elastic = match (self.elastic, self.quorum_timeout_s) {
            (false, Some(_)) => bail!("sync.quorum_timeout_s: only for an elastic group (elastic = true)"),
            (false, None) => None,
            (true, wait) => Some(pipeline::sync::quorum_wait("sync.quorum_timeout_s", wait.unwrap_or(1.0))?),
        };
        Ok(Arc::new(DataParallel { elastic, ..base }))
    }
}

/// The settings of a plug that has none: only an empty table is accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl Registry {
    /// Registers an outer synchronisation.
    pub fn sync<S: DeserializeOwned>(
        &mut self,
        name: &str,
        build: impl Fn(S, &PlugContext<'_>) -> Result<Arc<dyn OuterSync>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.sync.insert(name.into(), typed(build));
        self
    }

    /// Registers a router.
    pub fn routing<S: DeserializeOwned>(
        &mut self,
        name: &str,
        build: impl Fn(S, &PlugContext<'_>) -> Result<Arc<dyn Router>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.routing.insert(name.into(), typed(build));
        self
    }

    /// Registers a recovery strategy.
    pub fn recovery<S: DeserializeOwned>(
        &mut self,
        name: &str,
        build: impl Fn(S, &PlugContext<'_>) -> Result<Arc<dyn Recovery>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.recovery.insert(name.into(), typed(build));
        self
    }

    /// Registers a stage-rebuild protocol; `recovery = "<name>"` then rebuilds lost stages with it (and
    /// falls back to the run's `[recovery] fallback` where it cannot).
    pub fn rebuild<S: DeserializeOwned>(
        &mut self,
        name: &str,
        build: impl Fn(S, &PlugContext<'_>) -> Result<Arc<dyn StageRebuild>> + Send + Sync + 'static,
    ) -> &mut Self {
        self.rebuild.insert(name.into(), typed(build));
        self
    }

    /// The protocols this project ships.
    fn builtin() -> Self {
        let mut r = Self::default();
        r.sync("all_reduce", |d: DataParallelSettings, _| d.build(DataParallel::RING))
            .sync("tree_all_reduce", |d: DataParallelSettings, _| d.build(DataParallel::TREE))
            .sync("none", |_: NoSettings, _| Ok(Arc::new(Independent)))
            .sync("diloco", |d: noloco::DiLoCo, _| Ok(Arc::new(d)))
            .sync("noloco", |n: noloco::NoLoCo, ctx| Ok(Arc::new(noloco::NoLoCo { seed: n.seed ^ ctx.spec.seed, ..n })));
        r.routing("fixed", |_: NoSettings, _| Ok(Arc::new(FixedRouter)))
            .routing("random", |_: NoSettings, ctx| Ok(Arc::new(noloco::RandomRouter { seed: ctx.spec.seed })))
            .routing("out_of_order", |_: NoSettings, _| Ok(Arc::new(checkfree::OutOfOrderRouter)))
            .routing("skippipe", |s: skippipe::Scheduling, ctx| {
                let router = skippipe::ScheduledRouter::for_pipeline(ctx.spec, &s)
                    .context("scheduling the SkipPipe paths")?;
                Ok(Arc::new(router))
            });
        r.recovery("checkpoint", |_: NoSettings, ctx| {
            let (every, bytes_per_s) = ctx.checkpoints;
            Ok(Arc::new(pipeline::CheckpointRestart { every, bytes_per_s }))
        })
        .recovery("redundant", |_: NoSettings, _| Ok(Arc::new(pipeline::Redundant)));
        r.rebuild("checkfree", |c: checkfree::CheckFree, _| Ok(Arc::new(c)))
            .rebuild("checkfree_plus", |c: checkfree::CheckFreePlus, _| Ok(Arc::new(c)))
            .rebuild("naive_copy", |c: checkfree::NaiveCopy, _| Ok(Arc::new(c)))
            .rebuild("random_reinit", |c: checkfree::RandomReinit, _| Ok(Arc::new(c)));
        r
    }

    fn names<T>(table: &BTreeMap<String, T>) -> String {
        table.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }

    /// Builds `plug` from `table`; an unknown name is an error listing the known ones.
    fn build<T>(table: &BTreeMap<String, Ctor<T>>, plug: &Plug, ctx: &PlugContext<'_>) -> Result<T> {
        match table.get(&plug.kind) {
            Some(build) => build(plug, ctx),
            None => bail!("{:?} is not one of {}", plug.kind, Self::names(table)),
        }
    }

    /// Builds an arm's synchronisation.
    pub fn build_sync(&self, plug: &Plug, ctx: &PlugContext<'_>) -> Result<Arc<dyn OuterSync>> {
        Self::build(&self.sync, plug, ctx)
    }

    /// Builds an arm's router.
    pub fn build_routing(&self, plug: &Plug, ctx: &PlugContext<'_>) -> Result<Arc<dyn Router>> {
        Self::build(&self.routing, plug, ctx)
    }

    /// Builds an arm's recovery: a recovery strategy, or a rebuild protocol with the run's fallback.
    pub fn build_recovery(&self, plug: &Plug, ctx: &PlugContext<'_>) -> Result<Arc<dyn Recovery>> {
        if let Some(build) = self.recovery.get(&plug.kind) {
            return build(plug, ctx);
        }
        match self.rebuild.get(&plug.kind) {
            Some(build) => Ok(Arc::new(pipeline::Rebuild { protocol: build(plug, ctx)?, fallback: ctx.fallback })),
            None => bail!(
                "{:?} is not one of {}, {}",
                plug.kind,
                Self::names(&self.recovery),
                Self::names(&self.rebuild)
            ),
        }
    }
}

fn global() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(Registry::builtin()))
}

/// Adds to the process's registry (call before parsing configurations that use what it adds).
pub fn register(f: impl FnOnce(&mut Registry)) {
    let mut registry = global().write().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut registry);
}

/// Runs `f` with the process's registry.
pub(crate) fn with<R>(f: impl FnOnce(&Registry) -> R) -> R {
    let registry = global().read().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugs_read_as_a_name_or_a_table_and_write_back_the_same() -> Result<()> {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Arm {
            sync: Plug,
        }
        let bare: Arm = toml::from_str("sync = \"noloco\"")?;
        assert_eq!(bare.sync, Plug::named("noloco"));
        assert_eq!(toml::to_string(&bare)?.trim(), "sync = \"noloco\"");
        let table: Arm = toml::from_str("sync = { kind = \"noloco\", every = 20 }")?;
        assert_eq!(table.sync.kind, "noloco");
        assert_eq!(table.sync.int("every"), Some(20));
        assert_eq!(toml::from_str::<Arm>(&toml::to_string(&table)?)?, table);
        let err = toml::from_str::<Arm>("sync = { every = 20 }").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("kind"), "{err}");
        let settings: noloco::NoLoCo = table.sync.settings()?;
        assert_eq!(settings.every, 20);
        let wrong = Plug { kind: "noloco".into(), settings: toml::from_str("outer_momentum = 0.9")? };
        let err = wrong.settings::<noloco::NoLoCo>().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("outer_momentum"), "a setting of another protocol is named: {err}");
        Ok(())
    }

    #[test]
    fn data_parallel_is_elastic_only_when_asked_and_its_wait_is_checked() -> Result<()> {
        let settings = |text: &str| -> Result<DataParallelSettings> { Ok(toml::from_str(text)?) };
        let sync = settings("elastic = true")?.build(DataParallel::RING)?;
        assert_eq!(sync.elastic_wait(), Some(std::time::Duration::from_secs(1)));
        assert_eq!(settings("")?.build(DataParallel::TREE)?.elastic_wait(), None);
        let err = |text: &str| settings(text).and_then(|s| s.build(DataParallel::RING)).err().map(|e| e.to_string());
        assert!(err("quorum_timeout_s = 1.0").is_some_and(|e| e.contains("only for an elastic group")));
        assert!(err("elastic = true\nquorum_timeout_s = 0").is_some_and(|e| e.contains("sync.quorum_timeout_s")));
        Ok(())
    }
}
