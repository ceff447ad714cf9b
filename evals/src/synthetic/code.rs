//! Programming exercises with Python answers in the `def solution(): ... return result`
//! shape, each with an `assert` that checks the answer by running it. They teach the coding
//! skill (and the answer format) without ever being word problems, so the code adapter alone
//! does not solve the code-math target.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

const WORDS: [&str; 16] = [
    "garden", "rocket", "pencil", "window", "planet", "silver", "button", "forest", "castle",
    "bridge", "candle", "monkey", "orange", "ladder", "pirate", "jungle",
];

/// One exercise.
#[derive(Debug, Clone)]
pub struct Exercise {
    pub instruction: String,
    /// The program, unfenced.
    pub program: String,
    /// `assert solution() == ...`, run after the program to check it.
    pub test: String,
}

fn list(rng: &mut StdRng, n: usize) -> Vec<i64> {
    (0..n).map(|_| rng.gen_range(1..30)).collect()
}

fn show(v: &[i64]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

const HEAD: &str = "Write a Python function solution() that returns";

pub fn exercise(rng: &mut StdRng) -> Exercise {
    let word = *WORDS.choose(rng).unwrap_or(&WORDS[0]);
    match rng.gen_range(0..9) {
        0 => {
            let a = rng.gen_range(1..10);
            let b = a + rng.gen_range(2..12);
            Exercise {
                instruction: format!("{HEAD} the sum of the whole numbers from {a} to {b}."),
                program: format!("def solution():\n    total = 0\n    for number in range({a}, {b} + 1):\n        total = total + number\n    result = total\n    return result"),
                test: format!("assert solution() == {}", (a..=b).sum::<i64>()),
            }
        }
        1 => {
            let (a, b, c) = (rng.gen_range(2..9), rng.gen_range(2..9), rng.gen_range(2..9));
            Exercise {
                instruction: format!("{HEAD} the product of {a}, {b} and {c}."),
                program: format!("def solution():\n    first = {a}\n    second = {b}\n    third = {c}\n    result = first * second * third\n    return result"),
                test: format!("assert solution() == {}", a * b * c),
            }
        }
        2 => {
            let n = rng.gen_range(4..8);
            let v = list(rng, n);
            Exercise {
                instruction: format!("{HEAD} the largest number in the list {}.", show(&v)),
                program: format!("def solution():\n    numbers = {}\n    result = max(numbers)\n    return result", show(&v)),
                test: format!("assert solution() == {}", v.iter().max().copied().unwrap_or(0)),
            }
        }
        3 => {
            let n = rng.gen_range(4..9);
            let v = list(rng, n);
            Exercise {
                instruction: format!("{HEAD} how many even numbers are in the list {}.", show(&v)),
                program: format!("def solution():\n    numbers = {}\n    count = 0\n    for number in numbers:\n        if number % 2 == 0:\n            count = count + 1\n    result = count\n    return result", show(&v)),
                test: format!("assert solution() == {}", v.iter().filter(|x| *x % 2 == 0).count()),
            }
        }
        4 => Exercise {
            instruction: format!("{HEAD} the word '{word}' written backwards."),
            program: format!("def solution():\n    word = '{word}'\n    result = word[::-1]\n    return result"),
            test: format!("assert solution() == '{}'", word.chars().rev().collect::<String>()),
        },
        5 => Exercise {
            instruction: format!("{HEAD} the number of vowels in the word '{word}'."),
            program: format!("def solution():\n    word = '{word}'\n    count = 0\n    for letter in word:\n        if letter in 'aeiou':\n            count = count + 1\n    result = count\n    return result"),
            test: format!("assert solution() == {}", word.chars().filter(|c| "aeiou".contains(*c)).count()),
        },
        6 => {
            let (a, b) = (rng.gen_range(2..13), rng.gen_range(1..20));
            Exercise {
                instruction: format!("{HEAD} {a} squared minus {b}."),
                program: format!("def solution():\n    base = {a}\n    square = base * base\n    result = square - {b}\n    return result"),
                test: format!("assert solution() == {}", a * a - b),
            }
        }
        7 => {
            let n = rng.gen_range(3..7);
            let mean = rng.gen_range(3..20);
            let mut v: Vec<i64> = (0..n - 1).map(|_| rng.gen_range(1..2 * mean)).collect();
            let last = mean * n as i64 - v.iter().sum::<i64>();
            v.push(last);
            Exercise {
                instruction: format!("{HEAD} the average of the numbers in the list {}.", show(&v)),
                program: format!("def solution():\n    numbers = {}\n    total = sum(numbers)\n    result = total / len(numbers)\n    return result", show(&v)),
                test: format!("assert solution() == {mean}"),
            }
        }
        _ => {
            let (a, b) = (rng.gen_range(10..60), rng.gen_range(2..9));
            Exercise {
                instruction: format!("{HEAD} the remainder when {a} is divided by {b}."),
                program: format!("def solution():\n    dividend = {a}\n    divisor = {b}\n    result = dividend % divisor\n    return result"),
                test: format!("assert solution() == {}", a % b),
            }
        }
    }
}
