//! A fictional product manual generated from a seed: invented brand, model, modes, lights,
//! error codes, parts and numbers that no pretrained model can know, written as several
//! thousand words of plain prose, with one to three short-answer questions per fact.
//!
//! Every fact that is asked about is stated three to five times, in different words and in
//! different parts of the manual (its own section, a quick reference, the service notes, a
//! summary), as real manuals repeat what matters: a small model is known not to learn to
//! answer about a fact it read once in one phrasing, so a manual that states each fact once
//! would put every method at the floor and measure nothing.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// An invented word from syllables ("Velmora"): the manual's vocabulary, disjoint from the
/// QA-skill documents, which use [`super::qa`]'s own pools.
pub(crate) fn coined(rng: &mut StdRng, syllables: &[&str], parts: usize) -> String {
    let mut s = String::new();
    for _ in 0..parts {
        s.push_str(syllables.choose(rng).copied().unwrap_or("ka"));
    }
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => s,
    }
}

const SYL: [&str; 16] = [
    "vel", "mor", "tra", "quin", "zel", "dor", "ka", "ryn", "os", "pli", "vex", "tor", "an", "sil",
    "bru", "gam",
];

/// A fact: where it sits in the manual, how else the manual says it, and how it is asked
/// about.
#[derive(Debug, Clone)]
pub struct Fact {
    pub sentence: String,
    /// The same fact in other words, one per later part of the manual (none for prose that is
    /// not asked about).
    pub restated: Vec<String>,
    pub questions: Vec<(String, String)>,
}

/// Titles of the parts that restate the facts, in order; restatement `i` of every fact goes
/// to part `i`.
pub const RESTATEMENT_PARTS: [&str; 4] = [
    "Quick reference",
    "Notes from the service team",
    "Summary of the most important facts",
    "Frequently needed details",
];

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The manual and its facts.
#[derive(Debug, Clone)]
pub struct ManualDoc {
    pub product: String,
    pub text: String,
    pub facts: Vec<Fact>,
}

const SPECS: [(&str, &str, u32, u32); 14] = [
    ("tank capacity", "liters", 2, 40),
    ("weight", "kilograms", 3, 60),
    ("standby power draw", "watts", 2, 15),
    ("rated power", "watts", 300, 2400),
    ("noise level", "decibels", 28, 70),
    ("warm-up time", "seconds", 20, 240),
    ("battery life", "hours", 4, 96),
    ("wireless range", "meters", 10, 120),
    ("maximum operating temperature", "degrees Celsius", 35, 65),
    ("minimum operating temperature", "degrees Celsius", 1, 12),
    ("display width", "centimeters", 6, 30),
    ("filter lifetime", "days", 30, 365),
    ("maximum water pressure", "bar", 2, 12),
    ("cable length", "meters", 1, 5),
];

