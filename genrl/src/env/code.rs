//! A sandboxed code domain: a small stack language that policies write, an interpreter with hard
//! limits, and programming-by-example problems checked by execution.
//!
//! # The language
//!
//! A program is printable ASCII, at most [`Limits::program_bytes`] long: tokens separated by spaces,
//! `[` and `]` standing alone even without spaces. It runs on one integer input and a stack of values
//! (64-bit integers and quotations):
//!
//! | token | effect |
//! |---|---|
//! | `7`, `-3` | push the integer |
//! | `x` | push the input |
//! | `+ - * / %` | pop `b`, pop `a`, push `a op b` (checked: overflow and division by zero are faults) |
//! | `< = >` | pop `b`, pop `a`, push 1 if `a op b`, else 0 |
//! | `d` `s` `o` `p` | dup, swap, over, pop |
//! | `[ … ]` | push the quotation (code as a value) |
//! | `i` | pop `f`, `t`, `c`: run quotation `t` if `c ≠ 0`, else `f` |
//! | `r` | pop quotation `b`, pop `n`: run `b` `n` times |
//! | `l` | pop `n`: push `0, 1, …, n-1` |
//! | `@` | pop `n`: run the whole program on input `n` and push its answer (recursion) |
//! | `.` | pop and print a value |
//!
//! A program's **answer** is what it printed, the values separated by spaces; a program that prints
//! nothing answers with the integer on top of its stack. Examples: `x 2 * 1 +` (2x + 1),
//! `x 2 < [1] [x 1 - @ x *] i` (x!), `1 x [2 *] r` (2^x), `x . x 3 * .` (prints x and 3x). What does not
//! parse or run is a fault, never a panic.
//!
//! # Limits
//!
//! Every run is bounded by [`Limits`], checked before the work is done: steps (every token executed, each
//! loop iteration, each value `l` makes), live values on all stacks together, printed values and bytes,
//! recursion and quotation-call depth, and quotation nesting. A hostile program — an endless loop, deep
//! recursion, a huge range, a flood of output, garbage text — ends in a [`Fault`] within the limits.
//!
//! # Problems
//!
//! A [`CodeProblem`] is a reference program and the inputs it is run on: the tests are its answers there.
//! The first [`CodeProblem::shown`] tests are the prompt (`1>3;2>5;5>11=`); a solution passes when it
//! gives every test's answer, the hidden ones included.

use std::fmt;

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// Hard limits on one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest program text, in bytes.
    pub program_bytes: usize,
    /// Deepest quotation nesting in the text.
    pub nesting: usize,
    /// Steps: tokens executed, loop iterations, values made by `l`.
    pub steps: u64,
    /// Live values on all stacks together.
    pub values: usize,
    /// Printed values.
    pub printed: usize,
    /// Bytes of the answer.
    pub answer_bytes: usize,
    /// Recursion (`@`) depth.
    pub recursion: usize,
    /// Quotation calls (`i`, `r`) in progress at once.
    pub calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            program_bytes: 256,
            nesting: 8,
            steps: 20_000,
            values: 4_096,
            printed: 64,
            answer_bytes: 256,
            recursion: 12,
            calls: 64,
        }
    }
}

impl Limits {
    /// The largest value each limit may take: within these a run's time, memory and native stack
    /// stay small (recursion is the interpreter's only native recursion).
    pub const MAX: Self = Self {
        program_bytes: 1 << 16,
        nesting: 64,
        steps: 100_000_000,
        values: 1 << 20,
        printed: 1 << 16,
        answer_bytes: 1 << 20,
        recursion: 64,
        calls: 1 << 16,
    };

    /// Checks every limit is positive and at most [`Limits::MAX`]'s; the error names the limit.
    pub fn validate(&self) -> crate::Result<()> {
        let max = Self::MAX;
        let limits: [(&str, u64, u64); 8] = [
            ("program_bytes", self.program_bytes as u64, max.program_bytes as u64),
            ("nesting", self.nesting as u64, max.nesting as u64),
            ("steps", self.steps, max.steps),
            ("values", self.values as u64, max.values as u64),
            ("printed", self.printed as u64, max.printed as u64),
            ("answer_bytes", self.answer_bytes as u64, max.answer_bytes as u64),
            ("recursion", self.recursion as u64, max.recursion as u64),
            ("calls", self.calls as u64, max.calls as u64),
        ];
        match limits.into_iter().find(|&(_, v, m)| v == 0 || v > m) {
            Some((name, v, m)) => Err(crate::Error::config(format!("limits.{name}"), format!("{v} is not in 1..={m}"))),
            None => Ok(()),
        }
    }
}

