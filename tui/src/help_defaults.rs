//! Every flag that takes a value says in `--help` what it is when not given: clap's
//! `[default: ...]`, or a help text that says so ("default: ...", "Without it: ..."). Walks the
//! whole command tree, so a flag added later without either fails here.

/// Words by which a help text says what an unset flag means.
const SAYS_WHAT_HAPPENS: [&str; 4] = ["default", "without it", "required", "none:"];

fn missing(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    let path = format!("{path} {}", cmd.get_name()).trim().to_string();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" || !arg.get_action().takes_values() {
            continue;
        }
        // A required flag cannot be left out: its usage line says it is required.
        if arg.is_required_set() {
            continue;
        }
        if !arg.get_default_values().is_empty() && !arg.is_hide_default_value_set() {
            continue;
        }
        let help = [arg.get_help(), arg.get_long_help()]
            .into_iter()
            .flatten()
            .map(|h| h.to_string().to_lowercase())
            .collect::<Vec<_>>()
            .join(" ");
        if SAYS_WHAT_HAPPENS.iter().any(|w| help.contains(w)) {
            continue;
        }
        let name = arg
            .get_long()
            .map(|l| format!("--{l}"))
            .unwrap_or_else(|| id.to_string());
        out.push(format!("{path} {name}"));
    }
    for sub in cmd.get_subcommands() {
        missing(sub, &path, out);
    }
}

#[test]
fn every_value_flag_says_its_default() {
    let cmd = crate::Cli::full_command();
    let mut out = Vec::new();
    missing(&cmd, "", &mut out);
    assert!(
        out.is_empty(),
        "flags whose --help shows neither a [default: ...] nor what happens without them:\n{}",
        out.join("\n")
    );
}

#[test]
fn the_walk_sees_subcommand_flags() {
    // The check above is only as good as its walk: it must reach nested subcommands' flags.
    let cmd = crate::Cli::full_command();
    let mut all = Vec::new();
    fn names(cmd: &clap::Command, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            if let Some(l) = a.get_long() {
                out.push(format!("{} --{l}", cmd.get_name()));
            }
        }
        for s in cmd.get_subcommands() {
            names(s, out);
        }
    }
    names(&cmd, &mut all);
    for want in ["eval --backend", "lora --rank", "export --format"] {
        assert!(all.iter().any(|n| n == want), "{want} not reached: {all:?}");
    }
}