const COLORS: [&str; 6] = ["amber", "blue", "green", "red", "violet", "white"];
const PATTERNS: [&str; 3] = ["steady", "slowly blinking", "rapidly blinking"];
const MEANINGS: [&str; 18] = [
    "the tank is nearly empty",
    "a firmware update is running",
    "the filter must be replaced",
    "the unit is pairing with the app",
    "the child lock is active",
    "the heater is warming up",
    "the battery is charging",
    "the drip tray is full",
    "the lid is not closed",
    "the unit is in night mode",
    "the water is too hard",
    "the fan is blocked",
    "the sensor needs cleaning",
    "the schedule is paused",
    "the unit is overheating",
    "the door seal is worn",
    "the pump is priming",
    "the memory card is full",
];
const CAUSES: [&str; 14] = [
    "a blocked intake valve",
    "a loose sensor cable",
    "low supply voltage",
    "a clogged nozzle",
    "a failed temperature probe",
    "an empty descaling chamber",
    "a stuck float switch",
    "a worn pump seal",
    "a cracked drip tray",
    "an expired filter cartridge",
    "a jammed rotor",
    "a damp control board",
    "a misaligned lid magnet",
    "a full condensation trap",
];
const FIXES: [&str; 14] = [
    "rinse the intake valve with warm water",
    "reseat the sensor cable",
    "move the unit to another outlet",
    "soak the nozzle in vinegar for one hour",
    "replace the temperature probe",
    "refill the descaling chamber",
    "tap the float switch gently",
    "replace the pump seal",
    "replace the drip tray",
    "insert a new filter cartridge",
    "turn the rotor by hand until it moves freely",
    "let the unit dry for two days",
    "realign the lid magnet",
    "empty the condensation trap",
];
const PARTS: [&str; 10] = [
    "filter cartridge",
    "drip tray",
    "pump seal",
    "descaling tablet",
    "nozzle",
    "door gasket",
    "carbon pad",
    "intake screen",
    "float switch",
    "rotor brush",
];
const MODE_ACTIONS: [&str; 8] = [
    "rinses the internal pipes",
    "heats the water to a gentle simmer",
    "runs the fan at the lowest speed",
    "dries the chamber with warm air",
    "cools the tank before storage",
    "mixes the nutrient solution",
    "descales the heating element",
    "circulates water through the filter",
];
const ACCESSORIES: [&str; 8] = [
    "wall bracket",
    "travel case",
    "spare lid",
    "measuring scoop",
    "extension hose",
    "cleaning brush",
    "mounting plate",
    "charging dock",
];

fn pick<T: Copy>(rng: &mut StdRng, v: &[T]) -> T {
    v[rng.gen_range(0..v.len())]
}

/// Generate the manual. `error_codes` sets its length (about 25 words each); the default
/// writer uses 60, which gives well over three thousand words.
/// A coined word not used before in this manual.
fn fresh(rng: &mut StdRng, used: &mut std::collections::HashSet<String>, parts: usize) -> String {
    loop {
        let w = coined(rng, &SYL, parts);
        if used.insert(w.clone()) {
            return w;
        }
    }
}

