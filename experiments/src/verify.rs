//! `swarmlab verify`: one program run by several trainers, some dishonest, settled by Verde's referee.
//! (The study, `swarmlab reproduce verde`, is [`crate::studies::verde`].)

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use models::{Backend, ModelConfig};
use verde::net::{DisputeRecord, SettleConfig};
use verde::{
    Behaviour, Checkpoints, Conduct, Execution, LedgerFile, Outcome, Program, Rules, Settlement, Structure, Weights,
    execute, execute_with, settle,
};

/// One trainer of `swarmlab verify`: how it trains and how it answers the referee.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TrainerSpec {
    pub(crate) behaviour: Behaviour,
    pub(crate) conduct: Conduct,
}

impl FromStr for TrainerSpec {
    type Err = String;

    /// `honest`, `perturb-weight@STEP`, `perturb-op@STEP:OP`, `lazy@STEP`, `skip@PER_MILLE:SEED`,
    /// `lie@STEP`, `forge-lr@STEP:FACTOR`, `forge-batch@STEP:DATA_STEP` or `mislaid@STEP:OP.INPUT`,
    /// optionally followed by `+inconsistent@N` or `+silent@N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (train, conduct) = s.split_once('+').map_or((s, None), |(a, b)| (a, Some(b)));
        let number = |what: &str, v: &str| -> std::result::Result<u64, String> {
            v.parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{what} in {s:?} must be a positive integer"))
        };
        let small = |v: &str| -> std::result::Result<u32, String> {
            u32::try_from(number("N", v)?).map_err(|_| format!("N in {s:?} is too large"))
        };
        let (kind, arg) = train.split_once('@').map_or((train, None), |(k, a)| (k, Some(a)));
        let missing = || format!("{kind} needs @STEP (in {s:?})");
        let pair = |form: &str| -> std::result::Result<(&str, &str), String> {
            arg.and_then(|a| a.split_once(':')).ok_or_else(|| format!("{kind} needs @{form} (in {s:?})"))
        };
        let behaviour = match kind {
            "honest" if arg.is_some() => return Err(format!("honest takes no @STEP (in {s:?})")),
            "honest" => Behaviour::Honest,
            "perturb-weight" => {
                Behaviour::PerturbWeight { step: number("STEP", arg.ok_or_else(missing)?)?, delta: 1e-3 }
            }
            "perturb-op" => {
                let (step, op) = arg
                    .ok_or_else(missing)?
                    .split_once(':')
                    .ok_or_else(|| format!("perturb-op needs @STEP:OP (in {s:?})"))?;
                let op = op.parse::<usize>().map_err(|_| format!("OP in {s:?} must be an operator index"))?;
                Behaviour::PerturbOp { step: number("STEP", step)?, op, delta: 0.5 }
            }
            "lazy" => Behaviour::Lazy { from: number("STEP", arg.ok_or_else(missing)?)? },
            "skip" => {
                let (per_mille, seed) = arg
                    .and_then(|a| a.split_once(':'))
                    .ok_or_else(|| format!("skip needs @PER_MILLE:SEED (in {s:?})"))?;
                let per_mille = per_mille
                    .parse::<u16>()
                    .ok()
                    .filter(|p| (1..=1000).contains(p))
                    .ok_or_else(|| format!("PER_MILLE in {s:?} must be 1 to 1000"))?;
                let seed = seed.parse::<u64>().map_err(|_| format!("SEED in {s:?} must be an integer"))?;
                Behaviour::Skipping { per_mille, seed }
            }
            "lie" => Behaviour::LieInCommitment { step: number("STEP", arg.ok_or_else(missing)?)? },
            "forge-lr" => {
                let (step, factor) = pair("STEP:FACTOR")?;
                let factor = factor
                    .parse::<f32>()
                    .ok()
                    .filter(|f| f.is_finite() && *f > 0.0 && *f != 1.0)
                    .ok_or_else(|| format!("FACTOR in {s:?} must be a positive number other than 1"))?;
                Behaviour::ForgeLr { step: number("STEP", step)?, factor }
            }
            "forge-batch" => {
                let (step, data_step) = pair("STEP:DATA_STEP")?;
                let (step, data_step) = (number("STEP", step)?, number("DATA_STEP", data_step)?);
                if step == data_step {
                    return Err(format!(
                        "forge-batch trains on another step's batch: DATA_STEP must differ from STEP (in {s:?})"
                    ));
                }
                Behaviour::ForgeBatch { step, data_step }
            }
            "mislaid" => {
                let (step, at) = pair("STEP:OP.INPUT")?;
                let (op, input) = at
                    .split_once('.')
                    .and_then(|(o, i)| Some((o.parse::<usize>().ok()?, i.parse::<usize>().ok()?)))
                    .ok_or_else(|| format!("mislaid needs @STEP:OP.INPUT, OP and INPUT indices (in {s:?})"))?;
                Behaviour::MislaidInput { step: number("STEP", step)?, op, input }
            }
            other => {
                return Err(format!(
                    "unknown trainer {other:?}: honest, perturb-weight@STEP, perturb-op@STEP:OP, lazy@STEP, skip@PER_MILLE:SEED, lie@STEP, forge-lr@STEP:FACTOR, forge-batch@STEP:DATA_STEP or mislaid@STEP:OP.INPUT"
                ));
            }
        };
        let conduct = match conduct.map(|c| c.split_once('@').unwrap_or((c, ""))) {
            None => Conduct::Faithful,
            Some(("inconsistent", n)) => Conduct::Inconsistent { from: small(n)? },
            Some(("silent", n)) => Conduct::Silent { from: small(n)? },
            Some((other, _)) => return Err(format!("unknown conduct {other:?}: +inconsistent@N or +silent@N")),
        };
        Ok(Self { behaviour, conduct })
    }
}

