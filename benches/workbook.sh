#!/usr/bin/env bash
# Reading a workbook against the same rows as CSV: wall time and peak RSS of
# `check` (read + validate) and of a whole dry run.
#   bash benches/workbook.sh [ROWS]   (default 100000)
# Needs GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin midas-cancel --example gen_orders
n=${1:-100000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
target/release/examples/gen_orders "$n" "$dir/orders.csv"
target/release/examples/gen_orders "$n" "$dir/orders.xlsx"
ls -l "$dir/orders.csv" "$dir/orders.xlsx" | awk '{print $9": "$5" bytes"}'
export MIDAS_APP_KEY=BENCHappKEY000000000000000000000
for round in 1 2 3; do
  for f in orders.csv orders.xlsx; do
    /usr/bin/time -f "check $f rows=$n wall=%es user=%Us maxrss=%MKiB" \
      target/release/midas-cancel check "$dir/$f" >/dev/null 2>"$dir/err" || true
    tail -1 "$dir/err"
    rm -f "$dir/out.csv"
    /usr/bin/time -f "dry-run $f rows=$n wall=%es user=%Us maxrss=%MKiB" \
      target/release/midas-cancel run "$dir/$f" -o "$dir/out.csv" --appid wxbench --offer-id 1 \
      --dry-run --ts 1700000000 2>&1 >/dev/null | tail -1
  done
done
