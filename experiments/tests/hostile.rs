//! Hostile input against the `swarmlab` binary: each case a user reported (or could) ends in a clean
//! error that names the problem — exit code 1 (2 for a refused flag), never a panic (101), an abort
//! or a hang — and leaves nothing half-written or overwritten.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn swarmlab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_swarmlab"))
}

/// Runs `cmd` for at most a minute (a hostile input must never hang the program).
fn bounded(mut cmd: Command) -> Result<Output, Box<dyn std::error::Error>> {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    finish(child, &format!("{cmd:?}"))
}

/// Waits for `child` to end, a minute at most (then it is killed and that is the error).
fn finish(mut child: std::process::Child, what: &str) -> Result<Output, Box<dyn std::error::Error>> {
    let began = Instant::now();
    while child.try_wait()?.is_none() {
        if began.elapsed() > Duration::from_secs(60) {
            child.kill()?;
            return Err(format!("{what} still ran after a minute").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

/// Asserts that `cmd` failed cleanly (exit code 1, or 2 for a flag the argument parser refused) with
/// every one of `says` in its error.
fn refused(cmd: Command, says: &[&str]) -> TestResult {
    let what = format!("{cmd:?}");
    let out = bounded(cmd)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(1 | 2)), "{what}: not a clean error (a panic is 101):\n{stderr}");
    for s in says {
        assert!(stderr.contains(s), "{what}: the error does not say {s:?}:\n{stderr}");
    }
    Ok(())
}

/// `swarmlab run` on a configuration made of `text`.
fn run_config(dir: &Path, text: &str) -> Result<Command, Box<dyn std::error::Error>> {
    let path = dir.join("hostile.toml");
    std::fs::write(&path, text)?;
    let mut cmd = swarmlab();
    cmd.arg("run").arg(path).arg("--out").arg(dir.join("out"));
    Ok(cmd)
}

/// `swarmlab sapo` on a configuration made of `text`, plus `args`.
fn sapo_config(dir: &Path, text: &str, args: &[&str]) -> Result<Command, Box<dyn std::error::Error>> {
    let path = dir.join("sapo.toml");
    std::fs::write(&path, text)?;
    let mut cmd = swarmlab();
    cmd.arg("sapo").arg(path).args(args).arg("--out").arg(dir.join("sapo-out"));
    Ok(cmd)
}

#[test]
fn numbers_that_panicked_or_ran_at_zero_are_named_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    for (text, field) in [
        ("[network]\nlatency_ms = inf\n", "network.latency_ms"),
        ("[network]\nlatency_ms = 1e300\n", "network.latency_ms"),
        ("[network]\nlatency_ms = nan\n", "network.latency_ms"),
        ("[network]\nlatency_ms = -1\n", "network.latency_ms"),
        ("[network]\nmbit_per_s = 1e-300\n", "network.mbit_per_s"),
        ("eval_every = -1\n", "eval_every"),
        ("eval_batches = 0\n", "eval_batches"),
        ("[corpus]\nval_fraction = 0.5\n", "corpus.val_fraction"),
        ("[recovery]\nprotect = [99]\n", "recovery.protect"),
        ("[scale]\ngroup_size = 0\n", "scale.group_size"),
        ("[scale]\nreplicas = [8]\narrival_spread_s = 1e300\n", "scale.arrival_spread_s"),
        ("[scale]\nreplicas = [8]\nlatency_ms = [20.0, inf]\n", "scale.links"),
        ("name = \"../../escape\"\n", "invalid name"),
        ("name = \"/tmp/absolute\"\n", "invalid name"),
    ] {
        refused(run_config(dir.path(), text)?, &[field])?;
    }
    let twice = "[[arms]]\nlabel = \"a\"\nstages = 1\nreplicas = 1\n[[arms]]\nlabel = \"a\"\nstages = 1\nreplicas = 2\n";
    refused(run_config(dir.path(), twice)?, &["arms[1].label", "already"])?;
    let skip = "[[arms]]\nlabel = \"a\"\nstages = 1\nreplicas = 2\nrouting = { kind = \"fixed\", skip_ratio = 0.5 }\n";
    refused(run_config(dir.path(), skip)?, &["arms[0].routing", "skip_ratio"])?;
    let wait = "[[arms]]\nlabel = \"a\"\nstages = 1\nreplicas = 2\nsync = { kind = \"noloco\", timeout_s = 1e300 }\n";
    refused(run_config(dir.path(), wait)?, &["noloco.timeout_s"])?;
    for (text, field) in [
        ("latency_ms = inf\n", "sapo.latency_ms"),
        ("latency_ms = 1e300\n", "sapo.latency_ms"),
        ("bandwidth_mbit = 1e-300\n", "sapo.bandwidth_mbit"),
    ] {
        refused(sapo_config(dir.path(), text, &[])?, &[field])?;
    }
    assert!(!dir.path().join("out").exists() && !dir.path().join("sapo-out").exists(), "nothing was written");
    Ok(())
}

#[test]
fn sizes_that_aborted_or_never_ended_are_refused_before_anything_starts() -> TestResult {
    let dir = tempfile::tempdir()?;
    let arm = |stages: u64, replicas: u64| format!("[[arms]]\nlabel = \"a\"\nstages = {stages}\nreplicas = {replicas}\n");
    for (text, field) in [
        ("micro_batch = 100000000\n".to_owned(), "micro_batch"),
        (arm(1, 100_000), "arms[0].replicas"),
        ("steps = 1000000000000\n".to_owned(), "steps"),
        ("layers = 100000\n".to_owned(), "layers"),
        ("steps = 18446744073709551615\n".to_owned(), "steps"),
    ] {
        refused(run_config(dir.path(), &text)?, &[field])?;
    }
    // Within every range, but more than the machine holds: refused from the estimate, with the way out.
    refused(run_config(dir.path(), "micro_batch = 65536\nseq = 64\n")?, &["memory", "--allow-large"])?;
    for (text, field) in [
        ("completions = 1000000000\n", "sapo.completions"),
        ("liars = 1000000000000\n", "liars"),
        ("agents = 100000\n", "sapo.agents"),
    ] {
        refused(sapo_config(dir.path(), text, &[])?, &[field])?;
    }
    let mut verify = swarmlab();
    verify.args(["verify", "--steps", "1000000000"]);
    refused(verify, &["--steps 1000000000", "outside"])?;
    assert!(!dir.path().join("out").exists(), "nothing was written");
    Ok(())
}

#[test]
fn sapo_verify_and_reproduce_flags_say_what_is_wrong() -> TestResult {
    let dir = tempfile::tempdir()?;
    refused(sapo_config(dir.path(), "", &["--mix", "9/9"])?, &["sapo.mix", "one per task family"])?;
    refused(sapo_config(dir.path(), "", &["--mix", "18446744073709551615/1"])?, &["sapo.mix", "at most"])?;
    let twice = "[tasks]\nfamilies = [\"list_ops\", \"list_ops\"]\n";
    refused(sapo_config(dir.path(), twice, &["--mix", "1/1"])?, &["families[1]", "twice"])?;
    refused(sapo_config(dir.path(), "[policy.model]\nd_model = 64\n", &[])?, &["model"])?;
    let mut zero = swarmlab();
    zero.args(["verify", "--steps", "0"]);
    refused(zero, &["--steps 0"])?;
    let mut honest = swarmlab();
    honest.args(["verify", "--trainer", "honest@3"]);
    refused(honest, &["honest takes no @STEP"])?;
    for (trainer, says) in [("skip@0:1", "PER_MILLE"), ("skip@1001:1", "PER_MILLE"), ("skip@5", "PER_MILLE:SEED"), ("skip@5:x", "SEED")] {
        let mut skip = swarmlab();
        skip.args(["verify", "--steps", "2", "--trainer", trainer]);
        refused(skip, &[says])?;
    }
    for every in ["0", "-2", "x"] {
        let mut keep = swarmlab();
        keep.args(["verify", "--steps", "2", &format!("--checkpoint-every={every}")]);
        refused(keep, &["--checkpoint-every"])?;
    }
    for deadline in ["1e300", "nan", "-1"] {
        let mut late = swarmlab();
        late.args(["verify", "--steps", "2", &format!("--deadline-s={deadline}")]);
        refused(late, &["--deadline-s"])?;
    }
    for seeds in ["0", "101", "-1", "x"] {
        let mut study = swarmlab();
        study.args(["reproduce", "noloco", "--quick", &format!("--seeds={seeds}")]);
        refused(study, &["--seeds"])?;
    }
    let mut rungs = swarmlab();
    rungs.args(["reproduce", "noloco", "--quick", "--scale", "paper"]);
    refused(rungs, &["--quick", "--scale"])?;
    let mut rung = swarmlab();
    rung.args(["reproduce", "noloco", "--scale", "huge"]);
    refused(rung, &["--scale", "smoke", "paper"])?;
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("no-such-text");
    let mut corpus = swarmlab();
    corpus.args(["reproduce", "checkfree", "--quick", "--out"]).arg(dir.path().join("out")).arg("--corpus").arg(&missing);
    refused(corpus, &["no-such-text", "cannot read"])?;
    Ok(())
}

#[test]
fn endless_or_odd_files_are_read_up_to_a_limit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut config = swarmlab();
    config.args(["run", "/dev/zero", "--out"]).arg(dir.path().join("out"));
    refused(config, &["/dev/zero", "more than"])?;
    let key = dir.path().join("node.key");
    let mut keygen = swarmlab();
    keygen.arg("keygen").arg("--out").arg(&key);
    assert!(bounded(keygen)?.status.success());
    let mut node = swarmlab();
    node.args(["node", "--key", "/dev/zero", "--peers", "/dev/zero"]);
    refused(node, &["/dev/zero"])?;
    let mut node = swarmlab();
    node.arg("node").arg("--key").arg(&key).args(["--peers", "/dev/zero"]);
    refused(node, &["/dev/zero", "more than"])?;
    refused(run_config(dir.path(), "[corpus]\npath = \"/dev/null\"\n")?, &["/dev/null", "neither a text file nor a directory"])?;
    Ok(())
}