impl std::fmt::Display for TrainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.behaviour {
            Behaviour::Honest => write!(f, "honest")?,
            Behaviour::PerturbWeight { step, .. } => write!(f, "perturb-weight@{step}")?,
            Behaviour::PerturbOp { step, op, .. } => write!(f, "perturb-op@{step}:{op}")?,
            Behaviour::Lazy { from } => write!(f, "lazy@{from}")?,
            Behaviour::Skipping { per_mille, seed } => write!(f, "skip@{per_mille}:{seed}")?,
            Behaviour::LieInCommitment { step } => write!(f, "lie@{step}")?,
            Behaviour::ForgeLr { step, factor } => write!(f, "forge-lr@{step}:{factor}")?,
            Behaviour::ForgeBatch { step, data_step } => write!(f, "forge-batch@{step}:{data_step}")?,
            Behaviour::MislaidInput { step, op, input } => write!(f, "mislaid@{step}:{op}.{input}")?,
        }
        match self.conduct {
            Conduct::Faithful => Ok(()),
            Conduct::Inconsistent { from } => write!(f, "+inconsistent@{from}"),
            Conduct::Silent { from } => write!(f, "+silent@{from}"),
        }
    }
}

/// The programs verified: `tiny` (2 layers of width 32, batches of 4 × 16 tokens) or `small` (the
/// `small` preset, batches of 8 × 64).
pub(crate) fn program(model: &str, steps: u64, backend: Backend) -> Result<Program> {
    check_steps(steps)?;
    let base = Program::tiny(steps);
    let mut p = match model {
        "tiny" => base,
        "small" => Program { model: ModelConfig::preset("small")?, batch: 8, seq: 64, ..base },
        other => bail!("unknown model {other:?}: tiny or small"),
    };
    p.model.backend = backend;
    Ok(p)
}

/// The run lengths a verified program may have: every trainer runs it whole (and keeps every step's
/// state hash), so lengths are capped where that stays a few hours on a small machine.
const STEPS: std::ops::RangeInclusive<u64> = 1..=65_536;

/// The longest a trainer may be given to answer the referee, in seconds (a million: eleven days).
const MAX_DEADLINE_S: f64 = 1e6;

fn check_steps(steps: u64) -> Result<()> {
    if !STEPS.contains(&steps) {
        bail!("--steps {steps} is outside [{}, {}]", STEPS.start(), STEPS.end());
    }
    Ok(())
}

