//! Baselines for benches/db.py, written directly with sqlx on a pooled connection; each prints
//! the elapsed milliseconds.
//!   cargo bench --bench db_baseline -- postgres://... 10000          N `select 1` round trips
//!   cargo bench --bench db_baseline -- postgres://... mixed          `select * from mixed`, every
//!                                                                     column cast to text and
//!                                                                     decoded as a String
use std::time::Instant;

use sqlx::Row;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let (Some(url), Some(what)) = (args.get(1), args.get(2)) else {
        // `cargo test --all-targets` runs bench targets with no arguments: nothing to measure.
        eprintln!("db_baseline: run by benches/db.py as `db_baseline URL N|mixed`; nothing to do without them");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(url).await.expect("connect");
        let _: i32 = sqlx::query_scalar("select 1").fetch_one(&pool).await.expect("warm up");
        if what == "mixed" {
            let sql = "select pid::text, xact_age::text, client_addr::text, info::text, ids::text, backend_start::text from mixed";
            let _ = sqlx::query(sql).fetch_all(&pool).await.expect("warm up");
            let started = Instant::now();
            let rows = sqlx::query(sql).fetch_all(&pool).await.expect("select");
            let mut chars = 0usize;
            for row in &rows {
                for i in 0..6 {
                    let v: String = row.try_get(i).expect("text");
                    chars += v.len();
                }
            }
            assert!(chars > 0);
            println!("{}", started.elapsed().as_secs_f64() * 1000.0);
            return;
        }
        let n: usize = what.parse().expect("N");
        let started = Instant::now();
        for _ in 0..n {
            let v: i32 = sqlx::query_scalar("select 1").fetch_one(&pool).await.expect("select 1");
            assert_eq!(v, 1);
        }
        println!("{}", started.elapsed().as_secs_f64() * 1000.0);
    });
}
