//! Baseline for benches/db.py: N `select 1` round trips written directly with sqlx, on one
//! pooled connection, the same query the Lua loop sends. Prints the elapsed milliseconds.
//!   cargo bench --bench db_baseline -- postgres://... 10000
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let (Some(url), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<usize>().ok())) else {
        // `cargo test --all-targets` runs bench targets with no arguments: nothing to measure.
        eprintln!("db_baseline: run by benches/db.py as `db_baseline URL N`; nothing to do without them");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(url).await.expect("connect");
        let _: i32 = sqlx::query_scalar("select 1").fetch_one(&pool).await.expect("warm up");
        let started = Instant::now();
        for _ in 0..n {
            let v: i32 = sqlx::query_scalar("select 1").fetch_one(&pool).await.expect("select 1");
            assert_eq!(v, 1);
        }
        println!("{}", started.elapsed().as_secs_f64() * 1000.0);
    });
}
