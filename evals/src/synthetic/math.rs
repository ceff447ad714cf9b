//! Math word problems from fixed templates: two to three steps, small whole numbers, fixed
//! phrasings. Each problem carries its step-by-step solution (math skill, GSM8K style) and
//! its gold number (code-math target).

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
    /// Worked steps, one per line, without the final `#### N`.
    pub steps: String,
    pub answer: i64,
    /// A reference program (`def solution(): ... return result`) computing the answer: what a
    /// model holding both skills should write; also checks the gold.
    pub program: String,
}

fn prog(vars: &[(&str, i64)], lines: &[&str]) -> String {
    let mut p = String::from("def solution():\n");
    for (name, v) in vars {
        p.push_str(&format!("    {name} = {v}\n"));
    }
    for l in lines {
        p.push_str(&format!("    {l}\n"));
    }
    p.push_str("    return result");
    p
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
            Problem {
                question: format!("{name} has {a} {items}. {he_cap} buys {b} more {items} and gives {c} {items} to {other}. How many {items} does {name} have now?"),
                steps: format!("{name} has {a} + {b} = {} {items}.\nAfter giving {c} away, {he} has {} - {c} = {} {items}.", a + b, a + b, a + b - c),
                answer: a + b - c,
                program: prog(&[("start", a), ("bought", b), ("given_away", c)], &["total = start + bought", "result = total - given_away"]),
            }
        }
        1 => {
            let (a, b) = (rng.gen_range(2..7), rng.gen_range(2..6));
            let c = a * b + rng.gen_range(1..10);
            Problem {
                question: format!("{name} buys {a} {items} that cost {b} dollars each. {he_cap} pays with {c} dollars. How many dollars of change does {he} get?"),
                steps: format!("The {items} cost {a} * {b} = {} dollars.\nThe change is {c} - {} = {} dollars.", a * b, a * b, c - a * b),
                answer: c - a * b,
                program: prog(&[("count", a), ("price", b), ("paid", c)], &["cost = count * price", "result = paid - cost"]),
            }
        }
        2 => {
            let (a, b) = (rng.gen_range(2..8), rng.gen_range(3..10));
            let c = rng.gen_range(1..a * b);
            Problem {
                question: format!("There are {a} boxes with {b} {items} in each box. {c} of the {items} are broken. How many {items} are not broken?"),
                steps: format!("There are {a} * {b} = {} {items}.\nNot broken: {} - {c} = {}.", a * b, a * b, a * b - c),
                answer: a * b - c,
                program: prog(&[("boxes", a), ("per_box", b), ("broken", c)], &["total = boxes * per_box", "result = total - broken"]),
            }
        }
        3 => {
            let (a, b) = (rng.gen_range(2..9), rng.gen_range(2..7));
            let c = a * b + rng.gen_range(5..40);
            Problem {
                question: format!("{name} reads {a} pages every day for {b} days. The book has {c} pages. How many pages are left to read?"),
                steps: format!("{name} reads {a} * {b} = {} pages.\nPages left: {c} - {} = {}.", a * b, a * b, c - a * b),
                answer: c - a * b,
                program: prog(&[("pages_per_day", a), ("days", b), ("book_pages", c)], &["read = pages_per_day * days", "result = book_pages - read"]),
            }
        }
        4 => {
            let (b, k) = (rng.gen_range(2..6), rng.gen_range(2..8));
            let (a, c) = (b * k, rng.gen_range(1..6));
            Problem {
                question: format!("{name} has {a} {items} and shares them equally among {b} friends. Then each friend gets {c} more {items}. How many {items} does each friend have?"),
                steps: format!("Each friend first gets {a} / {b} = {k} {items}.\nThen each has {k} + {c} = {} {items}.", k + c),
                answer: k + c,
                program: prog(&[("total", a), ("friends", b), ("extra", c)], &["each = total // friends", "result = each + extra"]),
            }
        }
        5 => {
            let (a, b) = (rng.gen_range(3..15), rng.gen_range(2..5));
            Problem {
                question: format!("A farm has {a} cows and {b} times as many chickens as cows. How many animals are on the farm in total?"),
                steps: format!("There are {a} * {b} = {} chickens.\nIn total there are {a} + {} = {} animals.", a * b, a * b, a + a * b),
                answer: a + a * b,
                program: prog(&[("cows", a), ("times", b)], &["chickens = cows * times", "result = cows + chickens"]),
            }
        }
        6 => {
            let (a, b, c) = (
                rng.gen_range(5..13),
                rng.gen_range(2..6),
                rng.gen_range(2..6),
            );
            Problem {
                question: format!("{name} earns {a} dollars each hour. {he_cap} works {b} hours on Monday and {c} hours on Tuesday. How many dollars does {he} earn in total?"),
                steps: format!("{name} works {b} + {c} = {} hours.\n{he_cap} earns {} * {a} = {} dollars.", b + c, b + c, (b + c) * a),
                answer: a * (b + c),
                program: prog(&[("per_hour", a), ("monday", b), ("tuesday", c)], &["hours = monday + tuesday", "result = hours * per_hour"]),
            }
        }
        _ => {
            let a = rng.gen_range(6..20);
            let b = rng.gen_range(1..a);
            Problem {
                question: format!("{name} had {a} {items}. {he_cap} lost {b} of them and then doubled the number that was left. How many {items} does {name} have now?"),
                steps: format!("After losing {b}, {name} has {a} - {b} = {} {items}.\nDoubled, that is {} * 2 = {} {items}.", a - b, a - b, (a - b) * 2),
                answer: (a - b) * 2,
                program: prog(&[("start", a), ("lost", b)], &["left = start - lost", "result = left * 2"]),
            }
        }
    }
}