#[test]
fn a_run_folder_is_not_replaced_without_force() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.md"), "an earlier run")?;
    refused(run_config(dir.path(), "steps = 1\n")?, &["holds a run already", "--force"])?;
    assert_eq!(std::fs::read_to_string(out.join("report.md"))?, "an earlier run");
    Ok(())
}

/// Two `swarmlab keygen --out k.key` at once, twenty times: never two successes for one path, and the
/// key on disk is the winner's.
#[test]
fn racing_keygens_never_both_succeed() -> TestResult {
    let dir = tempfile::tempdir()?;
    for trial in 0..20 {
        let key = dir.path().join(format!("k{trial}.key"));
        let racers: Vec<_> = (0..2)
            .map(|_| {
                swarmlab().arg("keygen").arg("--out").arg(&key).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
            })
            .collect::<Result<_, _>>()?;
        let outs: Vec<Output> = racers.into_iter().map(|c| c.wait_with_output()).collect::<Result<_, _>>()?;
        let winners: Vec<&Output> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(winners.len(), 1, "trial {trial}: {} successes", winners.len());
        let loser = outs.iter().find(|o| !o.status.success()).ok_or("no loser")?;
        assert!(String::from_utf8_lossy(&loser.stderr).contains("already exists"), "trial {trial}");
        let printed = String::from_utf8_lossy(&winners[0].stdout).into_owned();
        let mut check = swarmlab();
        check.arg("keygen").arg("--out").arg(&key);
        assert!(!bounded(check)?.status.success(), "the key is still there");
        assert!(printed.contains("wrote"), "{printed}");
    }
    Ok(())
}

