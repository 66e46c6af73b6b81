use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

fn run(text: &str, x: i64) -> Result<String, Fault> {
    execute(text, x, &Limits::default())
}

#[test]
fn programs_answer_by_the_documented_rules() {
    assert_eq!(run("x 2 * 1 +", 3), Ok("7".into()));
    assert_eq!(run("x 2 < [1] [x 1 - @ x *] i", 5), Ok("120".into()), "recursion");
    assert_eq!(run("1 x [2 *] r", 10), Ok("1024".into()), "a loop");
    assert_eq!(run("x . x 3 * .", 4), Ok("4 12".into()), "printed values are the answer");
    assert_eq!(run("3 x s - 2 o *", 1), Ok("-4".into()), "swap, then over: (1-3), then 2 · (1-3)");
    assert_eq!(run("x 2 % [7] [8] i", 3), Ok("7".into()));
    assert_eq!(run("x l p p", 4), Ok("1".into()), "range 0..4, two popped");
    assert_eq!(run("x d * d 0 = [p 9] [] i", 0), Ok("9".into()), "an empty quotation");
    assert_eq!(run("[x]x", 2), Ok("2".into()), "brackets need no spaces");
    assert_eq!(run("-3 x -", 2), Ok("-5".into()));
}

#[test]
fn faults_are_named_not_panics() {
    for (text, want) in [
        ("x 0 /", Fault::Arithmetic('/')),
        ("9223372036854775807 1 +", Fault::Arithmetic('+')),
        ("+", Fault::Stack('+', "value")),
        ("[x] 1 +", Fault::Stack('+', "integer")),
        ("1 2 i", Fault::Stack('i', "quotation")),
        ("", Fault::NoAnswer),
        ("[1]", Fault::NoAnswer),
        ("]", Fault::Parse("`]` closes nothing".into())),
        ("[1", Fault::Parse("`[` is never closed".into())),
        ("x y", Fault::Parse("token \"y\"".into())),
        ("99999999999999999999", Fault::Parse("token \"99999999999999999999\"".into())),
    ] {
        assert_eq!(run(text, 1), Err(want), "{text:?}");
    }
    assert!(matches!(run("x\u{e9}", 1), Err(Fault::Parse(_))));
    assert!(matches!(run("x\n1", 1), Err(Fault::Parse(_))), "one line");
}

/// Hostile programs: each ends in its fault, within the limits.
#[test]
fn hostile_programs_are_contained() {
    let limits = Limits::default();
    let cases = [
        ("endless loop", "9223372036854775807 [1 p] r", Fault::Steps(limits.steps)),
        ("deep recursion", "x 1 + @", Fault::Depth(limits.recursion)),
        ("a quotation that runs itself", "[d 1 s d i] d 1 s d i", Fault::Depth(limits.calls)),
        ("a huge range", "1000000000000 l", Fault::Steps(limits.steps)),
        ("a big range", "5000 l", Fault::Memory(limits.values)),
        ("a growing stack", "100000 [1] r", Fault::Memory(limits.values)),
        ("a flood of output", "1000 [1 .] r", Fault::Output),
        ("exponential recursion", "x 1 + @ x 1 + @ +", Fault::Depth(limits.recursion)),
    ];
    for (what, text, want) in cases {
        let program = Program::parse(text, &limits).unwrap_or_else(|f| panic!("{what}: {f}"));
        let run = program.run(0, &limits);
        assert_eq!(run.result, Err(want), "{what}");
        assert!(run.steps <= limits.steps && run.peak_values <= limits.values, "{what}: {run:?}");
    }
    let nested = format!("{}1{}", "[".repeat(9), "]".repeat(9));
    assert!(matches!(Program::parse(&nested, &limits), Err(Fault::Parse(m)) if m.contains("nested")));
    assert!(matches!(Program::parse(&"1 ".repeat(200), &limits), Err(Fault::Parse(m)) if m.contains("bytes")));
    let answer = Limits { answer_bytes: 8, ..limits };
    assert_eq!(execute("20 [7 .] r", 0, &answer), Err(Fault::Output), "an answer too long");
}

