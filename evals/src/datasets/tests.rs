//! Loader tests on small inline fixtures shaped like the real files.

use super::*;
use std::path::Path;

fn p() -> &'static Path {
    Path::new("fixture.json")
}

#[test]
fn gsm8k_jsonl() {
    let text = concat!(
        r#"{"question": "Janet has 16 eggs and eats 3. How many are left?", "answer": "16 - 3 = <<16-3=13>>13\n#### 13"}"#,
        "\n\n",
        r#"{"question": "Big?", "answer": "so\n#### 1,234"}"#,
        "\n"
    );
    assert_eq!(detect_format(text), Ok(Format::Gsm8kJsonl));
    let items = parse_math(p(), text).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].gold, 13.0);
    assert_eq!(items[1].gold, 1234.0);
    assert_eq!(items[1].id, "2", "ids are 0-based line positions");
    let ins = parse_instructions(p(), text).unwrap();
    assert!(ins[0].output.ends_with("#### 13"));
}

#[test]
fn gsm8k_missing_marker_names_line() {
    let text = "{\"question\": \"a\", \"answer\": \"#### 1\"}\n{\"question\": \"b\", \"answer\": \"no marker\"}\n";
    let e = parse_math(Path::new("g.jsonl"), text).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("g.jsonl:2:"), "{msg}");
    assert!(msg.contains("####"), "{msg}");
    let e = parse_math(
        Path::new("g.jsonl"),
        "{\"question\": \"a\", \"answer\": \"#### 1\"}\n{oops\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().starts_with("g.jsonl:2: not valid JSON"),
        "{e}"
    );
}

#[test]
fn gsm_hard_both_flavours() {
    let ls = r#"[{"instruction": "Ducks lay 16 eggs...", "answer": -9867630.0}, {"instruction": "x", "answer": 3.5}]"#;
    assert_eq!(detect_format(ls), Ok(Format::GsmHardLoraSoups));
    let items = parse_math(p(), ls).unwrap();
    assert_eq!(items[0].gold, -9867630.0);
    let pal = concat!(
        r#"{"input": "q1", "target": 5, "code": "def solution():\n    return 5"}"#,
        "\n",
        r#"{"input": "q2", "target": "7.5"}"#
    );
    assert_eq!(detect_format(pal), Ok(Format::GsmHardPal));
    let items = parse_math(p(), pal).unwrap();
    assert_eq!(items[1].gold, 7.5);
    assert!(items[0].solution.is_some());
    let bad = r#"[{"instruction": "a", "answer": 1}, {"instruction": "b", "answer": "many"}]"#;
    let e = parse_math(p(), bad).unwrap_err();
    assert!(e.to_string().contains("row 2"), "{e}");
}

#[test]
fn qa_and_reading_comprehension() {
    let qa = r#"[{"instruction": "What happens at 3rd level?", "output": "The correct answer is You rage", "answer": "You rage", "context": "9Reckless..."}]"#;
    assert_eq!(detect_format(qa), Ok(Format::QaLoraSoups));
    let items = parse_qa(p(), qa).unwrap();
    assert_eq!(items[0].answers, vec!["You rage".to_string()]);
    assert!(!items[0].unanswerable);

    let rc = r#"[
      {"instruction": "Please use the information in the provided context to respond to the question below. If there is not enough information provided, answer with 'Not in context'.\n\nContext: RPKM is used.\n\nQuestion: What is used?", "input": "", "output": "the correct answer is RPKM", "answer": "RPKM"},
      {"instruction": "Please use ... 'Not in context'.\n\nContext: Cats sleep.\n\nQuestion: Why do dogs bark?", "input": "", "output": "Not in context", "answer": "Not in context"}
    ]"#;
    assert_eq!(detect_format(rc), Ok(Format::ReadingComprehension));
    let items = parse_qa(p(), rc).unwrap();
    assert_eq!(items[0].context.as_deref(), Some("RPKM is used."));
    assert_eq!(items[0].question, "What is used?");
    assert!(items[1].unanswerable);
    let ins = parse_instructions(p(), rc).unwrap();
    assert_eq!(ins[0].output, "RPKM");
}

#[test]
fn alpaca_and_wrong_kind() {
    let a = r#"[{"instruction": "Give three tips.", "input": "", "output": "1. Eat."}, {"instruction": "x", "output": "y"}]"#;
    assert_eq!(detect_format(a), Ok(Format::Alpaca));
    let ins = parse_instructions(p(), a).unwrap();
    assert_eq!(ins[1].input, "");
    let e = parse_math(p(), a).unwrap_err();
    assert!(matches!(e, DatasetError::WrongKind { .. }), "{e}");
    let e = parse_instructions(p(), r#"[{"instruction": 3, "output": "y"}]"#).unwrap_err();
    assert!(
        e.to_string().contains("\"instruction\" must be a string"),
        "{e}"
    );
}

#[test]
fn unknown_and_empty() {
    assert!(detect_format(r#"[{"foo": 1}]"#).is_err());
    assert_eq!(
        detect_format("Races\nEvery race..."),
        Ok(Format::ManualText)
    );
    let e = parse_math(p(), "[]").unwrap_err();
    assert!(e.to_string().contains("fixture.json"), "{e}");
}

#[test]
fn manual_file_and_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("manual.txt");
    std::fs::write(&f, "Title\n\nFirst paragraph.\n\nSecond paragraph here.\n").unwrap();
    let m = load_manual(&f).unwrap();
    assert_eq!(m.paragraphs().len(), 3);
    assert_eq!(m.chunks(30).len(), 2);
    let e = load_math(&dir.path().join("missing.jsonl")).unwrap_err();
    assert!(e.to_string().contains("missing.jsonl"), "{e}");
}
