//! The `swarmlab` binary end to end, on a tiny configuration.

use std::process::Command;

const TINY: &str = r#"
name = "tiny"
steps = 3
micro_batches = 1
micro_batch = 2
seq = 16
eval_every = 2
eval_batches = 1
[optim]
total_steps = 3
warmup_steps = 1
[corpus.synthetic]
train_tokens = 4096
val_tokens = 512
[[arms]]
label = "R=1"
stages = 1
replicas = 1
[[arms]]
label = "DDP R=2"
stages = 1
replicas = 2
"#;

fn swarmlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_swarmlab"))
}

/// A one-arm run on repops for node processes, without evaluation: `network` is the `[network]` table's
/// body (or empty), `arm` the arm's.
fn node_run(steps: u64, network: &str, arm: &str) -> String {
    let network = if network.is_empty() { String::new() } else { format!("[network]\n{network}") };
    format!(
        "name = \"nodes\"\nsteps = {steps}\nmicro_batches = 1\nmicro_batch = 2\nseq = 16\neval_every = 0\n\
         backend = \"repops\"\n[optim]\ntotal_steps = {steps}\nwarmup_steps = 1\n\
         [corpus.synthetic]\ntrain_tokens = 4096\nval_tokens = 512\n{network}[[arms]]\n{arm}"
    )
}

/// The blake3 of the final weights each of `places` wrote in `launch` run folder `run`.
fn worker_hashes(
    run: &std::path::Path,
    places: impl IntoIterator<Item = usize>,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    places
        .into_iter()
        .map(|i| {
            let text = std::fs::read_to_string(run.join(format!("nodes/worker-{i}.json")))?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            Ok(v["weights_blake3"].as_str().ok_or("no hash")?.to_owned())
        })
        .collect()
}

/// `swarmlab launch` of `nodes` pipeline workers running `config` into `run`, with `extra` flags (2 s idle
/// timeout); it must succeed. Returns its report.
fn launch_pipeline(
    config: &std::path::Path,
    nodes: usize,
    extra: &[&str],
    run: &std::path::Path,
) -> Result<String, Box<dyn std::error::Error>> {
    let out = swarmlab()
        .args(["launch", "--local", &nodes.to_string(), "--protocol", "pipeline", "--idle-timeout-s", "2"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(run)
        .output()?;
    assert!(out.status.success(), "{}: {}", run.display(), String::from_utf8_lossy(&out.stderr));
    Ok(std::fs::read_to_string(run.join("report.md"))?)
}

/// A SAPO swarm small enough for node processes: one task family, a 10-step warm start; `top` goes first
/// (top-level fields such as `transport`).
fn node_swarm(agents: usize, rounds: u64, top: &str) -> String {
    format!(
        "{top}agents = {agents}\nrounds = {rounds}\ncompletions = 4\n[mix]\nlocal = 1\nexternal = 1\n\
         [warm_start]\nsteps = 10\nbatch = 8\n[tasks]\nfamilies = [\"propositional_logic\"]\nmax_level = 1\n\
         eval_per_level = 1\n"
    )
}

/// A CodeZero configuration of `agents` agents and `rounds` rounds that warms up in moments.
fn codezero_swarm(agents: usize, rounds: u64) -> String {
    format!("agents = {agents}\nrounds = {rounds}\nheld_out = 3\n[warm_start]\nsteps = 5\nbatch = 8\n")
}

/// Keys for `n` nodes on free loopback ports, and the peers file listing them; returns its path.
fn node_keys(dir: &std::path::Path, n: usize) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    // Free ports, all bound until every one is read so that none is handed out twice (another process
    // could still take one before its node binds it; unlikely here).
    let sockets = (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    let ports = sockets.iter().map(|s| s.local_addr().map(|a| a.port())).collect::<Result<Vec<_>, _>>()?;
    drop(sockets);
    let mut peers = String::new();
    for (i, port) in ports.into_iter().enumerate() {
        let key = dir.join(format!("node{i}.key"));
        let out = swarmlab().args(["keygen", "--addr", &format!("127.0.0.1:{port}"), "--out"]).arg(&key).output()?;
        let stdout = String::from_utf8(out.stdout)?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        peers += &stdout[stdout.find("[[peer]]").ok_or("no peers entry printed")?..];
        peers.push('\n');
    }
    let peers_file = dir.join("peers.toml");
    std::fs::write(&peers_file, &peers)?;
    Ok(peers_file)
}

/// Runs `swarmlab node <args> --key node<i>.key --peers <peers> --out <out>` for `n` nodes at once and
/// waits for all of them to succeed.
fn run_nodes(
    dir: &std::path::Path,
    n: usize,
    args: &[&str],
    out: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let nodes: Vec<_> = (0..n)
        .map(|i| {
            swarmlab()
                .arg("node")
                .args(args)
                .arg("--key")
                .arg(dir.join(format!("node{i}.key")))
                .arg("--peers")
                .arg(dir.join("peers.toml"))
                .arg("--out")
                .arg(out)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for node in nodes {
        let out = node.wait_with_output()?;
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn run_writes_the_report_files() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY)?;
    let out = dir.path().join("run");
    let status = swarmlab().arg("run").arg(&config).arg("--out").arg(&out).status()?;
    assert!(status.success());
    for file in [
        "config.toml",
        "metrics.csv",
        "summary.json",
        "report.md",
        "run.h5",
        "val_loss_by_step.svg",
        "val_loss_by_step.png",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
    assert_eq!(summary["arms"].as_array().map(Vec::len), Some(2));
    assert!(summary["entropy_floor"].as_f64().is_some_and(|h| h > 0.5));
    assert!(summary["arms"][1]["final_val_loss"].as_f64().is_some());
    // The HDF5 log reads back: config, and the validation series of each arm.
    let h5 = hdf5::File::open(out.join("run.h5"))?;
    let name: hdf5::types::VarLenUnicode = h5.attr("name")?.read_scalar()?;
    assert_eq!(name.as_str(), "tiny");
    let val: Vec<f64> = h5.dataset("arms/1/val_value")?.read_raw()?;
    let steps: Vec<u64> = h5.dataset("arms/1/val_step")?.read_raw()?;
    assert_eq!(steps, vec![0, 2, 3]);
    assert_eq!(val.len(), 3);
    let report = std::fs::read_to_string(out.join("report.md"))?;
    assert!(report.contains("Loss floor") && report.contains("DDP R=2"));
    // `swarmlab report` rebuilds the report from run.h5 alone.
    std::fs::remove_file(out.join("report.md"))?;
    assert!(swarmlab().arg("report").arg(&out).status()?.success());
    let rebuilt = std::fs::read_to_string(out.join("report.md"))?;
    assert!(rebuilt.contains("DDP R=2") && rebuilt.contains("1.065"), "{rebuilt}");
    assert!(!swarmlab().arg("report").arg(dir.path().join("nowhere")).status()?.success());
    Ok(())
}

/// Two threads per operation (the pool's helper spinning while the simulation runs) train the same
/// bits as one: the final validation losses of both arms, on repops, are equal.
#[test]
fn two_threads_per_operation_train_the_same_bits_as_one() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, format!("backend = \"repops\"\n{TINY}"))?;
    let losses = |threads: &str| -> Result<Vec<f64>, Box<dyn std::error::Error>> {
        let out = dir.path().join(format!("run-{threads}"));
        let status = swarmlab()
            .arg("run")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .env("RAYON_NUM_THREADS", threads)
            .env("CANDLE_NUM_THREADS", "1")
            .status()?;
        assert!(status.success(), "{threads} threads");
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
        let arms = summary["arms"].as_array().ok_or("no arms")?;
        Ok(arms.iter().filter_map(|a| a["final_val_loss"].as_f64()).collect())
    };
    let (one, two) = (losses("1")?, losses("2")?);
    assert_eq!(one.len(), 2);
    assert_eq!(one, two);
    Ok(())
}

#[test]
fn bad_config_and_init_behave() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "steps = 0\n")?;
    let output = swarmlab().arg("run").arg(&bad).arg("--out").arg(dir.path().join("x")).output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("steps") && stderr.contains("bad.toml"), "{stderr}");

    let example = dir.path().join("swarmlab.toml");
    assert!(swarmlab().arg("init").arg(&example).status()?.success());
    assert!(std::fs::read_to_string(&example)?.contains("[[arms]]"));
    let again = swarmlab().arg("init").arg(&example).output()?;
    assert!(!again.status.success(), "init must not overwrite");

    let help = swarmlab().arg("--help").output()?;
    assert!(String::from_utf8_lossy(&help.stdout).contains("run"));
    Ok(())
}

