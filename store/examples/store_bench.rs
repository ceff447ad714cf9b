//! Store benchmark: insert throughput, cold open with 100k records, paging 50 at a time, bytes
//! on disk per record, and disk use across repeated runs. Reports figures; never fails on them.
//!
//! `BENCH_DIR=/some/disk cargo run --release -p soup-store --example store_bench [-- RECORDS]`
//! (default 100000 records).
//! Targets from the issue: open under 300 ms, one page under 5 ms, under 2 KB per record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use soup_store::{RecordQuery, RunId, RunKind, Store, StoredQuestion};

/// A record shaped like a real code-math evaluation: a question with its instruction, a
/// generated program, its output.
fn typical(run: RunId, index: u64) -> StoredQuestion {
    let verdict = ["correct", "wrong", "error", "wrong"][(index % 4) as usize];
    let question = format!(
        "Q{index}: Natalia sold clips to {} of her friends in April, and then she sold half as \
         many clips in May. How many clips did Natalia sell altogether in April and May? Write \
         a Python program that prints the answer. ",
        index % 97
    );
    let program = format!(
        "april = {}\nmay = april // 2\ntotal = april + may\nprint(total)\n# checked the \
         arithmetic step by step: april plus may gives the total number of clips sold\n",
        index % 97
    );
    StoredQuestion {
        run,
        index,
        id: format!("gsm8k-test-{index}"),
        verdict: verdict.to_string(),
        scores: BTreeMap::from([(
            "exact_match".to_string(),
            (verdict == "correct") as u8 as f64,
        )]),
        // The grader's record, shaped as soup-evals writes it.
        detail: serde_json::json!({
            "id": format!("gsm8k-test-{index}"),
            "prompt": question.repeat(2),
            "raw_output": format!("```python\n{program}```\nThe answer is printed above."),
            "extracted": program,
            "stdout": format!("{}\n", (index % 97) * 3 / 2),
            "stderr": "",
            "exit_code": 0,
            "sandbox_seconds": (35 + index % 20) as f64 / 1000.0,
            "gold": format!("{}", (index % 97) * 3 / 2),
            "pred": format!("{}", (index % 97) * 3 / 2),
            "prompt_tokens": 112,
            "output_tokens": 64,
            "latency_s": (900 + index % 300) as f64 / 1000.0,
            "cached": false,
        }),
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn pct(mut xs: Vec<Duration>, p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() - 1) as f64 * p) as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--open-only DIR`: time one open in this fresh process (see "cold open" below).
    if std::env::args().nth(1).as_deref() == Some("--open-only") {
        let dir = std::env::args().nth(2).ok_or("--open-only needs a dir")?;
        let t = Instant::now();
        let store = Store::open(&dir)?;
        println!("{}", t.elapsed().as_secs_f64() * 1e3);
        drop(store);
        return Ok(());
    }
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 100_000,
    };
    // The database goes under $BENCH_DIR if set (pick a real disk: /tmp may be tmpfs).
    let tmp = match std::env::var_os("BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let data = tmp.path().join("data");
    let store = Store::open(&data)?;
    let sample = serde_json::to_vec(&typical(RunId::nil(), 12345))?.len();
    println!("typical record: {sample} bytes of JSON");

    // Durable one-by-one inserts, as an evaluation writes them.
    let single = store.create_run(RunKind::Eval, "single", serde_json::json!({}))?;
    let k = 2000;
    let t = Instant::now();
    for i in 0..k {
        store.put_record(&typical(single.id, i))?;
    }
    let dt = t.elapsed();
    println!(
        "put_record (flush each): {k} records in {:.2} s = {:.0} records/s",
        dt.as_secs_f64(),
        k as f64 / dt.as_secs_f64()
    );
    store.delete_run(single.id)?;

    // Bulk inserts, 1000 per call.
    let run = store.create_run(RunKind::Eval, "bulk", serde_json::json!({}))?;
    let t = Instant::now();
    for start in (0..n).step_by(1000) {
        let batch: Vec<_> = (start..(start + 1000).min(n))
            .map(|i| typical(run.id, i))
            .collect();
        store.put_records(&batch)?;
    }
    let dt = t.elapsed();
    println!(
        "put_records (1000 per batch): {n} records in {:.2} s = {:.0} records/s",
        dt.as_secs_f64(),
        n as f64 / dt.as_secs_f64()
    );
    store.flush()?;
    let bytes = store.disk_bytes();
    println!(
        "disk after {n} records: {:.1} MB = {:.0} bytes/record",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );
    drop(store);

    // Cold open: a fresh process opens the database (the OS page cache is warm).
    let mut fresh = Vec::new();
    for _ in 0..5 {
        let out = std::process::Command::new(std::env::current_exe()?)
            .arg("--open-only")
            .arg(&data)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        fresh.push(Duration::from_secs_f64(text.trim().parse::<f64>()? / 1e3));
    }
    println!(
        "cold open in a fresh process with {n} records: median {:.1} ms (runs: {:?})",
        ms(median(fresh.clone())),
        fresh
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
    );
    let mut opens = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let store = Store::open(&data)?;
        opens.push(t.elapsed());
        drop(store);
    }
    println!(
        "reopen in the same process: median {:.1} ms (runs: {:?})",
        ms(median(opens.clone())),
        opens
            .iter()
            .map(|d| format!("{:.0}", ms(*d)))
            .collect::<Vec<_>>()
    );
    let store = Store::open(&data)?;
    let bytes = store.disk_bytes();
    println!(
        "disk after reopen: {:.1} MB = {:.0} bytes/record",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );

    // Paging 50 at a time through all records, then through one verdict.
    for verdict in [None, Some("wrong".to_string())] {
        let mut pages = Vec::new();
        let mut from = 0;
        let mut seen = 0;
        let t = Instant::now();
        loop {
            let t = Instant::now();
            let page = store.records_page(
                run.id,
                &RecordQuery {
                    verdict: verdict.clone(),
                    from,
                    limit: 50,
                },
            )?;
            pages.push(t.elapsed());
            seen += page.items.len();
            match page.next {
                Some(next) => from = next,
                None => break,
            }
        }
        println!(
            "paging 50 at a time ({}): {} pages, {seen} records, {:.2} s total, page median \
             {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            verdict.as_deref().unwrap_or("all verdicts"),
            pages.len(),
            t.elapsed().as_secs_f64(),
            ms(median(pages.clone())),
            ms(pct(pages.clone(), 0.99)),
            ms(pct(pages, 1.0)),
        );
    }
    let t = Instant::now();
    let counts = store.verdict_counts(run.id)?;
    println!("verdict counts: {:.3} ms {counts:?}", ms(t.elapsed()));

    // Repeated runs: delete and write the run again; disk use should level off.
    let mut last = run.id;
    for round in 1..=5 {
        store.delete_run(last)?;
        let again = store.create_run(RunKind::Eval, "again", serde_json::json!({}))?;
        for start in (0..n).step_by(1000) {
            let batch: Vec<_> = (start..(start + 1000).min(n))
                .map(|i| typical(again.id, i))
                .collect();
            store.put_records(&batch)?;
        }
        last = again.id;
        println!(
            "after repeat {round} (delete + rewrite {n}): {:.1} MB on disk",
            store.disk_bytes() as f64 / 1e6
        );
    }
    drop(store);
    let store = Store::open(&data)?;
    println!(
        "after repeats and reopen: {:.1} MB on disk",
        store.disk_bytes() as f64 / 1e6
    );
    Ok(())
}
