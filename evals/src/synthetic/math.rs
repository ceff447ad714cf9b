//! Math word problems from fixed templates: two to three steps, small whole numbers, fixed
//! phrasings. Each problem carries its worked solution (math skill: equations over named
//! quantities, ending in GSM8K's `#### N`), the same steps as a reference program, and its
//! gold number (code-math target).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

pub(crate) const NAMES: [(&str, &str); 16] = [
    ("Tom", "he"),
    ("Mia", "she"),
    ("Sam", "he"),
    ("Lena", "she"),
    ("Omar", "he"),
    ("Ava", "she"),
    ("Ben", "he"),
    ("Nora", "she"),
    ("Leo", "he"),
    ("Ivy", "she"),
    ("Max", "he"),
    ("Zoe", "she"),
    ("Raj", "he"),
    ("Eva", "she"),
    ("Dan", "he"),
    ("Kim", "she"),
];

const ITEMS: [&str; 12] = [
    "apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "cards", "eggs",
    "balloons", "stamps", "buttons",
];

/// One generated problem.
#[derive(Debug, Clone)]
pub struct Problem {
    pub question: String,
    /// Worked steps, one equation per line, without the final `#### N`.
    pub steps: String,
    pub answer: i64,
    /// A reference program (`def solution(): ... return result`) computing the answer: what a
    /// model holding both skills should write; also checks the gold.
    pub program: String,
}

/// A problem whose worked steps and reference program are written from the same lines: the
/// given quantities by name, then one `name = a op b` line per step. The steps read as
/// equations over named quantities (`cost = count * price = 3 * 5 = 15`), so the math skill
/// learns which quantities a question combines, and how, in the terms a program uses; the
/// code skill learns the function around them. `answer` is the template's own arithmetic,
/// checked against the lines' (a test runs every template).
fn worked(question: String, answer: i64, vars: &[(&str, i64)], lines: &[&str]) -> Problem {
    let mut values: Vec<(&str, i64)> = vars.to_vec();
    let mut steps = vec![format!(
        "{}.",
        vars.iter()
            .map(|(n, v)| format!("{n} = {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    let mut program = String::from("def solution():\n");
    for (name, v) in vars {
        program.push_str(&format!("    {name} = {v}\n"));
    }
    for line in lines {
        program.push_str(&format!("    {line}\n"));
        let (name, (a, op, b)) = step(line);
        let value = |t: &str| {
            t.parse::<i64>()
                .ok()
                .or_else(|| values.iter().find(|(n, _)| *n == t).map(|(_, v)| *v))
                .unwrap_or_else(|| panic!("template line {line:?}: unknown operand {t:?}"))
        };
        let (x, y) = (value(a), value(b));
        let r = match op {
            "+" => x + y,
            "-" => x - y,
            "*" => x * y,
            "//" => x.div_euclid(y),
            _ => panic!("template line {line:?}: unknown operator {op:?}"),
        };
        steps.push(format!("{name} = {a} {op} {b} = {x} {op} {y} = {r}."));
        values.push((name, r));
    }
    program.push_str("    return result");
    debug_assert_eq!(values.last().map(|(_, v)| *v), Some(answer), "{question}");
    Problem {
        question,
        steps: steps.join("\n"),
        answer,
        program,
    }
}

/// `name = a op b`, split at its spaces (the templates' lines are written this way).
fn step(line: &str) -> (&str, (&str, &str, &str)) {
    match line.split(' ').collect::<Vec<_>>()[..] {
        [name, "=", a, op, b] => (name, (a, op, b)),
        _ => panic!("template line {line:?} is not `name = a op b`"),
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Draw one problem from a random template.
pub fn problem(rng: &mut StdRng) -> Problem {
    let &(name, he) = NAMES.choose(rng).unwrap_or(&NAMES[0]);
    let &(other, _) = NAMES
        .iter()
        .filter(|(n, _)| *n != name)
        .collect::<Vec<_>>()
        .choose(rng)
        .copied()
        .unwrap_or(&NAMES[1]);
    let items = *ITEMS.choose(rng).unwrap_or(&ITEMS[0]);
    let he_cap = cap(he);
    match rng.gen_range(0..8) {
        0 => {
            let (a, b) = (rng.gen_range(5..20), rng.gen_range(2..10));
            let c = rng.gen_range(1..a + b);
            worked(
                format!("{name} has {a} {items}. {he_cap} buys {b} more {items} and gives {c} {items} to {other}. How many {items} does {name} have now?"),
                a + b - c,
                &[("start", a), ("bought", b), ("given_away", c)],
                &["total = start + bought", "result = total - given_away"],
            )
        }
        1 => {
            let (a, b) = (rng.gen_range(2..7), rng.gen_range(2..6));
            let c = a * b + rng.gen_range(1..10);
            worked(
                format!("{name} buys {a} {items} that cost {b} dollars each. {he_cap} pays with {c} dollars. How many dollars of change does {he} get?"),
                c - a * b,
                &[("count", a), ("price", b), ("paid", c)],
                &["cost = count * price", "result = paid - cost"],
            )
        }
        2 => {
            let (a, b) = (rng.gen_range(2..8), rng.gen_range(3..10));
            let c = rng.gen_range(1..a * b);
            worked(
                format!("There are {a} boxes with {b} {items} in each box. {c} of the {items} are broken. How many {items} are not broken?"),
                a * b - c,
                &[("boxes", a), ("per_box", b), ("broken", c)],
                &["total = boxes * per_box", "result = total - broken"],
            )
        }
        3 => {
            let (a, b) = (rng.gen_range(2..9), rng.gen_range(2..7));
            let c = a * b + rng.gen_range(5..40);
            worked(
                format!("{name} reads {a} pages every day for {b} days. The book has {c} pages. How many pages are left to read?"),
                c - a * b,
                &[("pages_per_day", a), ("days", b), ("book_pages", c)],
                &["read = pages_per_day * days", "result = book_pages - read"],
            )
        }
        4 => {
            let (b, k) = (rng.gen_range(2..6), rng.gen_range(2..8));
            let (a, c) = (b * k, rng.gen_range(1..6));
            worked(
                format!("{name} has {a} {items} and shares them equally among {b} friends. Then each friend gets {c} more {items}. How many {items} does each friend have?"),
                k + c,
                &[("total", a), ("friends", b), ("extra", c)],
                &["each = total // friends", "result = each + extra"],
            )
        }
        5 => {
            let (a, b) = (rng.gen_range(3..15), rng.gen_range(2..5));
            worked(
                format!("A farm has {a} cows and {b} times as many chickens as cows. How many animals are on the farm in total?"),
                a + a * b,
                &[("cows", a), ("times", b)],
                &["chickens = cows * times", "result = cows + chickens"],
            )
        }
        6 => {
            let (a, b, c) = (
                rng.gen_range(5..13),
                rng.gen_range(2..6),
                rng.gen_range(2..6),
            );
            worked(
                format!("{name} earns {a} dollars each hour. {he_cap} works {b} hours on Monday and {c} hours on Tuesday. How many dollars does {he} earn in total?"),
                a * (b + c),
                &[("per_hour", a), ("monday", b), ("tuesday", c)],
                &["hours = monday + tuesday", "result = hours * per_hour"],
            )
        }
        _ => {
            let a = rng.gen_range(6..20);
            let b = rng.gen_range(1..a);
            worked(
                format!("{name} had {a} {items}. {he_cap} lost {b} of them and then doubled the number that was left. How many {items} does {name} have now?"),
                (a - b) * 2,
                &[("start", a), ("lost", b)],
                &["left = start - lost", "result = left * 2"],
            )
        }
    }
}