/// A run killed outright (not even Ctrl-C) after its first arm still leaves a complete, readable run.h5.
#[test]
fn a_killed_run_leaves_a_readable_log() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("long.toml");
    // Both arms train 400 steps: the first finishes in seconds, the second is killed on its way.
    let long = TINY.replace("steps = 3", "steps = 400").replace("total_steps = 3", "total_steps = 400");
    std::fs::write(&config, long)?;
    let out = dir.path().join("run");
    let mut child =
        swarmlab().arg("run").arg(&config).arg("--out").arg(&out).stderr(std::process::Stdio::null()).spawn()?;
    let h5 = out.join("run.h5");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !h5.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()?;
    assert!(h5.exists(), "the first arm never finished");
    let file = hdf5::File::open(&h5)?;
    let val: Vec<f64> = file.dataset("arms/0/val_value")?.read_raw()?;
    assert!(!val.is_empty() && val.iter().all(|v| v.is_finite()));
    Ok(())
}

/// A study with outer-sync arms and a scaling part goes through the same run path as `reproduce`.
#[test]
fn outer_sync_arms_and_the_scaling_part_are_reported() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("noloco.toml");
    let arms = r#"
[[arms]]
label = "DiLoCo"
stages = 2
replicas = 2
sync = { kind = "diloco", every = 2, nesterov = false, momentum = 0.3 }

[[arms]]
label = "NoLoCo"
stages = 2
replicas = 2
sync = { kind = "noloco", every = 2 }
routing = "random"

[scale]
replicas = [4]
simulated_values = 1024
"#;
    let text = TINY.replace("steps = 3", "steps = 4").replace("total_steps = 3", "total_steps = 4");
    let text = format!("{}{arms}", &text[..text.find("[[arms]]").expect("arms")]);
    std::fs::write(&config, text)?;
    let out = dir.path().join("run");
    let status = swarmlab().arg("run").arg(&config).arg("--out").arg(&out).status()?;
    assert!(status.success());
    for file in ["scale.csv", "sync_scale.svg", "weight_variance.svg", "val_loss_by_time.svg"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
    assert_eq!(summary["scale"].as_array().map(Vec::len), Some(3), "ring, tree and gossip at R=4");
    assert!(summary["arms"][1]["sync"].as_str().is_some_and(|s| s.starts_with("noloco")));
    assert!(summary["arms"][1]["sync_latency_s"].as_f64().is_some_and(|s| s > 0.0));
    assert!(
        summary["claims"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["claim"].as_str().unwrap_or("").contains("DiLoCo")))
    );
    let report = std::fs::read_to_string(out.join("report.md"))?;
    assert!(report.contains("Synchronisation vs swarm size") && report.contains("NoLoCo gossip n=2"));
    // Rebuilt from run.h5 alone, the report keeps the scaling table and the protocols.
    std::fs::remove_file(out.join("report.md"))?;
    assert!(swarmlab().arg("report").arg(&out).status()?.success());
    let rebuilt = std::fs::read_to_string(out.join("report.md"))?;
    assert!(rebuilt.contains("NoLoCo gossip n=2") && rebuilt.contains("heavy-ball"), "{rebuilt}");
    Ok(())
}

#[test]
fn reproduce_names_its_studies() -> Result<(), Box<dyn std::error::Error>> {
    let help = swarmlab().args(["reproduce", "--help"]).output()?;
    assert!(String::from_utf8_lossy(&help.stdout).contains("noloco"));
    let bad = swarmlab().args(["reproduce", "nothing"]).output()?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("noloco"), "the error lists the studies");
    Ok(())
}

/// Failure arms: CheckFree against checkpointing on a 5-stage edge layout, failures from the seed.
#[test]
fn failure_arms_report_their_recoveries() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("checkfree.toml");
    let text = TINY.replace("steps = 3", "steps = 12").replace("total_steps = 3", "total_steps = 12");
    let head = &text[..text.find("[[arms]]").expect("arms")];
    let head = head.replace("eval_every = 2", "eval_every = 4\nlayers = 3\nedge_stages = true");
    let arms = r#"
[recovery]
protect = [0, 4]
checkpoint_every = 4

[[arms]]
label = "clean"
stages = 5
replicas = 1

[[arms]]
label = "CheckFree"
stages = 5
replicas = 1
recovery = "checkfree"
failure_rate = 0.3

[[arms]]
label = "checkpointing"
stages = 5
replicas = 1
failure_rate = 0.3
"#;
    std::fs::write(&config, format!("{head}{arms}"))?;
    let out = dir.path().join("run");
    let output = swarmlab().arg("run").arg(&config).arg("--out").arg(&out).output()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report = std::fs::read_to_string(out.join("report.md"))?;
    assert!(report.contains("## Failures and recovery"), "{report}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
    let failures = |i: usize| summary["arms"][i]["failure_steps"].as_u64().unwrap_or(0);
    assert_eq!(failures(0), 0);
    assert!(failures(1) > 0 && failures(1) == failures(2), "the same seeded failures in both arms");
    assert!(summary["arms"][1]["recovery"].as_str().is_some_and(|r| r.contains("CheckFree")));
    Ok(())
}

/// SkipPipe arms on a geo-distributed swarm, the scheduler study and dropped-stage inference.
#[test]
fn skippipe_arms_and_study_are_reported() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("skippipe.toml");
    let arms = r#"
[[arms]]
label = "standard"
stages = 5
replicas = 2

[[arms]]
label = "SkipPipe 33%"
stages = 5
replicas = 2
routing = { kind = "skippipe", skip_ratio = 0.33, memory = 4 }

[geo]

[skippipe]
partition = [3, 2, 2, 2]
micro_batches = 2
memory = 4
skip_ratios = [0.0, 0.25]
keep = [0.6]
subsets = 2
"#;
    let text = TINY.replace("micro_batches = 1", "micro_batches = 2\nlayers = 3\nedge_stages = true");
    let text = format!("{}{arms}", &text[..text.find("[[arms]]").expect("arms")]);
    std::fs::write(&config, text)?;
    let out = dir.path().join("run");
    let status = swarmlab().arg("run").arg(&config).arg("--out").arg(&out).status()?;
    assert!(status.success());
    let skip: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("skippipe.json"))?)?;
    // Random and local-search assignment: the standard pipeline and two skip ratios each.
    assert_eq!(skip["iteration"].as_array().map(Vec::len), Some(6));
    assert_eq!(skip["dropped"].as_array().map(Vec::len), Some(2), "one fraction per arm");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
    let claims = summary["claims"].as_array().cloned().unwrap_or_default();
    assert!(claims.iter().any(|c| c["claim"].as_str().unwrap_or("").contains("iteration time")));
    let report = std::fs::read_to_string(out.join("report.md"))?;
    assert!(report.contains("SkipPipe: iteration time") && report.contains("stages dropped"), "{report}");
    assert!(report.contains("geo-distributed swarm"));
    // Rebuilt from run.h5 and skippipe.json, the report keeps the SkipPipe sections.
    std::fs::remove_file(out.join("report.md"))?;
    assert!(swarmlab().arg("report").arg(&out).status()?.success());
    let rebuilt = std::fs::read_to_string(out.join("report.md"))?;
    assert!(rebuilt.contains("SkipPipe: iteration time"), "{rebuilt}");
    Ok(())
}

/// The SkipPipe study beside arms too short to drop a stage from (and no [geo] swarm): they get no
/// dropped-stage rows, and the run completes.
#[test]
fn skippipe_study_skips_arms_without_stages_to_drop() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("short.toml");
    let study =
        "\n[skippipe]\npartition = [3, 2, 2, 2]\nmicro_batches = 1\nskip_ratios = [0.25]\nkeep = [0.5]\nsubsets = 1\n";
    std::fs::write(&config, format!("{TINY}{study}"))?;
    let out = dir.path().join("run");
    assert!(swarmlab().arg("run").arg(&config).arg("--out").arg(&out).status()?.success());
    let skip: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("skippipe.json"))?)?;
    assert_eq!(skip["dropped"].as_array().map(Vec::len), Some(0), "one-stage arms have nothing to drop");
    assert_eq!(skip["iteration"].as_array().map(Vec::len), Some(4));
    Ok(())
}

