//! Hostile configurations: whatever a configuration file says, loading it ends in a named error or a
//! valid run configuration — never a panic, an abort or an unbounded allocation. The cases are drawn
//! from the values that broke earlier versions (0, huge, negative, NaN, infinite numbers; unknown and
//! misplaced plug settings) around a small valid configuration.

use proptest::prelude::*;

use crate::config::RunConfig;
use crate::needs::Needs;

/// What a hostile user types where a number goes: every kind that broke an earlier version.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("100000000".to_owned()),
        Just("1000000000000".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("1e300".to_owned()),
        Just("1e-300".to_owned()),
        Just("-0.1".to_owned()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("-inf".to_owned()),
        (0u32..70_000).prop_map(|n| n.to_string()),
    ]
}

/// A count: mostly small and plausible, so that cases get past the first field.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![20 => (1u32..=6).prop_map(|n| n.to_string()), 1 => hostile()]
}

/// A rate, latency, bandwidth or speed: mostly plausible.
fn real() -> impl Strategy<Value = String> {
    prop_oneof![20 => (0.0f64..1.0).prop_map(|x| format!("{x:.3}")), 1 => hostile()]
}

/// A plug: a known or unknown name, alone or with settings that may or may not be its own.
fn plug(kinds: &'static [&'static str]) -> impl Strategy<Value = String> {
    let setting = prop_oneof![
        Just("every"),
        Just("group_size"),
        Just("skip_ratio"),
        Just("lr_scale"),
        Just("outer_lr"),
        Just("memory"),
        Just("copy_every"),
        Just("timeout_s"),
        Just("schedules"),
        Just("load_slack"),
        Just("colour"),
    ];
    (proptest::sample::select(kinds), proptest::option::weighted(0.2, (setting, number()))).prop_map(|(kind, setting)| match setting {
        None => format!("\"{kind}\""),
        Some((name, value)) => format!("{{ kind = \"{kind}\", {name} = {value} }}"),
    })
}

const TOP: [&str; 12] = [
    "steps",
    "micro_batches",
    "micro_batch",
    "seq",
    "eval_every",
    "eval_batches",
    "layers",
    "profile_tflops",
    "seed",
    "name",
    "edge_stages",
    "val_fraction",
];

/// A configuration: a few top-level fields, the network, one or two arms with plugs and sizes, and
/// perhaps a recovery or scaling section — each value possibly hostile.
fn config() -> impl Strategy<Value = String> {
    let top = proptest::collection::btree_map(proptest::sample::select(&TOP[..]), number(), 0..4);
    let arm = (
        number(),
        number(),
        plug(&["all_reduce", "all_reduce", "all_reduce", "tree_all_reduce", "none", "diloco", "noloco", "gossip"]),
        plug(&["fixed", "fixed", "fixed", "fixed", "random", "out_of_order", "skippipe", "sideways"]),
        plug(&[
            "checkpoint",
            "checkpoint",
            "checkpoint",
            "checkpoint",
            "redundant",
            "checkfree",
            "checkfree_plus",
            "naive_copy",
            "random_reinit",
            "prayer",
        ]),
        real().prop_map(|x| format!("{x}e-1")),
    );
    let arms = proptest::collection::vec(arm, 1..3);
    let network = (real(), real().prop_map(|x| format!("{x}e3")));
    let extra = prop_oneof![
        6 => Just(String::new()),
        1 => (number(), number()).prop_map(|(n, p)| format!("[recovery]\ncheckpoint_every = {n}\nprotect = [{p}]\n")),
        1 => (number(), number()).prop_map(|(r, g)| format!("[scale]\nreplicas = [{r}0]\ngroup_size = {g}\n")),
        1 => (real(), real(), real())
            .prop_map(|(l, b, s)| format!("[scale]\nlatency_ms = [0.0, {l}e3]\nmbit_per_s = [1.0, {b}e4]\narrival_spread_s = {s}\n")),
        1 => number().prop_map(|n| format!("[corpus.synthetic]\ntrain_tokens = {n}000\n")),
    ];
    (top, network, arms, extra).prop_map(|(top, (latency, mbit), arms, extra)| {
        let top: Vec<(&str, String)> = top.into_iter().collect();
        let mut text = String::from("model_preset = \"tiny\"\n");
        for (field, value) in top {
            match field {
                "name" if value.len() > 3 => text += &format!("name = \"../{value}\"\n"),
                "name" => text += &format!("name = \"run{value}\"\n"),
                "profile_tflops" | "val_fraction" if value.parse::<u32>().is_ok() => {
                    let value = format!("0.{value}");
                    text += &if field == "val_fraction" { format!("[corpus]\nval_fraction = {value}\n") } else { format!("{field} = {value}\n") };
                }
                "edge_stages" => text += "edge_stages = true\n",
                "val_fraction" => text += &format!("[corpus]\nval_fraction = {value}\n"),
                _ => text += &format!("{field} = {value}\n"),
            }
        }
        // Sections come after the top-level keys.
        let mut sections = format!("[network]\nlatency_ms = {latency}\nmbit_per_s = {mbit}\n");
        for (i, (stages, replicas, sync, routing, recovery, rate)) in arms.iter().enumerate() {
            sections += &format!(
                "[[arms]]\nlabel = \"a{i}\"\nstages = {stages}\nreplicas = {replicas}\nsync = {sync}\nrouting = {routing}\nrecovery = {recovery}\nfailure_rate = {rate}\n"
            );
        }
        // A [corpus] table opened above must not swallow the sections: move top-level keys first.
        let (head, corpus): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| !l.starts_with("[corpus]") && !l.starts_with("val_fraction"));
        format!("{}\n{}\n{sections}{extra}", head.join("\n"), corpus.join("\n"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Loading never panics or aborts; what loads has bounded, estimable needs.
    #[test]
    fn any_configuration_is_a_named_error_or_a_valid_run(text in config()) {
        if std::env::var("SWARMLAB_HOSTILE_SHOW").is_ok() {
            eprintln!("----\n{text}\n=> {:?}", RunConfig::from_toml(&text).map(|_| "ok").map_err(|e| format!("{e:#}")));
        }
        match RunConfig::from_toml(&text) {
            Ok(cfg) => {
                let needs = Needs::of(&cfg).map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
                prop_assert!(needs.bytes.is_finite() && needs.flops.is_finite());
            }
            Err(e) => {
                let message = format!("{e:#}");
                prop_assert!(message.contains("invalid") || message.contains("TOML") || message.contains("unknown"), "{}", message);
            }
        }
    }
}

/// Cases per run: 10,000 by default (`SWARMLAB_HOSTILE_CASES` to change it).
fn cases() -> u32 {
    std::env::var("SWARMLAB_HOSTILE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}