/// Bytes as lowercase hex.
pub(crate) use transport::hex::encode as hex;

/// A state hash's first four bytes, for tables.
fn short(h: &[u8; 32]) -> String {
    hex(&h[..4])
}

pub(crate) fn log2_ceil(n: u64) -> u32 {
    if n <= 1 { 0 } else { 64 - (n - 1).leading_zeros() }
}

/// A program, its structure and the referee's rules, and the states trainers keep.
pub(crate) struct Setup {
    pub(crate) program: Program,
    pub(crate) rules: Rules,
    pub(crate) ops: usize,
    pub(crate) honest: Arc<Execution>,
    pub(crate) checkpoints: Checkpoints,
}

impl Setup {
    pub(crate) fn new(program: Program, deadline: Duration) -> Result<Self> {
        Self::keeping(program, deadline, Checkpoints::None)
    }

    /// [`Setup::new`] with trainers that keep the states `checkpoints` asks for.
    pub(crate) fn keeping(program: Program, deadline: Duration, checkpoints: Checkpoints) -> Result<Self> {
        let structure = Arc::new(Structure::of(&program).context("deriving the program's step structure")?);
        let honest = Arc::new(execute_with(&program, Behaviour::Honest, checkpoints)?);
        let rules = Rules {
            initial: honest.hashes[0],
            steps: program.steps,
            structure: structure.clone(),
            deadline,
            level: repops::simd::current(),
        };
        let ops = structure.step(2).ops.len();
        Ok(Self { program, rules, ops, honest, checkpoints })
    }

    pub(crate) fn run(&self, spec: TrainerSpec) -> Result<Arc<Execution>> {
        if let Some(step) = spec.behaviour.first_bad_step()
            && step > self.program.steps
        {
            bail!("trainer {spec}: step {step} is past the program's {} steps", self.program.steps);
        }
        if let Behaviour::PerturbOp { op, .. } | Behaviour::MislaidInput { op, .. } = spec.behaviour
            && op >= self.ops
        {
            bail!("trainer {spec}: the program's steps have {} operators, numbered from 0", self.ops);
        }
        if let Behaviour::MislaidInput { step, op, input } = spec.behaviour {
            let arity = self.rules.structure.step(step).ops.get(op).map_or(0, |o| o.inputs.len());
            if input >= arity {
                bail!("trainer {spec}: operator {op} has {arity} inputs, numbered from 0");
            }
        }
        Ok(match spec.behaviour {
            Behaviour::Honest => self.honest.clone(),
            b => Arc::new(execute_with(&self.program, b, self.checkpoints)?),
        })
    }
}

fn describe(d: &DisputeRecord, steps: u64, positions: u64) -> String {
    let verdict = match (&d.outcome, d.winner()) {
        (Outcome::Won { fault, .. }, Some(winner)) => {
            let loser = if winner == d.trainer { d.challenger } else { d.trainer };
            format!("trainer {winner} wins; trainer {loser} {fault}")
        }
        (Outcome::BothLose(why), _) => format!("both lose: {why}"),
        _ => "agreed".to_owned(),
    };
    let s = &d.summary;
    let mut out = format!("trainer {} vs trainer {}: {verdict}\n", d.trainer, d.challenger);
    if let Some(step) = s.step {
        out += &format!("    step {step}: {} rounds (ceil log2 {steps} = {})", s.step_rounds, log2_ceil(steps));
    }
    if let Some(record) = s.record {
        let kind = if record + 2 == positions { "the state record" } else { "an operator" };
        out += &format!(
            "; record {record} of {} ({kind}): {} rounds (ceil log2 {} = {})",
            positions - 1,
            s.op_rounds,
            positions - 1,
            log2_ceil(positions - 1)
        );
    }
    out += &format!(
        "\n    {} bytes in {} messages, {:.2} s of virtual time",
        d.traffic.bytes, d.traffic.messages, d.seconds
    );
    if let Some(j) = &s.judgement {
        match &j.replayed {
            Some(op) => {
                let kind = op.split(' ').next().unwrap_or_default();
                out += &format!(
                    "\n    referee re-executed one {kind}: {} elements in {:.1} µs",
                    j.replay_elements,
                    j.replay_seconds * 1e6
                );
            }
            None => out += "\n    referee settled it by hashes and Merkle proofs alone (no re-execution)",
        }
    }
    out
}