#[test]
fn verify_settles_every_claim_and_names_bad_trainers() -> Result<(), Box<dyn std::error::Error>> {
    let out = swarmlab()
        .args(["verify", "--steps", "6", "--trainer", "perturb-op@3:5", "--trainer", "honest"])
        .args(["--trainer", "lazy@2+silent@3", "--trainer", "lie@6"])
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("trainer 1 wins; trainer 0 wrong claim: re-executing operator 5"), "{stdout}");
    assert!(stdout.contains("did not answer in time"), "{stdout}");
    assert!(stdout.contains("its state hash is not the hash of the tensors it lists"), "{stdout}");
    assert!(stdout.contains("accepted: final state") && stdout.contains("(trainers 1)"), "{stdout}");
    assert!(stdout.contains("the accepted state is the honest run's"), "{stdout}");
    // Cheats outside the operators lose too: a forged learning rate, a forged batch, a mislaid layout.
    let out = swarmlab()
        .args(["verify", "--steps", "4", "--trainer", "honest", "--trainer", "forge-lr@2:3"])
        .args(["--trainer", "forge-batch@3:1", "--trainer", "mislaid@2:5.0"])
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for says in [
        "ran with attributes the program does not give it",
        "input 1 is not the tensor the program makes",
        "input 0 is not the tensor the program makes",
    ] {
        assert!(stdout.contains(says), "{says}: {stdout}");
    }
    assert!(stdout.contains("(trainers 0)") && !stdout.contains("both lose"), "{stdout}");
    // A verified evaluation: a made-up score and skipped items lose; the honest score is accepted.
    let out = swarmlab()
        .args(["verify", "--steps", "3", "--evaluate", "4", "--trainer", "perturb-weight@2", "--trainer", "honest"])
        .args(["--trainer", "lazy@3"])
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("trainer 1 wins; trainer 0 wrong claim: state tensor e:sum"), "{stdout}");
    assert!(stdout.contains("(trainers 1)") && stdout.contains("accepted score: "), "{stdout}");
    for (bad, says) in [
        ("lazy", "lazy needs @STEP"),
        ("perturb-op@2", "perturb-op needs @STEP:OP"),
        ("liar@2", "unknown trainer \"liar\""),
        ("honest+shy@2", "unknown conduct \"shy\""),
        ("lazy@9", "past the program's 6 steps"),
        ("perturb-op@2:99999", "operators"),
        ("forge-lr@2:1", "other than 1"),
        ("forge-batch@2:2", "DATA_STEP must differ"),
        ("mislaid@2:5", "mislaid needs @STEP:OP.INPUT"),
        ("mislaid@2:5.7", "inputs, numbered from 0"),
    ] {
        let out = swarmlab().args(["verify", "--steps", "6", "--trainer", bad]).output()?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(!out.status.success() && stderr.contains(says), "{bad}: {stderr}");
    }
    Ok(())
}

#[test]
fn sapo_trains_a_swarm_from_a_config_and_names_bad_fields() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sapo.toml");
    std::fs::write(
        &config,
        "agents = 2\nrounds = 3\ncompletions = 4\n[warm_start]\nsteps = 5\nbatch = 8\n[tasks]\nfamilies = [\"list_ops\", \"arc_1d\"]\neval_per_level = 2\n",
    )?;
    let out_dir = dir.path().join("run");
    let out = swarmlab()
        .arg("sapo")
        .arg(&config)
        .args(["--mix", "2/2", "--liars", "1"])
        .arg("--out")
        .arg(&out_dir)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("cumulative reward") && stdout.lines().filter(|l| l.contains("tiny")).count() == 2,
        "{stdout}"
    );
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("sapo-run.json"))?)?;
    assert_eq!(run["agents"].as_array().map(Vec::len), Some(3), "two agents and a liar");
    assert!(std::fs::read_to_string(out_dir.join("config.toml"))?.contains("external = 2"));
    // The printed defaults are a valid configuration.
    let defaults = swarmlab().args(["sapo", "--print-config"]).output()?;
    let printed = dir.path().join("defaults.toml");
    std::fs::write(&printed, &defaults.stdout)?;
    assert!(String::from_utf8(defaults.stdout)?.contains("[grpo]"));
    for (text, says) in [
        ("agents = 0\n", "sapo.agents"),
        ("completions = 1\n", "sapo.completions"),
        ("sizes = [\"huge\"]\n", "policy.size"),
        ("[tasks]\nfamilies = [\"chess\"]\n", "env.families"),
        ("[grpo]\neps_low = 2.0\n", "grpo.eps_low"),
        ("rounds = \"many\"\n", "rounds"),
        ("colour = 3\n", "colour"),
    ] {
        std::fs::write(&config, text)?;
        let out = swarmlab().arg("sapo").arg(&config).output()?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(!out.status.success() && stderr.contains(says), "{text:?}: {stderr}");
    }
    let out = swarmlab().args(["sapo", "--mix", "4-4", "--rounds", "1"]).output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("sapo.mix"));
    let out =
        swarmlab().arg("sapo").arg(&printed).args(["--rounds", "0", "--out"]).arg(dir.path().join("zero")).output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("sapo.rounds"));
    Ok(())
}

#[test]
fn sapo_runs_a_swarm_of_a_pretrained_checkpoint() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("tiny-qwen2");
    let out = swarmlab().args(["tiny-checkpoint", "qwen2"]).arg(&model).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(model.join(file).is_file(), "{file}");
    }
    let config = dir.path().join("sapo.toml");
    std::fs::write(&config, "agents = 2\nrounds = 3\ncompletions = 4\n[policy]\nprompt_width = 24\nmax_new = 8\n")?;
    let out_dir = dir.path().join("run");
    let out = swarmlab()
        .arg("sapo")
        .arg(&config)
        .arg("--model")
        .arg(&model)
        .args(["--mix", "2/2", "--liars", "1", "--out"])
        .arg(&out_dir)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().filter(|l| l.contains("pretrained")).count() == 2, "{stdout}");
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("sapo-run.json"))?)?;
    assert_eq!(run["agents"].as_array().map(Vec::len), Some(3), "two agents and a liar");
    assert!(std::fs::read_to_string(out_dir.join("config.toml"))?.contains("model = "));
    // A folder that is not a checkpoint, an unknown architecture, a window the model does not have.
    let out = swarmlab().arg("sapo").arg(&config).args(["--rounds", "1", "--model"]).arg(dir.path()).output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success() && stderr.contains("config.json"), "{stderr}");
    let out = swarmlab().args(["tiny-checkpoint", "gpt2"]).arg(dir.path().join("x")).output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("llama, qwen2, qwen3"));
    std::fs::write(&config, "[policy]\nprompt_width = 200\n")?;
    let out = swarmlab().arg("sapo").arg(&config).args(["--rounds", "1", "--model"]).arg(&model).output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success() && stderr.contains("128 positions"), "{stderr}");
    // The study: the four mixes, every agent from the checkpoint.
    let study = dir.path().join("study");
    let out =
        swarmlab().args(["reproduce", "sapo", "--quick", "--model"]).arg(&model).arg("--out").arg(&study).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_to_string(study.join("report.md"))?;
    assert!(report.contains("copy of the pretrained") && report.contains("| 2/6 |"), "{report}");
    assert!(!report.contains("tiny+small"), "no size arms in a study of one model");
    let out = swarmlab().args(["reproduce", "noloco", "--quick", "--model"]).arg(&model).output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("`reproduce sapo` only"));
    Ok(())
}

#[test]
fn sapo_deals_the_tasks_of_a_reasoning_gym_export() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("tiny-llama");
    assert!(swarmlab().args(["tiny-checkpoint", "llama"]).arg(&model).status()?.success());
    // An export in reasoning-gym's format: two datasets of sums, one of them ours in other words.
    let mut lines = String::new();
    for a in 0..12 {
        let b = 11 - a;
        let ours = serde_json::json!({ "question": format!("What is {a} + {b}?"), "answer": (a + b).to_string(),
            "metadata": { "source_dataset": "basic_arithmetic", "expression": format!("{a} + {b}") } });
        let other = serde_json::json!({ "question": format!("{a}+{b}+1="), "answer": (a + b + 1).to_string(),
            "metadata": { "source_dataset": "chain_sum" } });
        lines += &format!("{ours}\n{other}\n");
    }
    let tasks = dir.path().join("tasks.jsonl");
    std::fs::write(&tasks, lines)?;
    let config = dir.path().join("sapo.toml");
    std::fs::write(&config, "agents = 2\nrounds = 2\ncompletions = 4\n[policy]\nprompt_width = 24\nmax_new = 8\n")?;
    let run = |extra: &[&str]| -> std::io::Result<std::process::Output> {
        swarmlab().arg("sapo").arg(&config).arg("--model").arg(&model).arg("--tasks").arg(&tasks).args(extra).output()
    };
    let out_dir = dir.path().join("run");
    let out = run(&["--mix", "1/1", "--out", &out_dir.display().to_string()])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sapo_run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("sapo-run.json"))?)?;
    let eval = &sapo_run["agents"][0]["eval"];
    assert!(eval["basic_arithmetic"].is_number() && eval["chain_sum"].is_number(), "{eval}");
    assert!(std::fs::read_to_string(out_dir.join("config.toml"))?.contains("tasks.jsonl"));
    // One dataset; one that is not in the file; more own groups than tasks a round.
    let out =
        run(&["--datasets", "chain_sum", "--mix", "1/1", "--out", &dir.path().join("one").display().to_string()])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["--datasets", "chess"])?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success() && stderr.contains("tasks.datasets[0]") && stderr.contains("chain_sum"), "{stderr}");
    let out = run(&["--mix", "3/1"])?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success() && stderr.contains("tasks.per_specialty"), "{stderr}");
    // Questions wider than the window: named with the width they need.
    std::fs::write(&config, "[policy]\nprompt_width = 8\nmax_new = 8\n")?;
    let stderr = String::from_utf8(run(&["--rounds", "1", "--mix", "1/1"])?.stderr)?;
    assert!(stderr.contains("prompt_width") && stderr.contains("raise it to"), "{stderr}");
    // The study: eight tasks a round, four of each dataset.
    let study = dir.path().join("study");
    let out = swarmlab()
        .args(["reproduce", "sapo", "--quick", "--model"])
        .arg(&model)
        .arg("--tasks")
        .arg(&tasks)
        .arg("--out")
        .arg(&study)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_to_string(study.join("report.md"))?;
    assert!(report.contains("(basic_arithmetic, chain_sum)") && report.contains("4 tasks per dataset"), "{report}");
    assert!(report.contains("| arm | basic_arithmetic | chain_sum | all |"), "{report}");
    let out = swarmlab().args(["reproduce", "sapo", "--quick", "--tasks"]).arg(&tasks).output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("--model"));
    Ok(())
}