#[test]
fn limits_out_of_range_are_named() {
    assert!(Limits::default().validate().is_ok());
    assert!(Limits::MAX.validate().is_ok());
    let err = |l: Limits| l.validate().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(Limits { recursion: 100_000, ..Limits::default() }).contains("limits.recursion"));
    assert!(err(Limits { steps: 0, ..Limits::default() }).contains("limits.steps"));
    assert!(err(Limits { values: usize::MAX, ..Limits::default() }).contains("limits.values"));
}

#[test]
fn problems_are_checked_by_execution() {
    let limits = Limits::default();
    let p = CodeProblem::from_reference("x 2 * 1 +", vec![1, 2, 5, 7], 3, 32, &limits).expect("a valid problem");
    assert_eq!(p.prompt(), "1>3;2>5;5>11=");
    assert_eq!(p.answers[3], "15", "the hidden test");
    assert!(p.judge("x x + 1 +", &limits).all());
    let overfit = p.judge("x 5 < [x 2 * 1 +] [11] i", &limits);
    assert_eq!((overfit.passed, overfit.total, overfit.all()), (3, 4, false), "the hidden test catches it");
    assert_eq!(p.reward("x x + 1 +\n", &limits), 1.0);
    assert_eq!(p.reward("x x + 1 +", &limits), 0.0, "unfinished");
    assert_eq!(p.reward("x\n1\n", &limits), 0.0);
    assert!(p.judge("x 0 /", &limits).fault.is_some());
    p.check(32, &limits).expect("genuine");
    assert!(!p.is_trivial());
    let identity = CodeProblem::from_reference("x 7 %", vec![1, 2, 5, 6], 3, 32, &limits).expect("valid");
    let constant = CodeProblem::from_reference("x 9 /", vec![1, 2, 5, 6], 3, 32, &limits).expect("valid");
    assert!(identity.is_trivial() && constant.is_trivial(), "x mod 7 is x, x / 9 is 0 on these inputs");
    let mut forged = p.clone();
    forged.answers[3] = "16".into();
    assert_eq!(forged.check(32, &limits), Err(BadProblem::WrongAnswers));
    assert!(matches!(CodeProblem::from_reference("x 3 - 0 /", vec![1], 1, 32, &limits), Err(BadProblem::Faults(1, _))));
    assert!(matches!(p.check(8, &limits), Err(BadProblem::Shape(_))), "too wide a prompt");
    let mut bad = p.clone();
    bad.shown = 0;
    assert!(matches!(bad.check(32, &limits), Err(BadProblem::Shape(_))));
}

#[test]
fn every_template_makes_a_valid_problem_at_every_level() {
    let limits = Limits::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for level in 1..=3 {
        for _ in 0..200 {
            let reference = random_program(level, &mut rng);
            let inputs = random_inputs(4, &mut rng);
            let p = CodeProblem::from_reference(&reference, inputs, 3, 48, &limits);
            assert!(p.is_ok(), "{reference}: {p:?}");
        }
    }
}

/// Tokens hostile programs are made of.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "x", "+", "-", "*", "/", "%", "<", "=", ">", "d", "s", "o", "p", "[", "]", "i", "r", "l", "@", "."
        ])
        .prop_map(String::from),
        (-3i64..1_000_000).prop_map(|n| n.to_string()),
        Just("9223372036854775807".to_string()),
    ]
}

/// Each run is bounded in steps and live values, whatever the program. Steps bound its time: every
/// operation and every repetition of a loop costs a step (leaving a quotation is paid by the step that
/// entered it), and an operation that does more (`l`) is charged for all of it first.
fn bounded(text: &str, x: i64) -> Result<(), TestCaseError> {
    let limits = Limits::default();
    if let Ok(program) = Program::parse(text, &limits) {
        let run = program.run(x, &limits);
        prop_assert!(run.steps <= limits.steps, "{} steps", run.steps);
        prop_assert!(run.peak_values <= limits.values, "{} values", run.peak_values);
        if let Ok(answer) = &run.result {
            prop_assert!(answer.len() <= limits.answer_bytes);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_programs_are_bounded(tokens in prop::collection::vec(token(), 0..60), x in -5i64..20) {
        bounded(&tokens.join(" "), x)?;
    }

    #[test]
    fn garbage_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), x in any::<i64>()) {
        bounded(&String::from_utf8_lossy(&bytes), x)?;
    }
}
