//! The configuration's own tests: the example is the default, and bad configurations name the field.

use super::*;

#[test]
fn the_example_is_the_default() -> Result<()> {
    let parsed = RunConfig::from_toml(EXAMPLE)?;
    assert_eq!(parsed, RunConfig::default());
    Ok(())
}

#[test]
fn bad_configs_name_the_field() {
    let err = |text: &str| format!("{:#}", RunConfig::from_toml(text).expect_err("accepted a bad config"));
    assert!(err("stepz = 3").contains("stepz"));
    assert!(err("steps = 0").contains("steps"));
    assert!(err("profile = \"tpu\"").contains("device"));
    assert!(err("device = \"a10\"").contains("`profile`"), "a profile where the device goes says where it belongs");
    #[cfg(not(feature = "cuda"))]
    assert!(err("device = \"cuda\"").contains("--features cuda"));
    assert!(err("model_preset = \"huge\"").contains("model.preset"));
    assert!(err("[[arms]]\nlabel = \"x\"\nstages = 5\nreplicas = 1").contains("pipeline.stages"));
    assert!(err("[[arms]]\nlabel = \"x\"\nstages = 1\nreplicas = 1\nsync = \"gossip\"").contains("arms[0].sync"));
    assert!(err("[optim]\nbeta1 = 2.0").contains("optim.beta1"));
    assert!(err("backend = \"fast\"").contains("backend"));
    assert!(err("backend = \"repops\"\nprecision = \"bf16\"").contains("invalid precision"));
    assert!(err("precision = \"f16\"").contains("precision"));
    let arm = "[[arms]]\nlabel = \"x\"\nstages = 1\nreplicas = 3\n";
    assert!(err(&format!("{arm}sync = \"noloco\"")).contains("noloco.group_size"));
    assert!(err(&format!("{arm}sync = {{ kind = \"noloco\", group_size = 3, every = 0 }}")).contains("noloco.every"));
    assert!(err(&format!("{arm}sync = {{ kind = \"diloco\", outer_lr = -1.0 }}")).contains("diloco.outer_lr"));
    // A setting of another protocol is a parse error that names it.
    let wrong = err(&format!("{arm}sync = {{ kind = \"diloco\", group_size = 3 }}"));
    assert!(wrong.contains("arms[0].sync") && wrong.contains("group_size"), "{wrong}");
    let wrong = err(&format!("{arm}routing = {{ kind = \"fixed\", skip_ratio = 0.25 }}"));
    assert!(wrong.contains("arms[0].routing") && wrong.contains("skip_ratio"), "{wrong}");
    assert!(err(&format!("{arm}[arms.noloco]\ngroup_size = 3")).contains("noloco"), "the old layout is refused");
    assert!(err(&format!("{arm}routing = \"sideways\"")).contains("routing"));
    assert!(err("[scale]\nreplicas = [7]").contains("scale.replicas"));
    assert!(err(&format!("{arm}recovery = \"prayer\"")).contains("arms[0].recovery"));
    assert!(err(&format!("{arm}failure_rate = 1.5")).contains("arms[0].failure_rate"));
    assert!(err("[recovery]\nfallback = \"hope\"").contains("recovery.fallback"));
    assert!(err("profile_tflops = -1.0").contains("flops"));
    let cf = "layers = 6\n[[arms]]\nlabel = \"x\"\nstages = 6\nreplicas = 1\nrecovery = \"checkfree\"\n";
    assert!(err(cf).contains("edge_stages"), "CheckFree needs the edge-stage layout");
    let grid = "layers = 4\nedge_stages = true\n[[arms]]\nlabel = \"x\"\nstages = 6\nreplicas = 2\n";
    let sp = format!("{grid}routing = \"skippipe\"\n");
    assert!(err(&sp).contains("needs a [geo] swarm"));
    let skip = |settings: &str| format!("{grid}routing = {{ kind = \"skippipe\", {settings} }}\n[geo]");
    assert!(err(&skip("skip_ratio = 1.5")).contains("skip_ratio"));
    assert!(err(&skip("skip_ratio = 0.67")).contains("skip_ratio"), "no intermediate stage left");
    assert!(err(&format!("{sp}[geo]\nassignment = \"magic\"")).contains("geo.assignment"));
    assert!(err(&skip("memory = 1")).contains("memory"), "2 micro-batches per data node");
    assert!(err("[skippipe]\nskip_ratios = [1.0]").contains("skippipe.skip_ratios"));
    assert!(err(&skip("count = \"some_stages\"")).contains("count"), "the counting rule is one of two names");
    assert!(err(&format!("{arm}gradients = \"per_layer\"")).contains("gradients"));
    assert!(err("width = 30\nheads = 4").contains("width/heads"), "heads must split the width evenly");
    assert!(err("width = 0").contains("width"));
    assert!(err("heads = 5000").contains("heads"));
}

#[test]
fn the_ablation_rules_are_named_options() -> Result<()> {
    let text = "layers = 4\nedge_stages = true\n[[arms]]\nlabel = \"x\"\nstages = 6\nreplicas = 2\n\
                gradients = \"per_stage\"\nrouting = { kind = \"skippipe\", skip_ratio = 0.25, count = \"all_stages\" }\n[geo]";
    let cfg = RunConfig::from_toml(text)?;
    assert_eq!(cfg.arms[0].gradients, GradientScaling::PerStage);
    let settings = cfg.arms[0].routing.settings::<skippipe::Scheduling>()?;
    assert_eq!(settings.count, skippipe::SkipCount::AllStages);
    let default = RunConfig::from_toml(&text.replace("gradients = \"per_stage\"\n", "gradients = \"whole_model\"\n"))?;
    assert_eq!(default.arms[0].gradients, GradientScaling::WholeModel);
    Ok(())
}