#[test]
fn the_device_is_chosen_by_name_and_a_missing_gpu_is_explained() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, TINY)?;
    // auto: a GPU if one is usable, else the CPU with one line saying why.
    let out =
        swarmlab().arg("run").arg(&config).args(["--device", "auto", "--out"]).arg(dir.path().join("auto")).output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(", on cpu") || stderr.contains(", on cuda:0"), "{stderr}");
    if stderr.contains(", on cpu") {
        assert_eq!(stderr.matches("device auto: running on the CPU").count(), 1, "{stderr}");
    }
    // An explicit cuda where it cannot run is an error that says what is missing; nothing is written.
    let out = swarmlab()
        .arg("run")
        .arg(&config)
        .args(["--device", "cuda:7", "--out"])
        .arg(dir.path().join("cuda"))
        .output()?;
    let stderr = String::from_utf8(out.stderr)?;
    if !out.status.success() {
        assert!(stderr.contains("--features cuda") || stderr.contains("cuda:7 is not usable"), "{stderr}");
        assert!(!dir.path().join("cuda").exists(), "refused before anything is written");
    }
    let out = swarmlab().args(["sapo", "--device", "tpu"]).output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("cpu, cuda, cuda:N or auto"));
    Ok(())
}

#[test]
fn three_node_processes_run_a_sapo_swarm_over_quic() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sapo.toml");
    std::fs::write(&config, node_swarm(3, 6, ""))?;
    let peers_file = node_keys(dir.path(), 3)?;
    for i in 0..3 {
        // A key file is never overwritten.
        assert!(!swarmlab().args(["keygen", "--out"]).arg(dir.path().join(format!("node{i}.key"))).status()?.success());
    }
    let out_dir = dir.path().join("run");
    let mut received = 0;
    let config_arg = config.to_str().ok_or("a temporary path that is not UTF-8")?;
    run_nodes(dir.path(), 3, &["--config", config_arg], &out_dir)?;
    for i in 0..3 {
        let run: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out_dir.join(format!("agent-{i}.json")))?)?;
        assert_eq!(run["rounds"].as_array().map(Vec::len), Some(6), "agent {i}");
        let dropped: u64 =
            ["forged", "unreadable", "no_signal", "unsampled"].iter().filter_map(|k| run["dropped"][k].as_u64()).sum();
        let used: u64 = run["rounds"].as_array().into_iter().flatten().filter_map(|r| r["external"].as_u64()).sum();
        received += dropped + used;
    }
    assert!(received > 0, "the nodes' rollouts reached each other");
    // A node whose key is not in the peers file is refused before it starts.
    let stranger = dir.path().join("stranger.key");
    assert!(swarmlab().args(["keygen", "--out"]).arg(&stranger).status()?.success());
    let out = swarmlab()
        .arg("node")
        .arg("--config")
        .arg(&config)
        .arg("--key")
        .arg(&stranger)
        .arg("--peers")
        .arg(&peers_file)
        .output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("is not in"));
    Ok(())
}

#[test]
fn ddp_across_three_node_processes_ends_with_the_sims_weights_bit_for_bit() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ddp.toml");
    std::fs::write(&config, node_run(3, "", "label = \"DDP R=3\"\nstages = 1\nreplicas = 3\n"))?;
    let sim = dir.path().join("sim");
    let out = swarmlab().arg("run").arg(&config).arg("--out").arg(&sim).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sim.join("summary.json"))?)?;
    let want = summary["arms"][0]["weights_blake3"].as_str().ok_or("no weights hash in summary.json")?.to_owned();
    assert_eq!(want.len(), 64);
    // Three node processes, started by `swarmlab launch` with their keys and peers file.
    let run = dir.path().join("launch");
    let out = swarmlab()
        .args(["launch", "--local", "3", "--protocol", "pipeline", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..3 {
        let w: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join(format!("nodes/worker-{i}.json")))?)?;
        assert_eq!(w["weights_blake3"].as_str(), Some(want.as_str()), "worker {i} over QUIC vs the sim");
    }
    let report = std::fs::read_to_string(run.join("report.md"))?;
    assert!(report.contains("Every node ended with the same weights"), "{report}");
    assert!(
        run.join("launch.h5").is_file() && run.join("peers.toml").is_file() && run.join("logs/node-2.log").is_file()
    );
    // A node count that does not fit the configuration is refused, naming both.
    let refused = dir.path().join("refused");
    let out = swarmlab()
        .args(["launch", "--local", "4", "--protocol", "pipeline", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&refused)
        .output()?;
    let err = String::from_utf8(out.stderr)?;
    assert!(!out.status.success() && err.contains("--local 4") && err.contains("1 stages x 3 replicas"), "{err}");
    assert!(!refused.exists(), "a refused launch leaves no run folder");
    let out = swarmlab().args(["launch", "--local", "3", "--late", "3@1"]).output()?;
    let err = String::from_utf8(out.stderr)?;
    assert!(!out.status.success() && err.contains("--late 3@1: there are only nodes 0 to 2"), "{err}");
    Ok(())
}

/// One field moves a run from the simulated network to QUIC: `transport = "quic"` runs the arm as node
/// processes behind link emulators with the configuration's link model; the run is the same bit for
/// bit, and the report sets its time per step beside the simulated network's prediction.
#[test]
fn one_field_runs_the_same_config_over_quic_with_emulated_links() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ddp.toml");
    std::fs::write(
        &config,
        node_run(
            4,
            "latency_ms = 10.0\nmbit_per_s = 100.0\ntransport = \"quic\"\n",
            "label = \"DDP R=2\"\nstages = 1\nreplicas = 2\n",
        ),
    )?;
    let run = dir.path().join("run");
    let out = swarmlab().arg("run").arg(&config).arg("--out").arg(&run).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = std::fs::read_to_string(run.join("report.md"))?;
    assert!(summary.contains("| DDP R=2 | 2 | 2 |"), "{summary}");
    let report = std::fs::read_to_string(run.join("arm-0/report.md"))?;
    assert!(report.contains("Every node ended with the same weights"), "{report}");
    assert!(report.contains("| simulated network (prediction) |") && report.contains("| ratio |"), "{report}");
    let journal = std::fs::read_to_string(run.join("arm-0/launch.log"))?;
    assert!(journal.contains("10.0 ms one way, 100 Mbit/s") && journal.contains("0 dropped"), "{journal}");
    // A transport that does not exist is named.
    std::fs::write(&config, "[network]\ntransport = \"carrier-pigeon\"\n")?;
    let out = swarmlab().arg("run").arg(&config).output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("transport"));
    Ok(())
}

/// The same field moves a SAPO swarm onto QUIC: `swarmlab sapo` then launches one node per agent.
#[test]
fn a_sapo_config_runs_over_quic_by_one_field() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sapo.toml");
    std::fs::write(&config, node_swarm(2, 3, "transport = \"quic\"\n"))?;
    let run = dir.path().join("run");
    let out = swarmlab().arg("sapo").arg(&config).arg("--out").arg(&run).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..2 {
        let agent: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join(format!("nodes/agent-{i}.json")))?)?;
        assert_eq!(agent["rounds"].as_array().map(Vec::len), Some(3), "agent {i}");
    }
    assert!(std::fs::read_to_string(run.join("launch.log"))?.contains("link emulator: 20.0 ms one way"));
    Ok(())
}