/// Why a program did not answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Fault {
    /// The text is not a program: the token (or what is wrong) is named.
    #[error("does not parse: {0}")]
    Parse(String),
    /// It ran out of steps.
    #[error("over {0} steps")]
    Steps(u64),
    /// It held too many values.
    #[error("over {0} live values")]
    Memory(usize),
    /// It printed too much.
    #[error("printed over the limit")]
    Output,
    /// It recursed or nested calls too deeply.
    #[error("over {0} levels deep")]
    Depth(usize),
    /// An operation overflowed or divided by zero.
    #[error("arithmetic fault in `{0}`")]
    Arithmetic(char),
    /// An operation found too few values, or a value of the wrong kind.
    #[error("`{0}` found no {1}")]
    Stack(char, &'static str),
    /// It ended with nothing printed and no integer on top of its stack.
    #[error("no answer")]
    NoAnswer,
}

/// One instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Push(i64),
    Input,
    Binary(char),
    Dup,
    Swap,
    Over,
    Pop,
    /// Push quotation `n` of the program.
    Quote(usize),
    If,
    Repeat,
    Range,
    Recurse,
    Print,
}

/// A parsed program: its main code and its quotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Code blocks: 0 is the main program, the others its quotations.
    blocks: Vec<Vec<Op>>,
}

impl Program {
    /// Parses `text`, within `limits`' length and nesting.
    pub fn parse(text: &str, limits: &Limits) -> Result<Self, Fault> {
        if text.len() > limits.program_bytes {
            return Err(Fault::Parse(format!("{} bytes, over {}", text.len(), limits.program_bytes)));
        }
        if let Some(c) = text.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
            return Err(Fault::Parse(format!("character {c:?}")));
        }
        let spaced = text.replace('[', " [ ").replace(']', " ] ");
        let mut blocks = vec![Vec::new()];
        // The blocks being written, innermost last.
        let mut open = vec![0usize];
        for token in spaced.split_ascii_whitespace() {
            let op = match token {
                "[" => {
                    if open.len() > limits.nesting {
                        return Err(Fault::Parse(format!("quotations nested over {} deep", limits.nesting)));
                    }
                    blocks.push(Vec::new());
                    open.push(blocks.len() - 1);
                    continue;
                }
                "]" => {
                    if open.len() == 1 {
                        return Err(Fault::Parse("`]` closes nothing".into()));
                    }
                    let done = open.pop().unwrap_or(0);
                    Op::Quote(done)
                }
                "x" => Op::Input,
                "+" | "-" | "*" | "/" | "%" | "<" | "=" | ">" => Op::Binary(token.as_bytes()[0] as char),
                "d" => Op::Dup,
                "s" => Op::Swap,
                "o" => Op::Over,
                "p" => Op::Pop,
                "i" => Op::If,
                "r" => Op::Repeat,
                "l" => Op::Range,
                "@" => Op::Recurse,
                "." => Op::Print,
                number => Op::Push(number.parse().map_err(|_| Fault::Parse(format!("token {number:?}")))?),
            };
            let into = *open.last().unwrap_or(&0);
            blocks[into].push(op);
        }
        if open.len() > 1 {
            return Err(Fault::Parse("`[` is never closed".into()));
        }
        Ok(Self { blocks })
    }

    /// Runs the program on `input` within `limits`.
    pub fn run(&self, input: i64, limits: &Limits) -> Run {
        let mut machine = Machine { program: self, limits, steps: 0, live: 0, peak: 0, printed: Vec::new() };
        let result = machine.call(input, 0).and_then(|top| machine.answer(top));
        Run { result, steps: machine.steps, peak_values: machine.peak }
    }
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The answer, or why there is none.
    pub result: Result<String, Fault>,
    /// Steps taken.
    pub steps: u64,
    /// Most values live at once.
    pub peak_values: usize,
}

/// Parses and runs `text` on `input`: the answer, or the fault.
pub fn execute(text: &str, input: i64, limits: &Limits) -> Result<String, Fault> {
    Program::parse(text, limits)?.run(input, limits).result
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i64),
    Quote(usize),
}

struct Machine<'a> {
    program: &'a Program,
    limits: &'a Limits,
    steps: u64,
    live: usize,
    peak: usize,
    printed: Vec<i64>,
}

/// A quotation in progress: which block, where in it, and how many more times to run it.
struct Frame {
    block: usize,
    pc: usize,
    again: u64,
}