/// `verify --ledger`: the settlement's entries survive a second run; a ledger signed by another key, or
/// tampered with, is refused before any dispute runs and is left as it was.
#[test]
fn a_stake_ledger_signed_by_another_key_or_tampered_with_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (ledger, key, other) = (dir.path().join("stakes.ledger"), dir.path().join("ref.key"), dir.path().join("other.key"));
    for k in [&key, &other] {
        assert!(bounded({
            let mut c = swarmlab();
            c.arg("keygen").arg("--out").arg(k);
            c
        })?
        .status
        .success());
    }
    let verify = |key: &Path| {
        let mut c = swarmlab();
        c.args(["verify", "--steps", "4", "--ledger"]).arg(&ledger).arg("--key").arg(key);
        c
    };
    for entries in [6, 12] {
        let out = bounded(verify(&key))?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{entries} entries")));
    }
    let kept = std::fs::read_to_string(&ledger)?;
    refused(verify(&other), &["line 2", "does not trust"])?;
    std::fs::write(&ledger, kept.replacen("\"amount\":100", "\"amount\":900", 1))?;
    refused(verify(&key), &["line 2", "forged"])?;
    let mut alone = swarmlab();
    alone.args(["verify", "--ledger"]).arg(&ledger);
    refused(alone, &["--key"])?;
    Ok(())
}

/// Sends SIGINT (Ctrl-C) to process `pid`.
fn interrupt(pid: u32) -> TestResult {
    let status = Command::new("kill").args(["-INT", &pid.to_string()]).status()?;
    assert!(status.success(), "kill -INT {pid}");
    Ok(())
}

/// What a child prints on stderr, kept whole so a failing check can show it.
struct Printed {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Reads the child's stderr to its end.
    reader: std::thread::JoinHandle<()>,
}