/// NoLoCo training across four node processes that lose one and gain one: replica 3 starts late and
/// joins with the weights of a replica under way; replica 2 is killed mid-training, and its gossip
/// partners notice by the gather timeout (a root that sends no mean, a member that sends no
/// contribution) and carry on. The run finishes, and the report says all of it.
#[test]
fn noloco_training_takes_a_late_joiner_and_outlives_a_killed_node() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("noloco.toml");
    std::fs::write(
        &config,
        node_run(
            40,
            "",
            "label = \"NoLoCo R=4\"\nstages = 1\nreplicas = 4\nsync = { kind = \"noloco\", every = 2, group_size = 2, timeout_s = 0.5 }\n",
        ),
    )?;
    let run = dir.path().join("launch");
    let out = swarmlab()
        .args(["launch", "--local", "4", "--protocol", "pipeline", "--idle-timeout-s", "1"])
        .args(["--late", "3@6", "--kill", "2@16", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in [0, 1, 3] {
        assert!(run.join(format!("nodes/worker-{i}.json")).is_file(), "worker {i} finished");
    }
    let journal = std::fs::read_to_string(run.join("launch.log"))?;
    assert!(journal.contains("started node 3 late") && journal.contains("killed node 2"), "{journal}");
    let report = std::fs::read_to_string(run.join("report.md"))?;
    assert!(report.contains("| killed at step"), "{report}");
    assert!(report.contains("Join: stage 0 replica 3 joined before step"), "{report}");
    assert!(
        report.contains("continuing alone") || report.contains("averaged without it"),
        "a partner noticed the killed replica: {report}"
    );
    Ok(())
}

/// Elastic groups across node processes: the replicas agree each step (DDP) or each outer round
/// (DiLoCo) on who is there, so a late replica is let in (with the group's weights, optimizer moments and
/// outer state) and a killed one — the group's leader, in the first case — is left out; every replica
/// that finishes ends with the same weights.
#[test]
fn elastic_ddp_and_diloco_take_a_late_joiner_and_outlive_a_killed_replica() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let cases = [
        ("all_reduce", "elastic = true, ", "3@3", "0@14"),
        ("tree_all_reduce", "elastic = true, ", "2@5", "1@9"),
        ("diloco", "every = 5, ", "1@4", "2@12"),
    ];
    for (kind, settings, late, kill) in cases {
        let config = dir.path().join(format!("{kind}.toml"));
        let sync = format!("sync = {{ kind = \"{kind}\", {settings}quorum_timeout_s = 0.5 }}");
        std::fs::write(&config, node_run(30, "", &format!("label = \"R=4\"\nstages = 1\nreplicas = 4\n{sync}\n")))?;
        let run = dir.path().join(kind);
        let out = swarmlab()
            .args(["launch", "--local", "4", "--protocol", "pipeline", "--idle-timeout-s", "1"])
            .args(["--late", late, "--kill", kill, "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&run)
            .output()?;
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        let killed: usize = kill[..1].parse()?;
        let mut weights = Vec::new();
        for i in (0..4).filter(|&i| i != killed) {
            let result: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(run.join(format!("nodes/worker-{i}.json")))?)?;
            weights.push(result["weights_blake3"].as_str().map(str::to_owned));
        }
        assert!(weights[0].is_some() && weights.iter().all(|w| *w == weights[0]), "{kind}: {weights:?}");
        let report = std::fs::read_to_string(run.join("report.md"))?;
        assert!(report.contains("joined the group") && report.contains("left the group"), "{kind}: {report}");
    }
    Ok(())
}

/// A killed pipeline worker replaced over QUIC (`launch --kill … --replace`): its successor halts the
/// others, everyone trains again from the earliest step any was at, and the successor gets its stage
/// back by the configured recovery: CheckFree from its neighbours, CheckFree+ from the copy its
/// neighbour keeps of an edge stage, redundant computation from its predecessor's copy, a surviving
/// replica under data parallelism, its predecessor's checkpoint in storage under checkpoint-restart.
/// Every worker finishes; checkpoint-restart ends with the same bits as a run without the kill, and so
/// does redundant computation whenever the copy was of the step everyone resumed from.
#[test]
fn a_killed_pipeline_worker_is_replaced_and_rebuilt_by_its_recovery() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let grid = |layers: usize, edges: bool, stages: usize, replicas: usize, recovery: &str| {
        let arm =
            format!("label = \"{recovery}\"\nstages = {stages}\nreplicas = {replicas}\nrecovery = \"{recovery}\"\n");
        node_run(30, "", &arm).replace("backend = ", &format!("layers = {layers}\nedge_stages = {edges}\nbackend = "))
    };
    let hashes = |run: &std::path::Path, n: usize| worker_hashes(run, 0..n);
    let cases = [
        // Two kills, the second in epoch 2: stage 2 (rebuilt from stages 1 and 3), then stage 3.
        ("checkfree", grid(3, true, 5, 1, "checkfree"), 5, &["2@8", "3@16"][..], "from Stage(1) + Stage(3)"),
        ("checkfree_plus", grid(4, true, 6, 1, "checkfree_plus"), 6, &["0@8"], "from CopyHeldBy(1)"),
        ("redundant", grid(4, false, 4, 1, "redundant"), 4, &["2@8"], "restored from stage 1's redundant copy"),
        (
            "replica",
            grid(3, true, 5, 2, "checkfree"),
            10,
            &["5@8"],
            "copied the weights and optimizer moments of replica 0",
        ),
        (
            "checkpoint",
            grid(4, false, 4, 1, "checkpoint").replace("[[arms]]", "[recovery]\ncheckpoint_every = 5\n[[arms]]"),
            4,
            &["2@12"],
            "read its predecessor's step-10 checkpoint from storage",
        ),
    ];
    // The 4-stage grid without a kill (what it trains does not depend on how it would recover).
    let plain = dir.path().join("plain");
    std::fs::write(dir.path().join("plain.toml"), grid(4, false, 4, 1, "redundant"))?;
    let out = swarmlab()
        .args(["launch", "--local", "4", "--protocol", "pipeline", "--config"])
        .arg(dir.path().join("plain.toml"))
        .arg("--out")
        .arg(&plain)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plain = hashes(&plain, 4)?;
    for (name, config_text, nodes, kills, rebuilt) in cases {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, config_text)?;
        let run = dir.path().join(name);
        let out = swarmlab()
            .args(["launch", "--local", &nodes.to_string(), "--protocol", "pipeline", "--idle-timeout-s", "2"])
            .args(kills.iter().flat_map(|k| ["--kill", k]))
            .args(["--replace", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&run)
            .output()?;
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let report = std::fs::read_to_string(run.join("report.md"))?;
        assert_eq!(report.matches("its successor finished").count(), kills.len(), "{name}: {report}");
        assert_eq!(report.matches("| finished |").count(), nodes - kills.len(), "{name}: {report}");
        assert!(report.contains(rebuilt) && report.contains("replaced the killed worker"), "{name}: {report}");
        assert_eq!(report.matches("after the kill").count(), kills.len(), "{name}: the time each kill cost: {report}");
        // Every other worker halted for each successor (a node killed later took its own events along).
        let halted = format!("{} others halted", nodes - 1);
        assert_eq!(report.matches(&halted).count(), kills.len(), "{name}: {report}");
        assert!(report.matches("for the replacement of").count() >= nodes - 1, "{name}: {report}");
        assert!(report.contains(&format!("(epoch {})", kills.len())), "{name}: an epoch per replacement: {report}");
        for kill in kills {
            assert!(run.join("logs").join(format!("node-{}-successor.log", &kill[..1])).is_file(), "{name}");
        }
        if name == "checkpoint" {
            assert_eq!(hashes(&run, 4)?, plain, "a checkpoint restores the same bits: {report}");
        }
        if name == "redundant" {
            // The step everyone resumed from, and the step after which the predecessor's copy was sent.
            let after = |key: &str| {
                let digits = report.split(key).nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?;
                digits.parse::<u64>().ok()
            };
            let resumed = after("trains again from step ").ok_or("no resume step")?;
            let copied = after("state after step ").ok_or("the holder sent no copy")?;
            if copied + 1 == resumed {
                assert_eq!(hashes(&run, 4)?, plain, "an exact copy restores the same bits: {report}");
            }
        }
    }
    // Under data parallelism the successor of a replica and the others end with the same weights.
    let replicas = hashes(&dir.path().join("replica"), 10)?;
    for s in 0..5 {
        assert_eq!(replicas[2 * s], replicas[2 * s + 1], "stage {s}: {replicas:?}");
    }
    // --replace needs a kill to follow and a pipeline.
    let out =
        swarmlab().args(["launch", "--local", "2", "--protocol", "sapo", "--kill", "1@2", "--replace"]).output()?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--protocol pipeline"));
    Ok(())
}