pub fn manual(rng: &mut StdRng, error_codes: usize) -> ManualDoc {
    // Every invented name is distinct, so no question is ambiguous.
    let mut used = std::collections::HashSet::new();
    let brand = fresh(rng, &mut used, 3);
    let model = format!(
        "{} {}{}",
        fresh(rng, &mut used, 2),
        (b'A' + rng.gen_range(0..26u8)) as char,
        rng.gen_range(2..99)
    );
    let product = format!("{brand} {model}");
    let company = format!("{} Works", fresh(rng, &mut used, 2));
    let town = fresh(rng, &mut used, 3);
    let year = rng.gen_range(1952..2011);
    let mut sections: Vec<(String, Vec<Fact>, String)> = Vec::new();
    let fact = |s: String, restated: Vec<String>, q: Vec<(String, String)>| Fact {
        sentence: s,
        restated,
        questions: q,
    };

    // About.
    let warranty = rng.gen_range(6..61);
    let support = format!("{}-{}", rng.gen_range(100..999), rng.gen_range(1000..9999));
    sections.push((
        "About this manual".into(),
        vec![
            fact(format!("The {product} is made by {company}."), vec![
                format!("{company} manufactures the {product}."),
                format!("The manufacturer of the {product} is {company}."),
                format!("Every {product} is built by {company}."),
            ], vec![(format!("Which company makes the {product}?"), company.clone())]),
            fact(format!("{company} was founded in {year} in the town of {town}."), vec![
                format!("{company} began in the town of {town} in {year}."),
                format!("The home town of {company} is {town}, where it was founded in {year}."),
                format!("In {year}, {company} was started in {town}."),
            ], vec![
                (format!("In which town was {company} founded?"), town.clone()),
                (format!("In which year was {company} founded?"), year.to_string()),
            ]),
            fact(format!("The warranty of the {product} lasts {warranty} months from the date of purchase."), vec![
                format!("The {product} comes with a warranty of {warranty} months."),
                format!("Warranty of the {product}: {warranty} months from purchase."),
                format!("{company} guarantees the {product} for {warranty} months after you buy it."),
            ], vec![(format!("How long does the warranty of the {product} last?"), format!("{warranty} months"))]),
            fact(format!("The support line of {company} answers at extension {support}."), vec![
                format!("Call extension {support} to reach the {company} support line."),
                format!("The {company} support line is at extension {support}."),
                format!("Support for the {product}: {company}, extension {support}."),
            ], vec![(format!("At which extension does the {company} support line answer?"), support.clone())]),
        ],
        format!("Read this manual before you use the {product} for the first time, and keep it near the unit. It explains how to install, operate, clean and repair the unit. Every number in it applies to the {product} only; other models of {brand} behave differently."),
    ));

    // Specifications.
    let mut specs = Vec::new();
    for (name, unit, lo, hi) in SPECS {
        let v = rng.gen_range(lo..=hi);
        specs.push(fact(
            format!("The {name} of the {product} is {v} {unit}."),
            vec![
                format!("{}: {v} {unit}.", capitalized(name)),
                format!("The {product} has a {name} of {v} {unit}."),
                format!("Measured by {company}, the {name} of the {product} is {v} {unit}."),
            ],
            vec![(
                format!("What is the {name} of the {product}?"),
                format!("{v} {unit}"),
            )],
        ));
    }
    sections.push(("Specifications".into(), specs, "The values below were measured by the manufacturer under normal household conditions. Do not operate the unit outside these limits.".into()));

    // Buttons and reset.
    let buttons: Vec<String> = (0..3)
        .map(|_| format!("{} button", fresh(rng, &mut used, 2)))
        .collect();
    let hold = rng.gen_range(3..16);
    let pair = rng.gen_range(2..9);
    let lock = rng.gen_range(2..7);
    sections.push(("Controls".into(), vec![
        fact(format!("To reset the {product}, hold the {} for {hold} seconds.", buttons[0]), vec![
            format!("Holding the {} for {hold} seconds resets the {product}.", buttons[0]),
            format!("Reset: press and hold the {} for {hold} seconds.", buttons[0]),
            format!("The {} resets the {product} when it is held for {hold} seconds.", buttons[0]),
        ], vec![
            (format!("How long must you hold the {} to reset the {product}?", buttons[0]), format!("{hold} seconds")),
            (format!("Which button resets the {product}?"), buttons[0].clone()),
        ]),
        fact(format!("To pair the unit with the app, press the {} {pair} times.", buttons[1]), vec![
            format!("Pressing the {} {pair} times pairs the {product} with the app.", buttons[1]),
            format!("App pairing: press the {} {pair} times.", buttons[1]),
            format!("The {product} pairs with the app after {pair} presses of the {}.", buttons[1]),
        ], vec![(format!("How many times must you press the {} to pair the unit with the app?", buttons[1]), pair.to_string())]),
        fact(format!("To turn on the child lock, hold the {} for {lock} seconds.", buttons[2]), vec![
            format!("Holding the {} for {lock} seconds turns on the child lock of the {product}.", buttons[2]),
            format!("Child lock: hold the {} for {lock} seconds.", buttons[2]),
            format!("The child lock of the {product} is turned on with the {}.", buttons[2]),
        ], vec![(format!("Which button turns on the child lock of the {product}?"), buttons[2].clone())]),
    ], "The control panel sits on the front of the unit. The buttons respond to a firm press; a short beep confirms each press.".into()));

    // Modes.
    let mut modes = Vec::new();
    let mut actions = MODE_ACTIONS.to_vec();
    actions.shuffle(rng);
    for action in actions.iter().take(6) {
        let name = format!("{} mode", fresh(rng, &mut used, 2));
        let minutes = rng.gen_range(3..90);
        modes.push(fact(
            format!("In {name}, the {product} {action} for {minutes} minutes."),
            vec![
                format!("During {name}, which lasts {minutes} minutes, the unit {action}."),
                format!("{}: the {product} {action}; it runs for {minutes} minutes.", capitalized(&name)),
                format!("The mode in which the {product} {action} is {name}, and it takes {minutes} minutes."),
            ],
            vec![
                (
                    format!("How long does {name} run?"),
                    format!("{minutes} minutes"),
                ),
                (format!("Which mode {action}?"), name.clone()),
            ],
        ));
    }
    sections.push(("Operating modes".into(), modes, "Select a mode by turning the mode dial until its name appears on the display. The unit finishes the current mode before it starts the next one.".into()));

    // Lights.
    let mut lights = Vec::new();
    let mut meanings = MEANINGS.to_vec();
    meanings.shuffle(rng);
    let mut combos: Vec<(&str, &str)> = COLORS
        .iter()
        .flat_map(|c| PATTERNS.iter().map(move |p| (*p, *c)))
        .collect();
    combos.shuffle(rng);
    for ((pattern, color), meaning) in combos.iter().zip(meanings.iter()).take(12) {
        lights.push(fact(
            format!("A {pattern} {color} light means that {meaning}."),
            vec![
                format!("When the status light is {color} and {pattern}, {meaning}."),
                format!("If you see a {pattern} {color} light on the {product}, {meaning}."),
                format!(
                    "{}: shown by a {pattern} {color} light.",
                    capitalized(meaning)
                ),
            ],
            vec![(
                format!("What does a {pattern} {color} light mean on the {product}?"),
                meaning.to_string(),
            )],
        ));
    }
    sections.push(("Indicator lights".into(), lights, "The status light above the display shows what the unit is doing. Colors and blinking patterns have the meanings listed here.".into()));

    // Maintenance.
    let mut maint = Vec::new();
    let mut parts = PARTS.to_vec();
    parts.shuffle(rng);
    for part in parts.iter().take(8) {
        let n = rng.gen_range(2..13);
        let unit = pick(rng, &["weeks", "months"]);
        maint.push(fact(
            format!("Replace the {part} every {n} {unit}."),
            vec![
                format!("The {part} of the {product} should be replaced every {n} {unit}."),
                format!("Every {n} {unit}, put a new {part} into the {product}."),
                format!("{}: replace every {n} {unit}.", capitalized(part)),
            ],
            vec![(
                format!("How often should the {part} of the {product} be replaced?"),
                format!("every {n} {unit}"),
            )],
        ));
    }
    sections.push(("Maintenance".into(), maint, "Regular care keeps the unit quiet and efficient. Always unplug the unit and let it cool down before you open any cover.".into()));

    // Accessories.
    let mut acc = Vec::new();
    for a in ACCESSORIES {
        let pn = format!(
            "{}-{}",
            fresh(rng, &mut used, 1).to_uppercase(),
            rng.gen_range(100..999)
        );
        acc.push(fact(
            format!("The {a} has the part number {pn}."),
            vec![
                format!("Part number {pn} is the {a} for the {product}."),
                format!("Order the {a} as part {pn}."),
                format!("{}: part number {pn}.", capitalized(a)),
            ],
            vec![(
                format!("What is the part number of the {a} for the {product}?"),
                pn,
            )],
        ));
    }
    sections.push((
        "Accessories".into(),
        acc,
        format!("Use only accessories approved by {company}; others may void the warranty."),
    ));

    // Installation: prose the manual adapter must absorb; questions about it need long answers,
    // so it asks none.
    let clearance = rng.gen_range(5..40);
    let rest = rng.gen_range(2..12);
    let install = [
        format!("Unpack the {product} and remove every strip of tape from the lid, the tank and the drip tray."),
        format!("Place the unit on a flat, dry surface with at least {clearance} centimeters of free space on every side."),
        "Rinse the tank with clean water, dry it with a soft cloth and slide it into its rails until it clicks.".to_string(),
        format!("Let the unit rest upright for {rest} hours before the first start if it was carried on its side."),
        format!("Connect the power cable to a grounded outlet and press the {} once to wake the display.", buttons[0]),
        "Choose a language and the local time on the display, then confirm each choice with a firm press.".to_string(),
        "Run one full rinse cycle with an empty filter slot and pour the water away afterwards.".to_string(),
    ];
    sections.push(("Installation".into(), install.iter().enumerate().map(|(i, s)| fact(format!("Step {}: {s}", i + 1), vec![], vec![])).collect(), format!("Install the {product} in a room that stays above freezing. Keep the packaging until the unit has run for a week without faults.")));
    let last = sections.len() - 1;
    sections[last].1[1].restated = vec![
        format!("Leave {clearance} centimeters of free space on every side of the {product}."),
        format!("Free space around the {product}: {clearance} centimeters on every side."),
        format!("The {product} needs {clearance} centimeters of room on each side."),
    ];
    sections[last].1[1].questions.push((
        format!("How much free space does the {product} need on every side?"),
        format!("{clearance} centimeters"),
    ));

    // Safety: more prose.
    sections.push(("Safety".into(), vec![], format!("Never open the housing of the {product} while it is plugged in. Do not let children play with the unit, the cable or the packaging. Keep the air vents free of dust, curtains and paper. Do not place the unit near a stove, a radiator or in direct sunlight. Do not use the unit outdoors or in a bathroom. If the cable is damaged, it must be replaced by {company} or by a service partner of {company}, never by the user. Use only the cleaning agents named in this manual; strong solvents damage the seals and the display. Unplug the unit before a thunderstorm and when you leave home for more than a week.")));

    // Error codes.
    let mut errs = Vec::new();
    let prefix = (b'A' + rng.gen_range(0..26u8)) as char;
    let mut numbers: Vec<u32> = (10..100).collect();
    numbers.shuffle(rng);
    for &n in numbers.iter().take(error_codes) {
        let i = rng.gen_range(0..CAUSES.len());
        let code = format!("{prefix}{n}");
        let stop = rng.gen_range(2..30);
        let repeats = rng.gen_range(2..6);
        let (cause, fix) = (CAUSES[i], FIXES[i]);
        errs.push(fact(
            format!("Error code {code} appears when the unit detects {cause}. The display dims and the pump stops within {stop} seconds, so no water is lost. To clear it, {fix}, then restart the unit. If error code {code} returns more than {repeats} times in one day, stop using the unit and call the support line."),
            vec![
                format!("Error code {code}: caused by {cause}; the pump stops within {stop} seconds."),
                format!("The cause of error code {code} is {cause}. To clear it, {fix}; if it comes back more than {repeats} times in one day, stop using the unit."),
                format!("If error code {code} returns more than {repeats} times in one day, call the support line; it means {cause}."),
                format!("After error code {code} appears, the pump of the {product} stops within {stop} seconds."),
            ],
            vec![
                (format!("What causes error code {code} on the {product}?"), cause.to_string()),
                (format!("Within how many seconds does the pump stop after error code {code} appears?"), format!("{stop} seconds")),
                (format!("How many times may error code {code} return in one day before you call the support line?"), repeats.to_string()),
            ],
        ));
    }
    sections.push(("Error codes".into(), errs, "When the unit stops because of a fault, the display shows an error code. Find the code below, follow the instructions, and restart the unit. If the code appears again, call the support line.".into()));

    let mut text = format!("{product} Owner's Manual\n\n");
    let mut facts = Vec::new();
    for (title, fs, intro) in sections {
        text.push_str(&format!("{title}\n\n{intro}\n\n"));
        for f in &fs {
            text.push_str(&f.sentence);
            text.push_str("\n\n");
        }
        facts.extend(fs);
    }
    // The restatements, each part in its own order, so no fact sits beside the same
    // neighbours twice.
    for (part, title) in RESTATEMENT_PARTS.iter().enumerate() {
        let mut lines: Vec<&String> = facts.iter().filter_map(|f| f.restated.get(part)).collect();
        if lines.is_empty() {
            continue;
        }
        lines.shuffle(rng);
        text.push_str(&format!("{title}\n\n"));
        for l in lines {
            text.push_str(l);
            text.push_str("\n\n");
        }
    }
    ManualDoc {
        product,
        text,
        facts,
    }
}
