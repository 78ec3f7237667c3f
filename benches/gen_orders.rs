//! Writes N realistic order rows (and a session-keys file for their users) for
//! the dry-run and live-run benchmarks:
//!
//!     cargo run --release --example gen_orders -- N orders.csv [session_keys.csv]
//!
//! Users place several orders each (one user per four rows); a few rows carry
//! a pay_item, a user_ip or a zone with a role.

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: gen_orders N orders.csv [session_keys.csv]");
        std::process::exit(2);
    }
    let n: u64 = args[1].parse().expect("N is a number");
    let mut out = BufWriter::new(std::fs::File::create(&args[2])?);
    writeln!(out, "bill_no,openid,zone_id,user_ip,pay_item,amount_fen,exported_at")?;
    let users = (n / 4).max(1);
    let mut rng = fastrand::Rng::with_seed(20261123);
    for i in 0..n {
        let user = rng.u64(0..users);
        let zone = if i % 3 == 0 { format!("{}_{}", 1 + i % 50, 100000 + user % 900000) } else { "1".into() };
        let ip =
            if i % 2 == 0 { format!("10.{}.{}.{}", i % 256, (i / 256) % 256, 1 + user % 250) } else { String::new() };
        let item = ["", "diamond_pack_60", "金币礼包", "month_card"][(i % 4) as usize];
        writeln!(
            out,
            "INC20261123{i:012}X{r:08x},oBENCH{user:022},{zone},{ip},{item},{amount},2026-11-23 03:{m:02}:{s:02}",
            r = rng.u32(..),
            amount = 100 * (1 + i % 30),
            m = i % 60,
            s = (i / 60) % 60
        )?;
    }
    out.flush()?;
    if let Some(keys) = args.get(3) {
        let mut out = BufWriter::new(std::fs::File::create(keys)?);
        writeln!(out, "openid,session_key")?;
        for user in 0..users {
            writeln!(out, "oBENCH{user:022},QkVOQ0gta2V5LXt{:08x}=", user as u32)?;
        }
        out.flush()?;
    }
    Ok(())
}