/// SkipPipe on real nodes when a node leaves for good: its key announces the leave (`launch --leave`),
/// every worker schedules the paths again by itself from the new membership, and the run goes on without
/// it (a dead worker on a path would stall it); the place can come back (`--late`), starting from a
/// replica of its stage. A data replica can leave too (its micro-batches are no longer drawn and the next
/// row evaluates). A leave that would leave a stage without a worker is refused before anyone halts.
#[test]
fn a_skippipe_swarm_schedules_its_paths_again_when_a_node_leaves_and_comes_back()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // The released trainer's rule (one clip of the whole model's norm, which the rows send each other)
    // and every row evaluating: where a departed worker's replica stands in.
    let arm = "label = \"SkipPipe\"\nstages = 4\nreplicas = 2\ngradients = \"whole_model\"\n\
               routing = { kind = \"skippipe\", skip_ratio = 0.25, memory = 4 }\n";
    let text = node_run(40, "", arm)
        .replace("micro_batches = 1", "micro_batches = 2")
        .replace("eval_every = 0", "eval_every = 10\neval_all_replicas = true")
        .replace("backend = ", "layers = 4\nbackend = ")
        .replace("[[arms]]", "[geo]\n[[arms]]");
    let config = dir.path().join("skippipe.toml");
    std::fs::write(&config, &text)?;
    let launch = |name: &str, extra: &[&str]| -> Result<(std::path::PathBuf, String), Box<dyn std::error::Error>> {
        let run = dir.path().join(name);
        let report = launch_pipeline(&config, 8, extra, &run)?;
        Ok((run, report))
    };
    // Stage 1's replica of row 0 leaves at step 8 (row 0, the evaluating one, then runs through replica
    // 1 of stage 1) and comes back at step 20.
    let (run, report) = launch("back", &["--kill", "2@8", "--leave", "--late", "2@20"])?;
    assert_eq!(
        report.matches(": s1r0 left the run for good; trains again").count(),
        7,
        "every other worker halted: {report}"
    );
    assert!(report.contains("paths scheduled without workers [2]"), "{report}");
    assert!(report.contains("the others halted for node 2's leave and went on without it"), "{report}");
    assert!(report.contains(", left the run; came back and finished"), "{report}");
    assert!(report.contains("s1r0 came back to the run") && report.contains("for the return of s1r0"), "{report}");
    assert!(report.contains("copied the weights and optimizer moments of replica 1"), "{report}");
    assert_eq!(report.matches("| finished |").count(), 7, "{report}");
    let hashes = worker_hashes(&run, 0..8)?;
    for s in 0..4 {
        assert_eq!(hashes[2 * s], hashes[2 * s + 1], "stage {s}'s replicas average their gradients");
    }
    // The data replica of row 0 leaves for good, then stage 2's replica 1 (in a second epoch).
    let (run, report) = launch("origin", &["--kill", "0@8", "--kill", "5@16", "--leave"])?;
    assert!(report.contains("; left the run for good |"), "{report}");
    assert!(report.contains("s0r0 left the run for good: 7 others halted"), "the leave's own events: {report}");
    assert_eq!(report.matches(": s0r0 left the run for good; trains again").count(), 6, "{report}");
    assert!(report.contains("s2r1 left the run for good: 6 others halted"), "{report}");
    assert!(report.contains("(epoch 2) without workers [0, 5]"), "{report}");
    assert_eq!(report.matches("| finished |").count(), 6, "{report}");
    assert!(!run.join("nodes/worker-0.json").exists() && run.join("nodes/worker-1.json").is_file());
    // Every row finds the same whole-model norm (summed in stage order): the replicas stay together
    // although their clip binds harder once one data replica carries the step.
    let hashes = worker_hashes(&run, [2, 3, 6, 7])?;
    assert!(hashes[0] == hashes[1] && hashes[2] == hashes[3], "{hashes:?}");
    // A stage cannot go on without any worker: the leave is refused before anyone halts.
    let fixed = dir.path().join("fixed.toml");
    std::fs::write(&fixed, node_run(4, "", "label = \"rows\"\nstages = 2\nreplicas = 1\n"))?;
    let peers = node_keys(dir.path(), 2)?;
    let out = swarmlab()
        .args(["node", "--protocol", "pipeline", "--leave", "--config"])
        .arg(&fixed)
        .arg("--key")
        .arg(dir.path().join("node1.key"))
        .arg("--peers")
        .arg(&peers)
        .arg("--out")
        .arg(dir.path().join("fixed"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cannot leave the run"), "{stderr}");
    assert!(stderr.contains("no worker of stage") && stderr.contains("is left in the run"), "{stderr}");
    // --leave follows a kill, in a pipeline, and is not a replacement.
    let out = swarmlab().args(["launch", "--local", "2", "--protocol", "sapo", "--kill", "1@2", "--leave"]).output()?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--protocol pipeline"));
    Ok(())
}

/// A data-parallel pipeline of several stages outlives a worker that leaves for good: its row goes on
/// through the replica of its stage still in the run, which runs both rows' micro-batches. With one
/// micro-batch per row that replica's gradient is the same sum the all-reduce would have made, so the
/// run ends with the same bits as the run without the leave.
#[test]
fn a_ddp_pipeline_goes_on_without_a_worker_that_left_with_the_same_bits() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ddp.toml");
    std::fs::write(&config, node_run(30, "", "label = \"DDP\"\nstages = 2\nreplicas = 2\n"))?;
    let run = |name: &str, extra: &[&str]| -> Result<(Vec<String>, String), Box<dyn std::error::Error>> {
        let run = dir.path().join(name);
        let report = launch_pipeline(&config, 4, extra, &run)?;
        Ok((worker_hashes(&run, 0..3)?, report))
    };
    let (plain, _) = run("plain", &[])?;
    // Stage 1's replica 1 leaves at step 8: stage 1's replica 0 stands in for it in row 1.
    let (left, report) = run("leave", &["--kill", "3@8", "--leave"])?;
    assert_eq!(report.matches(": s1r1 left the run for good; trains again").count(), 3, "{report}");
    assert!(report.contains("; left the run for good |"), "{report}");
    assert_eq!(left, plain, "the same bits as without the leave: {report}");
    Ok(())
}

