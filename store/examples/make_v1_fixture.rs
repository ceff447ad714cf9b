//! Writes the v1-schema fixture database used by `tests/migrate.rs`:
//! `cargo run -p soup-store --example make_v1_fixture -- store/tests/fixtures/v1`.
//! Run once and commit the result; the test copies it before opening (opening migrates).

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: make_v1_fixture DIR");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    if dir.join("db").exists() {
        eprintln!(
            "{} already holds a database; remove it first",
            dir.display()
        );
        std::process::exit(1);
    }
    if let Err(e) = soup_store::write_v1_fixture(&dir) {
        eprintln!("make_v1_fixture: {e}");
        std::process::exit(1);
    }
    println!("wrote a v1 database into {}", dir.display());
}
