use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

fn family() -> impl Strategy<Value = Family> {
    (0..Family::ALL.len()).prop_map(|i| Family::ALL[i])
}

fn level() -> impl Strategy<Value = Level> {
    (1u8..=3).prop_map(|l| Level::new(l).expect("level"))
}

/// Characters a near-miss may put in place of one of the answer's.
const ALPHABET: &str = "0123456789abcdef.-/ #TFMonTueWedJanFebDec";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generators_are_deterministic_by_seed(f in family(), l in level(), seed in any::<u64>()) {
        let a = f.generate(l, &mut ChaCha8Rng::seed_from_u64(seed));
        let b = f.generate(l, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.family, f);
        prop_assert!(a.is_genuine(), "{:?} solves to {:?}", a, f.task().solve(&a.prompt));
        prop_assert_eq!(a.level, l);
        prop_assert!(a.prompt.ends_with('=') && a.prompt.len() <= 16 && a.prompt.is_ascii(), "{:?}", a.prompt);
        prop_assert!(!a.answer.is_empty() && a.answer.len() <= 12 && a.answer.is_ascii(), "{:?}", a.answer);
    }

    #[test]
    fn verifiers_accept_the_answer_and_reject_near_misses(
        f in family(), l in level(), seed in any::<u64>(), pos in any::<prop::sample::Index>(),
        with in any::<prop::sample::Index>(),
    ) {
        let q = f.generate(l, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(q.verify(&format!("{}\n", q.answer)), Verdict::Correct, "{:?}", q);
        prop_assert_eq!(q.reward(&format!("{}\n", q.answer)), 1.0);
        // Unfinished, padded, doubled or trailing text: never correct.
        prop_assert_eq!(q.verify(&q.answer), Verdict::Malformed);
        for bad in [format!(" {}\n", q.answer), format!("{} \n", q.answer), format!("{0}\n{0}\n", q.answer)] {
            prop_assert_ne!(q.verify(&bad), Verdict::Correct, "{:?} for {:?}", bad, q);
        }
        // One character changed, or the last one dropped.
        let chars: Vec<char> = q.answer.chars().collect();
        let i = pos.index(chars.len());
        let c = ALPHABET.chars().nth(with.index(ALPHABET.len())).unwrap_or('0');
        if c != chars[i] {
            let mut near = chars.clone();
            near[i] = c;
            let near: String = near.into_iter().collect();
            prop_assert_ne!(q.verify(&format!("{near}\n")), Verdict::Correct, "{:?} for {:?}", near, q);
        }
        let cut: String = chars[..chars.len() - 1].iter().collect();
        prop_assert_ne!(q.verify(&format!("{cut}\n")), Verdict::Correct, "{:?} for {:?}", cut, q);
        prop_assert_eq!(q.reward("garbage \u{fffd}\u{0}"), 0.0);
    }

    #[test]
    fn arbitrary_text_never_panics(f in family(), l in level(), seed in any::<u64>(), text in ".{0,40}") {
        let q = f.generate(l, &mut ChaCha8Rng::seed_from_u64(seed));
        let _ = q.verify(&text);
        let _ = q.verify(&format!("{text}\n"));
        let _ = f.task().solve(&text);
        let _ = f.task().solve(&format!("{text}="));
    }
}

#[test]
fn forged_answers_and_foreign_prompts_are_not_genuine() {
    let mut q = Family::BasicArithmetic.generate(Level::MEDIUM, &mut ChaCha8Rng::seed_from_u64(3));
    assert!(q.is_genuine());
    q.answer.push('1');
    assert!(!q.is_genuine(), "a forged ground truth");
    for (family, prompt) in [
        (Family::BasicArithmetic, "2**3="),
        (Family::BaseConversion, "12:10>1="),
        (Family::FractionSimplification, "3/0="),
        (Family::DecimalArithmetic, "1.5/2="),
        (Family::PropositionalLogic, "T&&F="),
        (Family::ListOps, "srt="),
        (Family::CalendarArithmetic, "Feb 30+1="),
        (Family::Arc1d, ">..x..="),
    ] {
        assert_eq!(family.task().solve(prompt), None, "{family} {prompt:?}");
    }
}

#[test]
fn near_misses_of_each_kind_score_zero() {
    let q = |family, prompt: &str, answer: &str| Question {
        family,
        level: Level::EASY,
        prompt: prompt.into(),
        answer: answer.into(),
    };
    let cases = [
        (q(Family::BasicArithmetic, "37-52=", "-15"), "-15", &["15", "-16", "-015", "- 15"][..]),
        (q(Family::BaseConversion, "13:10>2=", "1101"), "1101", &["01101", "1100", "1102", "d"]),
        (q(Family::FractionSimplification, "18/24=", "3/4"), "3/4", &["6/8", "0.75", "3/5", "3/4/1"]),
        (q(Family::DecimalArithmetic, "1.5+2.25=", "3.75"), "3.750", &["3.76", ".375", "3,75", "03.75"]),
        (q(Family::PropositionalLogic, "T&F=", "F"), "F", &["T", "f", "false", "FF"]),
        (q(Family::ListOps, "srt 4213=", "1234"), "1234", &["1243", "1 2 3 4", "123", "4321"]),
        (q(Family::CalendarArithmetic, "Mar 28+5=", "Apr 2"), "Apr 2", &["Apr 3", "Apr 02", "April 2", "Mar 33"]),
        (q(Family::Arc1d, ">..##....=", "...##..."), "...##...", &["..##....", "...##....", "...##..x"]),
    ];
    for (question, right, wrong) in cases {
        assert_eq!(question.verify(&format!("{right}\n")), Verdict::Correct, "{question:?}");
        for w in wrong {
            assert_eq!(question.reward(&format!("{w}\n")), 0.0, "{w:?} for {question:?}");
        }
    }
}

#[test]
fn a_task_set_deals_one_question_per_family_and_holds_out_its_eval_set() -> Result<()> {
    let set = TaskSet::new(&TaskSetConfig { eval_per_level: 4, ..TaskSetConfig::default() })?;
    assert_eq!(set.held_out().len(), 8 * 2 * 4);
    let round = set.round(7, 3);
    assert_eq!(round.iter().map(|q| q.family).collect::<Vec<_>>(), Family::ALL);
    assert_eq!(round, set.round(7, 3));
    assert_ne!(round, set.round(7, 4));
    assert_ne!(round, set.round(8, 3));
    let held: BTreeSet<_> = set.held_out().iter().map(|q| q.prompt.clone()).collect();
    for r in 0..200 {
        assert!(set.round(1, r).iter().all(|q| !held.contains(&q.prompt) && q.level <= Level::MEDIUM));
    }
    assert!(TaskSet::new(&TaskSetConfig { families: vec!["chess".into()], ..TaskSetConfig::default() }).is_err());
    assert!(TaskSet::new(&TaskSetConfig { min_level: 3, max_level: 2, ..TaskSetConfig::default() }).is_err());
    assert!(TaskSet::new(&TaskSetConfig { max_level: 4, ..TaskSetConfig::default() }).is_err());
    Ok(())
}