/// How `swarmlab verify` settles: deadlines, checkpoints, an evaluation instead of training, a ledger.
pub(crate) struct Verification {
    /// How long a trainer may take to answer, in seconds.
    pub(crate) deadline_s: f64,
    /// Trainers keep their state every K steps.
    pub(crate) checkpoint_every: Option<u64>,
    /// Verify the evaluation of the trained model on this many held-out batches instead.
    pub(crate) evaluate: Option<u64>,
    /// The stake ledger file and the referee's key file.
    pub(crate) ledger: Option<(PathBuf, PathBuf)>,
}

/// The program `swarmlab verify` (or a verification node) runs: `model` trained for `steps` steps, or,
/// with `evaluate`, that model's evaluation on so many held-out batches.
pub(crate) fn verified_program(model: &str, steps: u64, evaluate: Option<u64>) -> Result<Program> {
    let program = program(model, steps, Backend::RepOps)?;
    match evaluate {
        Some(items) => {
            check_steps(items).context("the evaluation's items")?;
            Ok(program.evaluation(Weights::trained_by(&program)?, items))
        }
        None => Ok(program),
    }
}

/// The trainers' checkpoints for `--checkpoint-every`.
pub(crate) fn checkpoints(every: Option<u64>) -> Result<Checkpoints> {
    match every {
        None => Ok(Checkpoints::None),
        Some(0) => bail!("--checkpoint-every 0: give a number of steps of at least 1 (or leave the flag out for none)"),
        Some(k) => Ok(Checkpoints::Every(k)),
    }
}

/// Checks a deadline in seconds.
pub(crate) fn check_deadline(deadline_s: f64) -> Result<Duration> {
    if !(deadline_s > 0.0 && deadline_s <= MAX_DEADLINE_S) {
        bail!("--deadline-s {deadline_s} must be a positive number of seconds, at most {MAX_DEADLINE_S}");
    }
    Ok(Duration::from_secs_f64(deadline_s))
}

/// The trainers of `swarmlab verify` when none is given: honest, a perturbed operator at the middle
/// step, lazy from the step after, honest.
pub(crate) fn default_trainers(steps: u64) -> Result<Vec<TrainerSpec>> {
    let mid = steps.div_ceil(2);
    ["honest", &format!("perturb-op@{mid}:17"), &format!("lazy@{}", steps.min(mid + 1)), "honest"]
        .iter()
        .map(|s| s.parse().map_err(anyhow::Error::msg))
        .collect()
}

