#!/usr/bin/env bash
# Interleaved A/B of the whole dry run on 1M generated rows: two builds run
# turn about, so both see the same machine. On a shared VM this is the only
# fair comparison; a figure from another minute is not.
#   bash benches/dry_run_ab.sh OLD_BINARY NEW_BINARY [RUNS]   (default 8)
# e.g. build the previous commit with
#   git worktree add /tmp/prev HEAD~1 && cargo build --release --manifest-path /tmp/prev/Cargo.toml
# and compare /tmp/prev/target/release/midas-cancel with target/release/midas-cancel.
# Needs GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [RUNS]" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2"); runs=${3:-8}
cargo build --release --quiet --example gen_orders
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
target/release/examples/gen_orders 1000000 "$dir/orders.csv" "$dir/keys.csv"
export MIDAS_APP_KEY=BENCHappKEY000000000000000000000 WECHAT_ACCESS_TOKEN=BENCH_TOKEN_0123456789
for _ in $(seq "$runs"); do
  for b in "$old" "$new"; do
    rm -f "$dir/out.csv"
    /usr/bin/time -f "$b %e %U %S" "$b" run "$dir/orders.csv" -o "$dir/out.csv" --appid wxbench --offer-id 1 \
      --session-keys "$dir/keys.csv" --dry-run --ts 1700000000 2>&1 >/dev/null | tail -1
  done
done > "$dir/times"
for b in "$old" "$new"; do
  echo "$b"
  grep -F "$b " "$dir/times" | awk '{print $2}' | sort -n | awk '{w[NR]=$1} END {printf "  wall: "; for (i=1;i<=NR;i++) printf "%s ", w[i]; printf "(median %s)\n", (NR%2 ? w[(NR+1)/2] : (w[NR/2]+w[NR/2+1])/2)}'
  grep -F "$b " "$dir/times" | awk '{print $3+$4}' | sort -n | awk '{c[NR]=$1} END {printf "  cpu:  median %.2f s\n", (NR%2 ? c[(NR+1)/2] : (c[NR/2]+c[NR/2+1])/2)}'
done
