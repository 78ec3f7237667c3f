#!/usr/bin/env bash
# Interleaved A/B of CPU time per request of a live run (user + system, the
# midas-cancel process only) against one simulator process on loopback.
#   bash benches/live_cpu_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]   (default 4)
# Each round runs both builds at --rate 1000 and 500 (5 s of rows each),
# 16 in flight. Build an older commit beside this one with
#   git worktree add /tmp/prev COMMIT && cargo build --release --manifest-path /tmp/prev/Cargo.toml
# Needs GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY [ROUNDS]" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2"); rounds=${3:-4}
dir=$(mktemp -d)
export MIDAS_APP_KEY=BENCHappKEY000000000000000000000 WECHAT_APP_SECRET=BENCHsecret0000000000000000000000
"$new" simulate --port 0 >"$dir/sim.log" 2>&1 &
sim=$!
trap 'kill $sim; rm -rf "$dir"' EXIT
for _ in $(seq 50); do grep -q listening "$dir/sim.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$dir/sim.log" | head -1)
for _ in $(seq "$rounds"); do
  for b in "$old" "$new"; do
    for rate in 1000 500; do
      n=$((rate * 5))
      { echo bill_no,openid,zone_id; seq "$n" | awk -v r=$RANDOM '{print "AB" r "N" $1 ",oUSER" $1 % 1000 ",1"}'; } >"$dir/in.csv"
      rm -f "$dir"/out.csv*
      /usr/bin/time -f "%U %S" "$b" run "$dir/in.csv" -o "$dir/out.csv" --appid wxbench --offer-id 1 \
        --base-url "$url" --quiet --rate "$rate" --concurrency 16 2>&1 >/dev/null | tail -1 |
        awk -v b="$b" -v r="$rate" -v n="$n" '{printf "%s rate=%s cpu/request=%.0f us\n", b, r, ($1 + $2) / n * 1e6}'
    done
  done
done | sort
