//! Durability under `kill -9`: a writer process acknowledges records and adapters on stdout
//! after each call returns; we kill it at random moments, reopen, and check that everything
//! acknowledged is there, intact, and counted once.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use soup_store::{RecordQuery, RunQuery, Store};
use support::crash_record::{crash_blob, crash_record};

/// xorshift: random enough kill times without a dependency.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("crash test seed {seed}");
    let mut acked_records = BTreeSet::new();
    let mut acked_adapters = BTreeSet::new();
    let mut acked_runs = BTreeSet::new();
    let started = Instant::now();
    let mut iterations = 0;
    while iterations < 25 && started.elapsed() < Duration::from_secs(20) {
        iterations += 1;
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-writer"))
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the crash writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            // Only whole lines are acknowledgements: a line cut by the kill is not.
            let mut lines = Vec::new();
            let mut reader = BufReader::new(stdout);
            let mut buf = String::new();
            while let Ok(n) = reader.read_line(&mut buf) {
                if n == 0 || !buf.ends_with('\n') {
                    break;
                }
                lines.push(buf.trim_end().to_string());
                buf.clear();
            }
            lines
        });
        let wait_ms = 10 + next_rand(&mut seed) % 250;
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("reap the writer");
        let lines = reader.join().expect("reader thread");
        for line in lines {
            let (what, n) = line.split_once(' ').expect("ack line has two words");
            match what {
                "record" => acked_records.insert(n.parse().expect("record index")),
                "adapter" => acked_adapters.insert(n.parse().expect("adapter number")),
                "finished" => acked_runs.insert(ulid::Ulid::from_string(n).expect("run id")),
                other => panic!("unexpected ack {other}"),
            };
        }
        assert!(
            !status.success(),
            "the writer exited on its own before the kill: it failed (see its stderr)"
        );
        check(&data, &acked_records, &acked_adapters, &acked_runs);
    }
    eprintln!(
        "{iterations} kills, {} records, {} adapters and {} finished runs acknowledged",
        acked_records.len(),
        acked_adapters.len(),
        acked_runs.len()
    );
    assert!(
        !acked_records.is_empty(),
        "the writer never acknowledged a record"
    );
}

/// Reopens the store and checks every acknowledged write, and that counts and index agree.
fn check(
    data: &std::path::Path,
    records: &BTreeSet<u64>,
    adapters: &BTreeSet<u64>,
    finished: &BTreeSet<ulid::Ulid>,
) {
    let store = Store::open(data).expect("reopen after kill");
    for &id in finished {
        let run = store
            .get_run(id)
            .expect("readable run")
            .expect("finished run kept");
        assert_eq!(
            run.status,
            soup_store::RunStatus::Done,
            "run {id} lost its final status"
        );
        assert!(run.finished.is_some());
    }
    let runs = store.list_runs(&RunQuery::default()).expect("list runs");
    assert!(runs.skipped.is_empty(), "corrupt runs: {:?}", runs.skipped);
    let done = store
        .list_runs(&RunQuery {
            status: Some(soup_store::RunStatus::Done),
            ..Default::default()
        })
        .expect("done runs");
    assert!(finished
        .iter()
        .all(|id| done.items.iter().any(|r| r.id == *id)));
    let Some(run) = runs.items.iter().find(|r| r.label == "crash") else {
        assert!(
            records.is_empty(),
            "records acknowledged but their run is gone"
        );
        return;
    };
    for &i in records {
        let got = store.get_record(run.id, i).expect("readable record");
        assert_eq!(
            got,
            Some(crash_record(run.id, i)),
            "record {i} lost or changed"
        );
    }
    for &n in adapters {
        let blob = store
            .adapter_blob(&format!("crash-{n}"))
            .expect("acknowledged adapter readable");
        assert_eq!(blob, crash_blob(n), "adapter {n} blob changed");
    }
    // No blob chunk outlives its adapter, whenever the kill came.
    let referenced: u64 = store
        .list_adapters()
        .expect("adapters")
        .items
        .iter()
        .filter_map(|a| a.blob.as_ref())
        .map(|b| (b.sha256.clone(), b.chunks))
        .collect::<std::collections::BTreeMap<_, _>>()
        .values()
        .map(|&c| u64::from(c))
        .sum();

    // Nothing counted twice: the full scan, the counters and the verdict index agree.
    let all = store
        .records_page(run.id, &RecordQuery::default())
        .expect("page all");
    assert!(all.skipped.is_empty(), "corrupt records: {:?}", all.skipped);
    let indices: BTreeSet<u64> = all.items.iter().map(|r| r.index).collect();
    assert_eq!(indices.len(), all.items.len(), "a record appears twice");
    let counts = store.verdict_counts(run.id).expect("counts");
    assert_eq!(counts.values().sum::<u64>(), all.items.len() as u64);
    for (verdict, n) in counts {
        let page = store
            .records_page(
                run.id,
                &RecordQuery {
                    verdict: Some(verdict.clone()),
                    ..Default::default()
                },
            )
            .expect("page by verdict");
        assert_eq!(
            page.items.len() as u64,
            n,
            "verdict {verdict} index vs counter"
        );
        assert!(page.items.iter().all(|r| r.verdict == verdict));
    }
    drop(store);
    // sled's flusher thread lets go of the file lock shortly after the last handle is dropped,
    // not at once: under load the raw open can see the lock for a moment.
    let mut tries = 0;
    let db = loop {
        match sled::open(data.join("db")) {
            Ok(db) => break db,
            Err(e) if tries < 100 && e.to_string().contains("could not acquire lock") => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("raw open: {e:?}"),
        }
    };
    let chunks = db.open_tree("blobs").expect("blobs").len() as u64;
    assert_eq!(
        chunks, referenced,
        "blob chunks left behind by a killed save"
    );
    assert!(db.open_tree("blob_pending").expect("pending").is_empty());
}

#[test]
fn a_second_process_gets_locked_with_the_holders_pid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-writer"))
        .arg(&data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the writer");
    // Wait until the writer has opened the store (its first acknowledgement).
    let mut first = String::new();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let _ = reader.read_line(&mut first);
    let result = Store::open(&data);
    child.kill().expect("kill the writer");
    let _ = child.wait();
    assert!(
        first.starts_with("record"),
        "writer did not start: {first:?}"
    );
    match result {
        Err(soup_store::StoreError::Locked { dir, pid }) => {
            assert_eq!(dir, data);
            assert_eq!(pid, Some(child.id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Once the holder is gone, the dir opens again.
    Store::open(&data).expect("open after the holder died");
}
