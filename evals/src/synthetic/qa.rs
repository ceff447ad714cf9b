//! Reading-comprehension documents for the QA skill: short invented passages (towns, ships,
//! festivals) with one question each, about a quarter of them unanswerable from the passage
//! ("Not in context"). Their vocabulary is disjoint from the manual's, so the QA adapter learns
//! the skill without learning any manual fact.

use super::manual::coined;
use rand::rngs::StdRng;
use rand::Rng;

const SYL: [&str; 12] = [
    "mar", "lo", "ben", "ti", "sa", "ru", "fen", "ho", "li", "da", "wen", "pe",
];
const COLORS: [&str; 5] = ["red", "yellow", "grey", "green", "brown"];
const GOODS: [&str; 6] = ["cheese", "wool", "glass", "honey", "salt", "rope"];

/// A passage, a question, and the short answer ("Not in context" when unanswerable).
#[derive(Debug, Clone)]
pub struct RcItem {
    pub context: String,
    pub question: String,
    pub answer: String,
}

/// Facts as (sentence, question, answer); one is dropped from the passage when the question
/// is to be unanswerable.
fn facts(rng: &mut StdRng) -> Vec<(String, String, String)> {
    let person = format!("{} {}", coined(rng, &SYL, 2), coined(rng, &SYL, 2));
    match rng.gen_range(0..3) {
        0 => {
            let town = coined(rng, &SYL, 3);
            let river = coined(rng, &SYL, 2);
            let bridges = rng.gen_range(2..12);
            let hour = rng.gen_range(5..11);
            let color = COLORS[rng.gen_range(0..COLORS.len())];
            let good = GOODS[rng.gen_range(0..GOODS.len())];
            vec![
                (
                    format!("{town} is a town on the {river} River."),
                    format!("On which river is {town}?"),
                    format!("the {river} River"),
                ),
                (
                    format!("It has {bridges} bridges."),
                    format!("How many bridges does {town} have?"),
                    bridges.to_string(),
                ),
                (
                    format!("Its market opens at {hour} o'clock."),
                    format!("When does the market in {town} open?"),
                    format!("{hour} o'clock"),
                ),
                (
                    format!("The houses of {town} have {color} roofs."),
                    format!("What color are the roofs in {town}?"),
                    color.to_string(),
                ),
                (
                    format!("The mayor of {town} is {person}."),
                    format!("Who is the mayor of {town}?"),
                    person.clone(),
                ),
                (
                    format!("The town is famous for its {good}."),
                    format!("What is {town} famous for?"),
                    good.to_string(),
                ),
            ]
        }
        1 => {
            let ship = format!("the {}", coined(rng, &SYL, 3));
            let crew = rng.gen_range(8..60);
            let masts = rng.gen_range(1..5);
            let port = coined(rng, &SYL, 2);
            let good = GOODS[rng.gen_range(0..GOODS.len())];
            vec![
                (
                    format!("{} is a cargo ship with {masts} masts.", cap(&ship)),
                    format!("How many masts does {ship} have?"),
                    masts.to_string(),
                ),
                (
                    format!("It carries a crew of {crew} sailors."),
                    format!("How many sailors are in the crew of {ship}?"),
                    crew.to_string(),
                ),
                (
                    format!("Its home port is {port}."),
                    format!("What is the home port of {ship}?"),
                    port.clone(),
                ),
                (
                    format!("The captain of {ship} is {person}."),
                    format!("Who is the captain of {ship}?"),
                    person.clone(),
                ),
                (
                    format!("It mostly carries {good}."),
                    format!("What does {ship} mostly carry?"),
                    good.to_string(),
                ),
            ]
        }
        _ => {
            let fest = format!("the {} Festival", coined(rng, &SYL, 2));
            let days = rng.gen_range(2..10);
            let month = ["March", "May", "June", "August", "October"][rng.gen_range(0..5)];
            let color = COLORS[rng.gen_range(0..COLORS.len())];
            vec![
                (
                    format!("{} takes place every year in {month}.", cap(&fest)),
                    format!("In which month does {fest} take place?"),
                    month.to_string(),
                ),
                (
                    format!("It lasts {days} days."),
                    format!("How many days does {fest} last?"),
                    days.to_string(),
                ),
                (
                    format!("Visitors wear {color} scarves."),
                    format!("What color are the scarves worn at {fest}?"),
                    color.to_string(),
                ),
                (
                    format!("It was started by {person}."),
                    format!("Who started {fest}?"),
                    person.clone(),
                ),
            ]
        }
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// One reading-comprehension item; unanswerable with probability 1/4.
pub fn item(rng: &mut StdRng) -> RcItem {
    let fs = facts(rng);
    let target = rng.gen_range(0..fs.len());
    // The first sentence names the subject: never drop it.
    let unanswerable = target > 0 && rng.gen_bool(0.25);
    let context = fs
        .iter()
        .enumerate()
        .filter(|(i, _)| !(unanswerable && *i == target))
        .map(|(_, f)| f.0.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    RcItem {
        context,
        question: fs[target].1.clone(),
        answer: if unanswerable {
            crate::datasets::NOT_IN_CONTEXT.to_string()
        } else {
            fs[target].2.clone()
        },
    }
}