/// `swarmlab verify`.
pub(crate) fn verify(model: &str, steps: u64, trainers: Vec<TrainerSpec>, how: Verification) -> Result<()> {
    let Verification { deadline_s, checkpoint_every, evaluate, ledger } = how;
    // The program first: its length is checked before the default trainers are made from it.
    let program = verified_program(model, steps, evaluate)?;
    let steps = program.steps;
    let trainers = if trainers.is_empty() { default_trainers(steps)? } else { trainers };
    let deadline = check_deadline(deadline_s)?;
    // The ledger is checked before anything runs.
    let mut ledger = ledger.map(|(path, key)| open_ledger(&path, &key)).transpose()?;
    let began = Instant::now();
    let setup = Setup::keeping(program, deadline, checkpoints(checkpoint_every)?)?;
    let params = setup.program.model.param_count();
    let what = if evaluate.is_some() { "an evaluation of the trained " } else { "" };
    eprintln!(
        "program: {what}{model} model ({params} parameters), {steps} {} of {} operators each (repops; structure derived in {:.2} s); {} keep {}",
        if evaluate.is_some() { "items" } else { "steps" },
        setup.ops,
        began.elapsed().as_secs_f64(),
        if evaluate.is_some() { "evaluators" } else { "trainers" },
        checkpoint_every.map_or("no checkpoints".to_owned(), |k| format!("a checkpoint every {k} steps"))
    );
    let mut runs = Vec::new();
    for (i, spec) in trainers.iter().enumerate() {
        let e = setup.run(*spec)?;
        let score = e.score().map_or(String::new(), |s| format!(", claims score {:.6} (sum {})", s.mean(), s.sum));
        println!(
            "trainer {i}: {:<28} final state {} ({:.2} s){score}",
            spec.to_string(),
            short(e.hashes.last().unwrap_or(&[0; 32])),
            e.seconds
        );
        runs.push((e, spec.conduct));
    }
    let scores: Vec<Option<verde::Score>> = runs.iter().map(|(e, _)| e.score()).collect();
    let settlement =
        settle(&setup.rules, runs, &SettleConfig { deadline: setup.rules.deadline, ..SettleConfig::default() })?;
    print_settlement(&settlement, &setup, trainers.len());
    if let Some(accepted) = settlement.accepted {
        // The accepted score: a standing evaluator's claim, checked against the accepted final state.
        let score = scores.iter().flatten().find(|s| s.check(&accepted).is_ok());
        if let Some(s) = score {
            println!("accepted score: {:.6} nats per item over {} items (sum {})", s.mean(), s.items, s.sum);
        }
    }
    if let Some((ledger, referee)) = &mut ledger {
        record(ledger, referee, &settlement)?;
    }
    Ok(())
}

/// The ledger at `path`, trusting only the referee whose key file is `key`, and that referee.
fn open_ledger(path: &Path, key: &Path) -> Result<(LedgerFile, transport::Identity)> {
    let referee =
        transport::Identity::load(key).with_context(|| format!("cannot load the referee's key {}", key.display()))?;
    let ledger = LedgerFile::open(path, &[referee.public_key()])?;
    Ok((ledger, referee))
}

/// Appends the settlement's deposits and slashings to `ledger`, signed by `referee`, and prints the
/// balances it then holds.
pub(crate) fn record(ledger: &mut LedgerFile, referee: &transport::Identity, settlement: &Settlement) -> Result<()> {
    let before = ledger.entries().len();
    for movement in &settlement.movements {
        ledger.append(movement.clone(), referee)?;
    }
    let balances: Vec<String> = ledger.ledger().balances().map(|(who, b)| format!("{who} {b}")).collect();
    println!(
        "ledger {}: {} entries ({} new, signed by {}); balances: {}",
        ledger.path().display(),
        ledger.entries().len(),
        ledger.entries().len() - before,
        referee.peer_id().short(),
        balances.join(", ")
    );
    Ok(())
}

fn print_settlement(s: &Settlement, setup: &Setup, n: usize) {
    if s.disputes.is_empty() {
        println!("\nall trainers claim the same final state: accepted without a dispute");
    }
    for (k, d) in s.disputes.iter().enumerate() {
        let positions = setup.rules.structure.step(d.summary.step.unwrap_or(2)).positions();
        println!("\ndispute {}: {}", k + 1, describe(d, setup.program.steps, positions));
    }
    let standing: Vec<String> = (0..n).filter(|&i| s.standing[i]).map(|i| i.to_string()).collect();
    match s.accepted {
        Some(h) => println!("\naccepted: final state {} (trainers {})", short(&h), standing.join(", ")),
        None => println!("\nno claim stands"),
    }
    let honest_final = setup.honest.hashes.last().copied();
    println!("the accepted state {} the honest run's", if s.accepted == honest_final { "is" } else { "is NOT" });
    let balances: Vec<String> =
        (0..n).map(|i| format!("trainer{i} {}", s.ledger.balance(&format!("trainer{i}")))).collect();
    println!("stakes after settlement (simulated): {}", balances.join(", "));
}

/// `swarmlab verify --print-final`: an honest run's final state hash, in hex.
pub(crate) fn print_final(model: &str, steps: u64, backend: Backend) -> Result<()> {
    let e = execute(&program(model, steps, backend)?, Behaviour::Honest)?;
    let h = e.hashes.last().copied().unwrap_or_default();
    println!("{}", hex(&h));
    Ok(())
}