/// Why the namespace tests cannot run here, if they cannot: making a network namespace needs root and
/// iproute2, and `needs` is a command (and what its failing means) that must also run inside one.
fn namespaces_unavailable(needs: Option<(&[&str], &'static str)>) -> Option<&'static str> {
    let probe = format!("swl-probe-{}", std::process::id());
    let ip = |args: &[&str]| std::process::Command::new("ip").args(args).output().is_ok_and(|o| o.status.success());
    if !ip(&["netns", "add", &probe]) {
        return Some("network namespaces are not permitted here (`ip netns add` needs root and iproute2)");
    }
    let missing = needs.filter(|(command, _)| !ip(&[&["netns", "exec", &probe][..], command].concat()));
    ip(&["netns", "del", &probe]);
    missing.map(|(_, why)| why)
}

/// Nodes on hosts of their own, on one machine: every node in a network namespace, joined by veth pairs
/// to a bridge (`launch --netns`). A pipeline whose worker is killed there and replaced (checkpoint-restart
/// from storage) ends with the same bits as the same run on loopback without the kill. Where network
/// namespaces are not permitted (not root), the test says so and skips.
#[test]
fn nodes_in_network_namespaces_train_the_same_bits_as_on_loopback() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(why) = namespaces_unavailable(None) {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let namespaces = || -> std::io::Result<String> {
        Ok(String::from_utf8_lossy(&std::process::Command::new("ip").args(["netns", "list"]).output()?.stdout)
            .into_owned())
    };
    let before = namespaces()?;
    let dir = tempfile::tempdir()?;
    let arm = "label = \"S=4\"\nstages = 4\nreplicas = 1\nrecovery = \"checkpoint\"\n";
    let text = node_run(30, "", arm)
        .replace("backend = ", "layers = 4\nbackend = ")
        .replace("[[arms]]", "[recovery]\ncheckpoint_every = 5\n[[arms]]");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(&config, text)?;
    let (loopback, spaces) = (dir.path().join("loopback"), dir.path().join("netns"));
    let out = swarmlab()
        .args(["launch", "--local", "4", "--protocol", "pipeline", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&loopback)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = swarmlab()
        .args(["launch", "--local", "4", "--protocol", "pipeline", "--netns"])
        .args(["--kill", "1@12", "--replace", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&spaces)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let peers = std::fs::read_to_string(spaces.join("peers.toml"))?;
    assert!(peers.contains("addr = \"10.213.") && !peers.contains("127.0.0.1"), "{peers}");
    let report = std::fs::read_to_string(spaces.join("report.md"))?;
    assert!(
        report.contains("network namespaces") && report.contains("read its predecessor's step-10 checkpoint"),
        "{report}"
    );
    for i in 0..4 {
        let hash = |run: &std::path::Path| -> Result<String, Box<dyn std::error::Error>> {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(run.join(format!("nodes/worker-{i}.json")))?)?;
            Ok(v["weights_blake3"].as_str().ok_or("no hash")?.to_owned())
        };
        assert_eq!(hash(&spaces)?, hash(&loopback)?, "worker {i}");
    }
    // The namespaces are gone again.
    assert_eq!(namespaces()?, before, "the launch left namespaces behind");
    Ok(())
}

/// Nodes that know only a relay's address (`launch --p2p`: each joins through the relay and finds the
/// others in the swarm's Kademlia table) train a DDP pipeline to the same bits as nodes that dial the
/// peers file's addresses — even with a worker killed and replaced by a successor with its key (the
/// others drop their connections to its previous process); on loopback every pair talks directly.
#[test]
fn nodes_that_join_through_a_relay_train_the_same_bits_as_nodes_that_dial_each_other()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ddp.toml");
    std::fs::write(&config, node_run(6, "", "label = \"DDP R=3\"\nstages = 1\nreplicas = 3\n"))?;
    let (dialled, joined) = (dir.path().join("quic"), dir.path().join("p2p"));
    launch_pipeline(&config, 3, &[], &dialled)?;
    let report = launch_pipeline(&config, 3, &["--p2p", "--kill", "1@3", "--replace"], &joined)?;
    assert_eq!(worker_hashes(&joined, 0..3)?, worker_hashes(&dialled, 0..3)?);
    assert!(report.contains("its successor finished"), "{report}");
    assert!(report.contains("every node joins through the relay at /ip4/127.0.0.1/udp/"), "{report}");
    let journal = std::fs::read_to_string(joined.join("launch.log"))?;
    for i in 0..3 {
        for j in (0..3).filter(|&j| j != i) {
            assert!(journal.contains(&format!("node {i}: p2p path to node {j}: direct")), "{i} -> {j}: {journal}");
        }
    }
    Ok(())
}

/// Link emulation between hosts of their own: with `--netns --emulate-link`, the emulators run in the
/// switch's namespace, one in front of each node; a DDP run through them ends with the same bits as on
/// loopback without them, and the report sets its time per step beside the simulated network's.
#[test]
fn emulated_links_between_network_namespaces_keep_the_bits() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(why) = namespaces_unavailable(None) {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ddp.toml");
    let arm = "label = \"DDP R=2\"\nstages = 1\nreplicas = 2\n";
    std::fs::write(&config, node_run(4, "latency_ms = 5\nmbit_per_s = 100\n", arm))?;
    let (loopback, emulated) = (dir.path().join("loopback"), dir.path().join("emulated"));
    launch_pipeline(&config, 2, &[], &loopback)?;
    let report = launch_pipeline(&config, 2, &["--netns", "--emulate-link"], &emulated)?;
    assert_eq!(worker_hashes(&emulated, 0..2)?, worker_hashes(&loopback, 0..2)?);
    assert!(report.contains("a link emulator in front of each node"), "{report}");
    let journal = std::fs::read_to_string(emulated.join("launch.log"))?;
    let moved = journal
        .lines()
        .find_map(|l| l.strip_prefix("link emulators: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("no emulator counters: {journal}"))?;
    assert!(moved > 100, "{journal}");
    assert!(journal.contains("predicted by the simulated network"), "{journal}");
    Ok(())
}

/// Two home routers and a public node: nodes 1 and 2 each sit behind a NAT namespace of their own
/// (nftables masquerade; nobody can dial them), node 0 and the relay on the shared bridge. Each node is
/// given only the relay's address. The SAPO swarm plays every round, every pair exchanges messages, and
/// the test says for each pair whether it went direct (hole punched through both NATs) or through the
/// relay. Then a DDP pipeline with two of its three workers behind NAT ends with the bits of the same run
/// on loopback. Where network namespaces or nftables are not available, it says so and skips.
#[test]
fn nodes_behind_nat_join_from_one_bootstrap_address_and_punch_through() -> Result<(), Box<dyn std::error::Error>> {
    let nft = (&["nft", "list", "tables"][..], "no nftables here (`nft`), which the NAT namespaces masquerade with");
    if let Some(why) = namespaces_unavailable(Some(nft)) {
        eprintln!("skipped: {why}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sapo.toml");
    std::fs::write(&config, node_swarm(3, 20, ""))?;
    let run = dir.path().join("nat");
    let out = swarmlab()
        .args(["launch", "--local", "3", "--netns", "--behind-nat", "1,2", "--idle-timeout-s", "5", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..3 {
        let agent: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join(format!("nodes/agent-{i}.json")))?)?;
        assert_eq!(agent["rounds"].as_array().map(Vec::len), Some(20), "agent {i} finished");
    }
    let peers = std::fs::read_to_string(run.join("peers.toml"))?;
    assert!(peers.contains("addr = \"10.214.2.2:") && peers.contains("addr = \"10.214.3.2:"), "{peers}");
    let journal = std::fs::read_to_string(run.join("launch.log"))?;
    assert!(journal.contains("each behind a NAT router of its own"), "{journal}");
    let path = |i: usize, j: usize| {
        let line = format!("node {i}: p2p path to node {j}: ");
        journal.lines().find_map(|l| l.strip_prefix(&line)).map(str::to_owned)
    };
    // A node behind NAT reaches the public node's own address through its router: no relay needed.
    assert!(path(1, 0).is_some_and(|p| p.starts_with("direct")), "{journal}");
    for (i, j) in [(0, 1), (0, 2), (1, 2), (2, 1)] {
        let how = path(i, j).ok_or_else(|| format!("node {i} never talked to node {j}: {journal}"))?;
        assert!(how.starts_with("direct") || how == "through the relay", "{i} -> {j}: {how}");
        eprintln!("node {i} -> node {j}: {how}");
    }
    let report = std::fs::read_to_string(run.join("report.md"))?;
    assert!(report.contains("## How the nodes talked"), "{report}");
    // Training through the NATs: a DDP pipeline ends with the bits of the same run on loopback.
    let config = dir.path().join("ddp.toml");
    std::fs::write(&config, node_run(4, "", "label = \"DDP R=3\"\nstages = 1\nreplicas = 3\n"))?;
    let (loopback, behind) = (dir.path().join("ddp-loopback"), dir.path().join("ddp-nat"));
    launch_pipeline(&config, 3, &[], &loopback)?;
    launch_pipeline(&config, 3, &["--netns", "--behind-nat", "0,2"], &behind)?;
    assert_eq!(worker_hashes(&behind, 0..3)?, worker_hashes(&loopback, 0..3)?);
    Ok(())
}

/// A node killed mid-run: the other three finish every round, notice it gone (an event in their logs),
/// and the launcher's report says what happened.
#[test]
fn a_swarm_carries_on_when_one_of_four_nodes_is_killed() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sapo.toml");
    std::fs::write(&config, node_swarm(4, 300, ""))?;
    let run = dir.path().join("launch");
    let out = swarmlab()
        .args(["launch", "--local", "4", "--idle-timeout-s", "1", "--kill", "3@2", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..3 {
        let agent: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join(format!("nodes/agent-{i}.json")))?)?;
        assert_eq!(agent["rounds"].as_array().map(Vec::len), Some(300), "agent {i} finished");
        assert!(run.join(format!("nodes/node-{i}.h5")).is_file());
    }
    assert!(!run.join("nodes/agent-3.json").exists(), "the killed node wrote no result");
    let journal = std::fs::read_to_string(run.join("launch.log"))?;
    assert!(journal.contains("killed node 3"), "{journal}");
    let report = std::fs::read_to_string(run.join("report.md"))?;
    assert!(report.contains("| killed at round"), "{report}");
    assert!(report.contains("Leave: peer"), "the others noticed the killed node: {report}");
    Ok(())
}

/// A CodeZero swarm from a tiny configuration, with a liar and rotating roles: every agent's record and
/// the table; bad fields are named.
#[test]
fn codezero_trains_a_swarm_from_a_config_and_names_bad_fields() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("codezero.toml");
    std::fs::write(&config, codezero_swarm(2, 6))?;
    let out_dir = dir.path().join("run");
    let out = swarmlab()
        .arg("codezero")
        .arg(&config)
        .args(["--liars", "1", "--roles", "rotate:1/1/1", "--out"])
        .arg(&out_dir)
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("held-out pass rate") && stdout.contains("sandbox:"), "{stdout}");
    let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("codezero-run.json"))?)?;
    let agents = run["agents"].as_array().ok_or("no agents")?;
    assert_eq!(agents.len(), 3, "two agents and a liar");
    for a in agents {
        let rounds = a["rounds"].as_array().ok_or("no rounds")?;
        assert_eq!(rounds.len(), 6);
        // Rotating 1/1/1 over three agents: exactly one role a round each.
        for r in rounds {
            let played = ["proposer", "solver", "evaluator"].iter().filter(|k| !r[**k].is_null()).count();
            assert_eq!(played, 1, "{r}");
        }
    }
    assert!(std::fs::read_to_string(out_dir.join("config.toml"))?.contains("counts = [1, 1, 1]"));
    let defaults = swarmlab().args(["codezero", "--print-config"]).output()?;
    let printed = dir.path().join("defaults.toml");
    std::fs::write(&printed, &defaults.stdout)?;
    assert!(String::from_utf8(defaults.stdout)?.contains("[limits]"));
    let out = swarmlab()
        .arg("codezero")
        .arg(&printed)
        .args(["--rounds", "0", "--out"])
        .arg(dir.path().join("zero"))
        .output()?;
    assert!(
        !out.status.success() && String::from_utf8(out.stderr)?.contains("codezero.rounds"),
        "the printed defaults parse"
    );
    for (text, says) in [
        ("agents = 0\n", "codezero.agents"),
        ("shown = 9\n", "codezero.shown"),
        ("[roles.rotate]\nseed = 0\ncounts = [5, 5, 5]\n", "roles.rotate.counts"),
        ("[limits]\nsteps = 0\n", "limits.steps"),
        ("[limits]\nrecursion = 100000\n", "limits.recursion"),
        ("[limits]\nfuel = 3\n", "fuel"),
        ("colour = 3\n", "colour"),
    ] {
        std::fs::write(&config, text)?;
        let out = swarmlab().arg("codezero").arg(&config).arg("--out").arg(dir.path().join("bad")).output()?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(!out.status.success() && stderr.contains(says), "{text:?}: {stderr}");
    }
    assert!(!dir.path().join("bad").exists(), "nothing is written for a bad configuration");
    let out = swarmlab().args(["codezero", "--roles", "spin"]).output()?;
    assert!(!out.status.success() && String::from_utf8(out.stderr)?.contains("rotate:P/S/E"));
    Ok(())
}