impl Machine<'_> {
    /// Spends `n` steps, or faults (and stops at the limit) when they are not left.
    fn step(&mut self, n: u64) -> Result<(), Fault> {
        match self.steps.checked_add(n).filter(|&s| s <= self.limits.steps) {
            Some(s) => {
                self.steps = s;
                Ok(())
            }
            None => {
                self.steps = self.limits.steps;
                Err(Fault::Steps(self.limits.steps))
            }
        }
    }

    fn push(&mut self, stack: &mut Vec<Value>, v: Value) -> Result<(), Fault> {
        if self.live >= self.limits.values {
            return Err(Fault::Memory(self.limits.values));
        }
        self.live += 1;
        self.peak = self.peak.max(self.live);
        stack.push(v);
        Ok(())
    }

    fn pop(&mut self, stack: &mut Vec<Value>, op: char) -> Result<Value, Fault> {
        let v = stack.pop().ok_or(Fault::Stack(op, "value"))?;
        self.live -= 1;
        Ok(v)
    }

    fn pop_int(&mut self, stack: &mut Vec<Value>, op: char) -> Result<i64, Fault> {
        match self.pop(stack, op)? {
            Value::Int(n) => Ok(n),
            Value::Quote(_) => Err(Fault::Stack(op, "integer")),
        }
    }

    fn pop_quote(&mut self, stack: &mut Vec<Value>, op: char) -> Result<usize, Fault> {
        match self.pop(stack, op)? {
            Value::Quote(q) => Ok(q),
            Value::Int(_) => Err(Fault::Stack(op, "quotation")),
        }
    }

    /// Runs the program on `input` at recursion depth `depth`; returns the top of its stack (if any).
    fn call(&mut self, input: i64, depth: usize) -> Result<Option<Value>, Fault> {
        if depth > self.limits.recursion {
            return Err(Fault::Depth(self.limits.recursion));
        }
        let mut stack: Vec<Value> = Vec::new();
        let mut frames = vec![Frame { block: 0, pc: 0, again: 0 }];
        let outcome = self.interpret(input, depth, &mut stack, &mut frames);
        let top = stack.last().copied();
        self.live -= stack.len();
        outcome.map(|()| top)
    }

    fn interpret(
        &mut self,
        input: i64,
        depth: usize,
        stack: &mut Vec<Value>,
        frames: &mut Vec<Frame>,
    ) -> Result<(), Fault> {
        while let Some(frame) = frames.last_mut() {
            let block = &self.program.blocks[frame.block];
            let Some(&op) = block.get(frame.pc) else {
                if frame.again > 0 {
                    frame.again -= 1;
                    frame.pc = 0;
                    self.step(1)?;
                } else {
                    frames.pop();
                }
                continue;
            };
            frame.pc += 1;
            self.step(1)?;
            match op {
                Op::Push(n) => self.push(stack, Value::Int(n))?,
                Op::Input => self.push(stack, Value::Int(input))?,
                Op::Binary(c) => {
                    let b = self.pop_int(stack, c)?;
                    let a = self.pop_int(stack, c)?;
                    let v = match c {
                        '+' => a.checked_add(b),
                        '-' => a.checked_sub(b),
                        '*' => a.checked_mul(b),
                        '/' => a.checked_div(b),
                        '%' => a.checked_rem(b),
                        '<' => Some(i64::from(a < b)),
                        '=' => Some(i64::from(a == b)),
                        _ => Some(i64::from(a > b)),
                    };
                    self.push(stack, Value::Int(v.ok_or(Fault::Arithmetic(c))?))?;
                }
                Op::Dup => {
                    let v = *stack.last().ok_or(Fault::Stack('d', "value"))?;
                    self.push(stack, v)?;
                }
                Op::Swap => {
                    let n = stack.len();
                    if n < 2 {
                        return Err(Fault::Stack('s', "two values"));
                    }
                    stack.swap(n - 1, n - 2);
                }
                Op::Over => {
                    let n = stack.len();
                    let v = *stack.get(n.wrapping_sub(2)).ok_or(Fault::Stack('o', "two values"))?;
                    self.push(stack, v)?;
                }
                Op::Pop => {
                    self.pop(stack, 'p')?;
                }
                Op::Quote(q) => self.push(stack, Value::Quote(q))?,
                Op::If => {
                    let f = self.pop_quote(stack, 'i')?;
                    let t = self.pop_quote(stack, 'i')?;
                    let c = self.pop_int(stack, 'i')?;
                    self.enter(frames, if c != 0 { t } else { f }, 0)?;
                }
                Op::Repeat => {
                    let body = self.pop_quote(stack, 'r')?;
                    let n = self.pop_int(stack, 'r')?;
                    if n > 0 {
                        self.enter(frames, body, n.unsigned_abs() - 1)?;
                    }
                }
                Op::Range => {
                    let n = self.pop_int(stack, 'l')?.max(0).unsigned_abs();
                    self.step(n)?;
                    if self.live as u64 + n > self.limits.values as u64 {
                        return Err(Fault::Memory(self.limits.values));
                    }
                    for k in 0..n as i64 {
                        self.push(stack, Value::Int(k))?;
                    }
                }
                Op::Recurse => {
                    let n = self.pop_int(stack, '@')?;
                    match self.call(n, depth + 1)? {
                        Some(Value::Int(v)) => self.push(stack, Value::Int(v))?,
                        _ => return Err(Fault::Stack('@', "integer answer")),
                    }
                }
                Op::Print => {
                    let v = self.pop_int(stack, '.')?;
                    if self.printed.len() >= self.limits.printed {
                        return Err(Fault::Output);
                    }
                    self.printed.push(v);
                }
            }
        }
        Ok(())
    }

    fn enter(&mut self, frames: &mut Vec<Frame>, block: usize, again: u64) -> Result<(), Fault> {
        if frames.len() >= self.limits.calls {
            return Err(Fault::Depth(self.limits.calls));
        }
        frames.push(Frame { block, pc: 0, again });
        Ok(())
    }

    fn answer(&self, top: Option<Value>) -> Result<String, Fault> {
        let text = if self.printed.is_empty() {
            match top {
                Some(Value::Int(v)) => v.to_string(),
                _ => return Err(Fault::NoAnswer),
            }
        } else {
            self.printed.iter().map(i64::to_string).collect::<Vec<_>>().join(" ")
        };
        if text.len() > self.limits.answer_bytes { Err(Fault::Output) } else { Ok(text) }
    }
}