impl Printed {
    /// Everything the child printed, once it has closed its stderr (after it exited).
    fn all(self) -> String {
        let _ = self.reader.join();
        self.lines.lock().map(|lines| lines.join("\n")).unwrap_or_default()
    }
}

/// Reads `child`'s stderr until a line contains `wanted` (a minute at most); the rest is drained into
/// the returned [`Printed`].
fn wait_for_line(child: &mut std::process::Child, wanted: &str) -> Result<Printed, Box<dyn std::error::Error>> {
    use std::io::BufRead;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut lines) = keep.lock() {
                lines.push(line.clone());
            }
            let _ = tx.send(line);
        }
    });
    let began = Instant::now();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(60).saturating_sub(began.elapsed()))?;
        if line.contains(wanted) {
            return Ok(Printed { lines, reader });
        }
    }
}

/// One Ctrl-C during a run: the current arm finishes, the rest do not run, the report and summary say
/// which, and the exit code says it did not complete.
#[test]
fn an_interrupted_run_says_which_arms_did_not_run() -> TestResult {
    let dir = tempfile::tempdir()?;
    let arms: String = (0..3)
        .map(|i| format!("[[arms]]\nlabel = \"arm {i}\"\nstages = 1\nreplicas = 1\n"))
        .collect();
    let text = format!(
        "steps = 30\nmicro_batches = 1\nmicro_batch = 2\nseq = 16\neval_every = 30\neval_batches = 1\n[optim]\ntotal_steps = 30\n[corpus.synthetic]\ntrain_tokens = 4096\nval_tokens = 512\n{arms}"
    );
    let mut cmd = run_config(dir.path(), &text)?;
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let printed = wait_for_line(&mut child, "swarmlab run")?;
    interrupt(child.id())?;
    let status = child.wait()?;
    let printed = printed.all();
    assert_eq!(status.code(), Some(1), "an interrupted run does not exit 0:\n{printed}");
    let out = dir.path().join("out");
    let report = std::fs::read_to_string(out.join("report.md"))
        .map_err(|e| format!("no report.md ({e}); the run printed:\n{printed}"))?;
    assert!(report.contains("Not finished") && report.contains("arm 2"), "{report}");
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
    let unfinished = summary["unfinished_arms"].as_array().ok_or("no unfinished_arms")?;
    assert!(!unfinished.is_empty() && unfinished.iter().any(|a| a == "arm 2"), "{summary}");
    Ok(())
}

/// Ctrl-C to `launch`: it stops its nodes, still gathers what they wrote, writes its report, and exits
/// non-zero.
#[test]
fn an_interrupted_launch_stops_its_nodes_and_still_reports() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sapo.toml");
    std::fs::write(
        &config,
        "agents = 2\nrounds = 100000\ncompletions = 4\n[mix]\nlocal = 1\nexternal = 1\n[warm_start]\nsteps = 5\nbatch = 8\n[tasks]\nfamilies = [\"propositional_logic\"]\nmax_level = 1\neval_per_level = 1\n",
    )?;
    let run = dir.path().join("launch");
    let mut child = swarmlab()
        .args(["launch", "--local", "2", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Once a node has started, interrupt the launch.
    wait_for_line(&mut child, "[node ")?;
    interrupt(child.id())?;
    assert!(!finish(child, "the interrupted launch")?.status.success(), "an interrupted launch does not exit 0");
    let report = std::fs::read_to_string(run.join("report.md"))?;
    assert!(report.contains("interrupted"), "{report}");
    assert!(run.join("launch.h5").is_file() && run.join("launch.log").is_file());
    Ok(())
}

/// A run.h5 whose numbers were tampered with still rewrites: a wall time too large for a duration does
/// not panic `swarmlab report`.
#[test]
fn a_tampered_run_log_rewrites_without_panicking() -> TestResult {
    let dir = tempfile::tempdir()?;
    let text = "steps = 1\nmicro_batches = 1\nmicro_batch = 2\nseq = 16\neval_every = 1\neval_batches = 1\n\
                [corpus.synthetic]\ntrain_tokens = 4096\nval_tokens = 512\n\
                [[arms]]\nlabel = \"a\"\nstages = 1\nreplicas = 1\n";
    assert!(bounded(run_config(dir.path(), text)?)?.status.success());
    let out = dir.path().join("out");
    {
        let file = hdf5::File::open_rw(out.join("run.h5"))?;
        file.group("arms")?.group("0")?.attr("wall_s")?.write_scalar(&1e300f64)?;
    }
    let mut report = swarmlab();
    report.arg("report").arg(&out);
    let done = bounded(report)?;
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    Ok(())
}
