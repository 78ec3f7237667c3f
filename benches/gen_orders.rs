//! Writes N realistic order rows (and a session-keys file for their users) for
//! the dry-run and live-run benchmarks:
//!
//!     cargo run --release --example gen_orders -- N orders.csv [session_keys.csv]
//!
//! Users place several orders each (one user per four rows); a few rows carry
//! a pay_item, a user_ip or a zone with a role. A name ending in `.xlsx`
//! gets the same rows as a workbook (text cells, amount_fen as numbers, as
//! an export has them).

use std::io::{BufWriter, Write};

const HEADER: [&str; 7] = ["bill_no", "openid", "zone_id", "user_ip", "pay_item", "amount_fen", "exported_at"];

/// The rows, the same for every sink: `HEADER`'s cells, amount_fen a number.
fn rows(n: u64, users: u64) -> impl Iterator<Item = ([String; 5], u64, String)> {
    let mut rng = fastrand::Rng::with_seed(20261123);
    (0..n).map(move |i| {
        let user = rng.u64(0..users);
        let zone = if i % 3 == 0 { format!("{}_{}", 1 + i % 50, 100000 + user % 900000) } else { "1".into() };
        let ip =
            if i % 2 == 0 { format!("10.{}.{}.{}", i % 256, (i / 256) % 256, 1 + user % 250) } else { String::new() };
        let item = ["", "diamond_pack_60", "金币礼包", "month_card"][(i % 4) as usize];
        let bill_no = format!("INC20261123{i:012}X{r:08x}", r = rng.u32(..));
        let exported = format!("2026-11-23 03:{m:02}:{s:02}", m = i % 60, s = (i / 60) % 60);
        ([bill_no, format!("oBENCH{user:022}"), zone, ip, item.to_string()], 100 * (1 + i % 30), exported)
    })
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: gen_orders N orders.csv|orders.xlsx [session_keys.csv]");
        std::process::exit(2);
    }
    let n: u64 = args[1].parse().expect("N is a number");
    let users = (n / 4).max(1);
    if args[2].ends_with(".xlsx") {
        workbook(n, users, &args[2])?;
    } else {
        let mut out = BufWriter::new(std::fs::File::create(&args[2])?);
        writeln!(out, "{}", HEADER.join(","))?;
        for (cells, amount, exported) in rows(n, users) {
            writeln!(out, "{},{amount},{exported}", cells.join(","))?;
        }
        out.flush()?;
    }
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

fn workbook(n: u64, users: u64, path: &str) -> std::io::Result<()> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    let fail = std::io::Error::other;
    for (c, h) in HEADER.iter().enumerate() {
        sheet.write_string(0, c as u16, *h).map_err(fail)?;
    }
    for (r, (cells, amount, exported)) in rows(n, users).enumerate() {
        let r = r as u32 + 1;
        for (c, cell) in cells.iter().enumerate() {
            if !cell.is_empty() {
                sheet.write_string(r, c as u16, cell).map_err(fail)?;
            }
        }
        sheet.write_number(r, 5, amount as f64).map_err(fail)?;
        sheet.write_string(r, 6, exported).map_err(fail)?;
    }
    book.save(path).map_err(fail)
}
