//! Write a synthetic family to a directory, as `soup data generate` will:
//! `cargo run -p soup-evals --example write_synthetic -- code-math|manual-qa SEED DIR`.

use soup_evals::synthetic::{write_synthetic, SyntheticKind};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, seed, dir] = args.as_slice() else {
        eprintln!("usage: write_synthetic code-math|manual-qa SEED DIR");
        std::process::exit(2);
    };
    let kind: SyntheticKind = kind.parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let seed: u64 = seed.parse().unwrap_or_else(|_| {
        eprintln!("SEED must be a whole number");
        std::process::exit(2)
    });
    match write_synthetic(kind, seed, std::path::Path::new(dir)) {
        Ok(files) => files.iter().for_each(|f| println!("{}", f.display())),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}