/// A programming-by-example problem: a reference program and the inputs its tests run on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CodeProblem {
    /// The reference program (the proposer's; never shown to solvers).
    pub reference: String,
    /// The tests' inputs.
    pub inputs: Vec<i64>,
    /// The reference's answers on them.
    pub answers: Vec<String>,
    /// How many of the tests, from the first, the prompt shows.
    pub shown: usize,
}

/// How a solution fared on a problem's tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// Tests passed.
    pub passed: usize,
    /// Tests run.
    pub total: usize,
    /// Steps over all tests.
    pub steps: u64,
    /// The first fault met, if any.
    pub fault: Option<Fault>,
}

impl Judgement {
    /// Whether every test passed.
    pub fn all(&self) -> bool {
        self.total > 0 && self.passed == self.total
    }
}

/// Why a proposed problem is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadProblem {
    /// The reference faults on an input.
    #[error("the reference program faults on input {0}: {1}")]
    Faults(i64, Fault),
    /// The stated answers are not the reference's.
    #[error("the stated answers are not the reference program's")]
    WrongAnswers,
    /// The shape is wrong: no tests, shown out of range, or a prompt too wide.
    #[error("{0}")]
    Shape(String),
}

impl CodeProblem {
    /// The problem of `reference` on `inputs`, showing the first `shown`: its answers worked out by
    /// running it. An error if it faults on an input or the prompt would be wider than `max_prompt`.
    pub fn from_reference(
        reference: &str,
        inputs: Vec<i64>,
        shown: usize,
        max_prompt: usize,
        limits: &Limits,
    ) -> Result<Self, BadProblem> {
        let program = Program::parse(reference, limits)
            .map_err(|f| BadProblem::Faults(inputs.first().copied().unwrap_or(0), f))?;
        let mut answers = Vec::with_capacity(inputs.len());
        for &x in &inputs {
            answers.push(program.run(x, limits).result.map_err(|f| BadProblem::Faults(x, f))?);
        }
        let problem = Self { reference: reference.to_string(), inputs, answers, shown };
        problem.check_shape(max_prompt)?;
        Ok(problem)
    }

    fn check_shape(&self, max_prompt: usize) -> Result<(), BadProblem> {
        if self.inputs.is_empty() || self.inputs.len() != self.answers.len() {
            return Err(BadProblem::Shape(format!("{} inputs, {} answers", self.inputs.len(), self.answers.len())));
        }
        if self.shown == 0 || self.shown > self.inputs.len() {
            return Err(BadProblem::Shape(format!("shows {} of {} tests", self.shown, self.inputs.len())));
        }
        let width = self.prompt().len();
        if width > max_prompt {
            return Err(BadProblem::Shape(format!("a prompt of {width} bytes, over {max_prompt}")));
        }
        Ok(())
    }

