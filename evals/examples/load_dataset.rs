//! Try the loaders on a file by hand: prints the detected format, the item count and the first
//! item, or the loader's error. `cargo run -p soup-evals --example load_dataset -- FILE...`

use soup_evals::datasets::{self, Format};

fn main() {
    for arg in std::env::args().skip(1) {
        let path = std::path::Path::new(&arg);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                println!("{arg}: {e}");
                continue;
            }
        };
        let format = datasets::detect_format(&text);
        let summary = match &format {
            Ok(Format::Gsm8kJsonl | Format::GsmHardLoraSoups | Format::GsmHardPal) => {
                datasets::parse_math(path, &text)
                    .map(|v| format!("{} items, first {:?}", v.len(), v.first()))
            }
            Ok(Format::QaLoraSoups | Format::ReadingComprehension) => {
                datasets::parse_qa(path, &text).map(|v| {
                    let nic = v.iter().filter(|q| q.unanswerable).count();
                    format!(
                        "{} items ({nic} not in context), first {:?}",
                        v.len(),
                        v.first().map(|q| (&q.question, &q.answers))
                    )
                })
            }
            Ok(Format::Alpaca) => {
                datasets::parse_instructions(path, &text).map(|v| format!("{} items", v.len()))
            }
            Ok(Format::ManualText) => datasets::load_manual(path).map(|m| {
                format!(
                    "{} words, {} paragraphs",
                    m.text.split_whitespace().count(),
                    m.paragraphs().len()
                )
            }),
            Err(e) => Ok(format!("unknown format: {e}")),
        };
        match summary {
            Ok(s) => println!("{arg}: {:?}: {s}", format.as_ref().ok()),
            Err(e) => println!("{arg}: error: {e}"),
        }
    }
}
