//! Fuzz tests of recipe files (TOML, and the JSON form `soup recipe run FILE.json` reads):
//! mutated built-in recipes are parsed and, when they parse, planned at every budget they
//! name. No panic, no hang, no allocation out of proportion to the file.

use super::{Recipe, BUILTIN_RECIPES};
use crate::fuzz_harness::{fuzz, Target};

fn check(r: crate::Result<Recipe>) -> bool {
    let Ok(r) = r else {
        return false;
    };
    let budgets: Vec<String> = r.budgets.keys().cloned().collect();
    for b in budgets {
        let _ = r.plan(&b);
    }
    let _ = r.plan("no such budget");
    true
}

#[test]
fn fuzz_recipe_toml() {
    fuzz(
        Target {
            name: "recipe TOML",
            seeds: BUILTIN_RECIPES
                .iter()
                .map(|(_, t)| t.as_bytes().to_vec())
                .collect(),
            hot_len: 0,
            json: false,
            cases: 2000,
        },
        |bytes| check(Recipe::parse(&String::from_utf8_lossy(bytes), "fuzz.toml")),
    );
}

#[test]
fn fuzz_recipe_json() {
    let seeds = BUILTIN_RECIPES
        .iter()
        .map(|(n, t)| {
            let r = Recipe::parse(t, n).expect("built-in recipe parses");
            serde_json::to_vec(&r).expect("serializes")
        })
        .collect();
    fuzz(
        Target {
            name: "recipe JSON",
            seeds,
            hot_len: 0,
            json: true,
            cases: 1500,
        },
        |bytes| {
            check(Recipe::parse_json(
                &String::from_utf8_lossy(bytes),
                "fuzz.json",
            ))
        },
    );
}

/// Regression: a JSON recipe skipped the checks a TOML one gets (two skills at least, known
/// target modules).
#[test]
fn json_recipes_are_checked_like_toml() {
    let r = Recipe::parse(BUILTIN_RECIPES[0].1, "code-math").expect("parses");
    let mut one_skill = r.clone();
    one_skill.skills.truncate(1);
    let text = serde_json::to_string(&one_skill).expect("serializes");
    let err = Recipe::parse_json(&text, "one.json").expect_err("one skill");
    assert!(err.to_string().contains("two skills"), "{err}");
    let mut bad_targets = r;
    bad_targets.lora.targets = "q,nonsense".into();
    let text = serde_json::to_string(&bad_targets).expect("serializes");
    assert!(Recipe::parse_json(&text, "t.json").is_err());
}