    /// Whether the problem is what it says: the shape holds and its answers are its reference's. Shared
    /// problems are checked with this (the tests must run) before anyone solves them.
    pub fn check(&self, max_prompt: usize, limits: &Limits) -> Result<(), BadProblem> {
        self.check_shape(max_prompt)?;
        let again = Self::from_reference(&self.reference, self.inputs.clone(), self.shown, max_prompt, limits)?;
        if again.answers != self.answers {
            return Err(BadProblem::WrongAnswers);
        }
        Ok(())
    }

    /// Whether the tests ask for nothing but a constant or the input itself (a program of one token
    /// passes them).
    pub fn is_trivial(&self) -> bool {
        let constant = self.answers.windows(2).all(|w| w[0] == w[1]);
        let identity = self.inputs.iter().zip(&self.answers).all(|(x, a)| x.to_string() == *a);
        constant || identity
    }

    /// What a solver reads: the shown tests as `input>answer`, separated by `;`, ending in `=`.
    pub fn prompt(&self) -> String {
        let shown: Vec<String> =
            self.inputs.iter().zip(&self.answers).take(self.shown).map(|(x, a)| format!("{x}>{a}")).collect();
        format!("{}=", shown.join(";"))
    }

    /// Runs `solution` on every test.
    pub fn judge(&self, solution: &str, limits: &Limits) -> Judgement {
        let mut j = Judgement { passed: 0, total: self.inputs.len(), steps: 0, fault: None };
        let program = match Program::parse(solution, limits) {
            Ok(p) => p,
            Err(f) => {
                j.fault = Some(f);
                return j;
            }
        };
        for (&x, want) in self.inputs.iter().zip(&self.answers) {
            let run = program.run(x, limits);
            j.steps += run.steps;
            match run.result {
                Ok(got) => j.passed += usize::from(&got == want),
                Err(f) => {
                    j.fault.get_or_insert(f);
                }
            }
        }
        j
    }

    /// Runs a completion (a program on one line, ending in a newline) on every test; one that is not
    /// a finished line passes none.
    pub fn judge_completion(&self, completion: &str, limits: &Limits) -> Judgement {
        match completion.strip_suffix(super::END) {
            Some(text) if !text.contains(super::END) => self.judge(text, limits),
            _ => Judgement {
                passed: 0,
                total: self.inputs.len(),
                steps: 0,
                fault: Some(Fault::Parse("not one finished line".into())),
            },
        }
    }

    /// Whether a completion passes every test: 1 or 0.
    pub fn reward(&self, completion: &str, limits: &Limits) -> f64 {
        f64::from(u8::from(self.judge_completion(completion, limits).all()))
    }
}

impl fmt::Display for CodeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (by `{}`)", self.prompt(), self.reference)
    }
}

/// Reference programs of three difficulty levels, from templates with random constants: the problems
/// of the warm start, of the held-out set, and of the solvers' own stream beside the proposers'.
pub fn random_program(level: u8, rng: &mut dyn RngCore) -> String {
    let a = rng.random_range(2..=9);
    let b = rng.random_range(1..=9);
    match level {
        0 | 1 => match rng.random_range(0..4) {
            0 => format!("x {b} +"),
            1 => format!("x {a} *"),
            2 => format!("x {b} -"),
            _ => format!("{b} x -"),
        },
        2 => match rng.random_range(0..5) {
            0 => format!("x {a} * {b} +"),
            1 => "x x *".to_string(),
            2 => format!("x {a} %"),
            3 => format!("x {a} /"),
            _ => format!("x {b} + {a} *"),
        },
        _ => match rng.random_range(0..5) {
            0 => format!("x {a} < [{b}] [x] i"),
            1 => "x 2 < [1] [x 1 - @ x *] i".to_string(),
            2 => format!("x 2 % [x {a} *] [x] i"),
            3 => format!("0 x [{b} +] r"),
            _ => format!("x . x {a} * ."),
        },
    }
}

/// Inputs for a problem's tests: `n` distinct integers in `0..=9`, in random order.
pub fn random_inputs(n: usize, rng: &mut dyn RngCore) -> Vec<i64> {
    let mut pool: Vec<i64> = (0..=9).collect();
    rand::seq::SliceRandom::shuffle(pool.as_mut_slice(), rng);
    pool.truncate(n.min(10));
    pool
}

#[cfg(test)]
mod tests;