/// CodeZero between four node processes, one killed mid-run: the other three play every round and
/// notice it gone.
#[test]
fn a_codezero_swarm_of_four_nodes_outlives_a_killed_one() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("codezero.toml");
    // Enough rounds after the kill for the idle timeout (1 s) and a failed redial (1 s) to pass: a
    // round takes some 40 ms here.
    std::fs::write(&config, codezero_swarm(4, 150))?;
    let run = dir.path().join("launch");
    let out = swarmlab()
        .args(["launch", "--local", "4", "--protocol", "codezero"])
        .args(["--idle-timeout-s", "1", "--kill", "3@2", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..3 {
        let agent: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join(format!("nodes/agent-{i}.json")))?)?;
        assert_eq!(agent["rounds"].as_array().map(Vec::len), Some(150), "agent {i} finished");
    }
    assert!(!run.join("nodes/agent-3.json").exists(), "the killed node wrote no result");
    let report = std::fs::read_to_string(run.join("report.md"))?;
    assert!(report.contains("| killed at round") && report.contains("solver reward"), "{report}");
    assert!(report.contains("Leave: peer"), "the others noticed the killed node: {report}");
    Ok(())
}

/// A process stopped when the test ends, however it ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Slurm recipe's task script, run as three tasks of one job on this machine: the tasks meet in the
/// output folder, make one peers file, join through a relay (`SWARM_BOOTSTRAP`) and play a SAPO swarm to
/// the end; a task whose peers never come gives up by name.
#[test]
fn the_slurm_task_script_forms_a_swarm_from_its_tasks() -> Result<(), Box<dyn std::error::Error>> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm/swarm-task.sh");
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sapo.toml");
    std::fs::write(&config, node_swarm(3, 20, ""))?;
    // Three consecutive free ports (tasks on one host listen at base + their local id).
    let base = loop {
        let first = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        if port < 65000 && (1..3).all(|k| std::net::UdpSocket::bind(("127.0.0.1", port + k)).is_ok()) {
            break port;
        }
    };
    let out = dir.path().join("job");
    // A relay the tasks join through, as nodes behind NAT would.
    let mut relay = swarmlab()
        .args(["relay", "--listen", "127.0.0.1:0", "--key"])
        .arg(dir.path().join("relay.key"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Its first line names the address to join with, once it listens.
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(relay.stdout.take().ok_or("relay stdout")?), &mut first)?;
    let _relay = Stopped(relay);
    let bootstrap =
        first.trim().strip_prefix("--bootstrap ").ok_or_else(|| format!("relay said {first:?}"))?.to_owned();
    let task = |rank: usize, tasks: usize, out: &std::path::Path, wait_s: u32| {
        Command::new("bash")
            .arg(&script)
            .arg("sapo")
            .arg(&config)
            .arg(out)
            .env("SLURM_PROCID", rank.to_string())
            .env("SLURM_NTASKS", tasks.to_string())
            .env("SLURM_LOCALID", rank.to_string())
            .env("SWARM_HOST", "127.0.0.1")
            .env("SWARM_PORT_BASE", base.to_string())
            .env("SWARM_WAIT_S", wait_s.to_string())
            .env("SWARM_BOOTSTRAP", &bootstrap)
            .env("SWARMLAB", env!("CARGO_BIN_EXE_swarmlab"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    };
    let children = (0..3).map(|r| task(r, 3, &out, 60)).collect::<Result<Vec<_>, _>>()?;
    let mut places = Vec::new();
    for (rank, child) in children.into_iter().enumerate() {
        let done = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(
            done.status.success() && stderr.contains("joined the swarm through its relay"),
            "task {rank}: {stderr}"
        );
        let task_dir = out.join(format!("task-{rank}"));
        let peers = std::fs::read_to_string(task_dir.join("peers.toml"))?;
        assert_eq!(peers.matches("[[peer]]").count(), 3, "task {rank}'s peers file lists every task");
        let results: Vec<_> = std::fs::read_dir(&task_dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("agent-") && n.ends_with(".json"))
            .collect();
        assert_eq!(results.len(), 1, "task {rank}: {results:?}");
        let agent: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(task_dir.join(&results[0]))?)?;
        assert_eq!(agent["rounds"].as_array().map(Vec::len), Some(20), "task {rank} played every round");
        places.push(results[0].clone());
    }
    places.sort();
    assert_eq!(places, ["agent-0.json", "agent-1.json", "agent-2.json"], "one place per task");
    // A job whose other task never starts: the one that did gives up after the wait, naming the count.
    let alone = task(0, 2, &dir.path().join("alone"), 1)?.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(!alone.status.success() && stderr.contains("only 1 of 2 peers"), "{stderr}");
    Ok(())
}

/// Verde between node processes: a referee and three trainers on loopback settle as the simulated
/// network does (the same disputes, winners, steps and records); with the honest trainer that defends
/// first killed mid-dispute, it loses at the deadline and the other honest trainer takes its claim up
/// and wins.
#[test]
fn verification_nodes_settle_as_the_simulated_network_and_a_killed_defender_loses()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("verify.toml");
    std::fs::write(
        &config,
        "model = \"tiny\"\nsteps = 6\ntrainers = [\"honest\", \"perturb-op@3:17\", \"honest\"]\ndeadline_s = 2.0\n",
    )?;
    let launch = |name: &str, kill: Option<&str>| -> Result<serde_json::Value, Box<dyn std::error::Error>> {
        let run = dir.path().join(name);
        let mut command = swarmlab();
        command.args(["launch", "--local", "4", "--protocol", "verify", "--idle-timeout-s", "2", "--config"]);
        command.arg(&config).arg("--out").arg(&run);
        if let Some(k) = kill {
            command.args(["--kill", k]);
        }
        let out = command.output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report = std::fs::read_to_string(run.join("report.md"))?;
        assert!(report.contains("| referee: "), "{report}");
        let ledger = std::fs::read_to_string(run.join("nodes/stakes.ledger"))?;
        assert!(ledger.lines().count() >= 4, "three deposits and a settlement, signed: {ledger}");
        Ok(serde_json::from_str(&std::fs::read_to_string(run.join("nodes/referee.json"))?)?)
    };
    let plain = launch("plain", None)?;
    assert_eq!(plain["same_as_simulated"], true, "{plain}");
    let disputes = plain["quic"]["disputes"].as_array().cloned().unwrap_or_default();
    assert_eq!(disputes.len(), 1, "{plain}");
    assert_eq!(
        (disputes[0]["winner"].as_u64(), disputes[0]["step"].as_u64(), disputes[0]["record"].as_u64()),
        (Some(0), Some(3), Some(17))
    );
    assert_eq!(plain["quic"]["standing"], serde_json::json!([0, 2]));

    let killed = launch("killed", Some("1@4"))?;
    let disputes = killed["quic"]["disputes"].as_array().cloned().unwrap_or_default();
    assert_eq!(disputes.len(), 2, "{killed}");
    assert!(
        disputes[0]["outcome"].as_str().is_some_and(|o| o.contains("trainer 1 wins: did not answer in time")),
        "{killed}"
    );
    assert_eq!((disputes[1]["trainer"].as_u64(), disputes[1]["winner"].as_u64()), (Some(2), Some(2)), "{killed}");
    assert_eq!(killed["quic"]["accepted"], plain["quic"]["accepted"], "the honest state is accepted all the same");
    assert_eq!(killed["quic"]["standing"], serde_json::json!([2]));
    Ok(())
}

/// A bad verification configuration is refused before any node starts, naming what is wrong.
#[test]
fn a_bad_verification_configuration_is_refused_by_name() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    for (i, (text, says)) in [
        ("steps = 4\nreferee = 1\n", "unknown field `referee`"),
        ("trainers = [\"honest\", \"perturb-op@x\"]\n", "perturb-op needs @STEP:OP"),
        ("trainers = []\n", "at least one trainer"),
        ("deadline_s = 0.0\n", "deadline_s"),
        ("trainers = [\"honest\", \"honest\"]\n", "it needs 3 nodes"),
    ]
    .into_iter()
    .enumerate()
    {
        let config = dir.path().join(format!("verify-{i}.toml"));
        std::fs::write(&config, text)?;
        let run = dir.path().join(format!("run-{i}"));
        let out = swarmlab()
            .args(["launch", "--local", "4", "--protocol", "verify", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&run)
            .output()?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(!out.status.success() && stderr.contains(says), "{text:?}: {stderr}");
        assert!(!run.exists(), "{text:?}: nothing is written for a refused configuration");
    }
    Ok(())
}
