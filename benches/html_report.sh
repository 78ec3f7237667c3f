#!/usr/bin/env bash
# report --html on a large run: its size and time. A dry run of ROWS generated
# orders stands for the results, and a synthetic attempt log of ROWS requests
# (over ROWS/RATE seconds, 3 % busy, 1 % frequency limit, a pace change a
# minute) for the run's log.
#   bash benches/html_report.sh [ROWS] [RATE]     (default 1000000 rows at 500/s)
# Needs GNU time (/usr/bin/time) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}; rate=${2:-500}
cargo build --release --quiet --bin midas-cancel --example gen_orders
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export MIDAS_APP_KEY=BENCHappKEY000000000000000000000
target/release/examples/gen_orders "$rows" "$dir/orders.csv" "$dir/keys.csv" >/dev/null
target/release/midas-cancel run "$dir/orders.csv" -o "$dir/results.csv" --appid wxbench --offer-id 1 \
  --dry-run --ts 1700000000 >/dev/null 2>&1 || true
python3 - "$rows" "$rate" "$dir/run.jsonl" <<'PY'
import json, random, sys
rows, rate, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
random.seed(1)
t0 = 1_800_000_000.0
with open(path, "w") as f:
    for i in range(rows):
        sent = t0 + i / rate
        r = random.random()
        cat, code = ("system_busy", -1) if r < 0.03 else ("rate_limited", 45009) if r < 0.04 else ("cancelled", 0)
        f.write(json.dumps({"event": "request", "sent": sent, "answered": sent + 0.02, "row": i + 1,
                            "bill_no": f"B{i}", "attempt": 1, "http_status": 200, "errcode": code,
                            "category": cat, "latency_ms": 15 + random.random() * 30, "pace": rate}) + "\n")
        if i % int(rate * 60) == 0:
            f.write(json.dumps({"event": "pace", "at": sent, "from": rate, "to": rate * 0.97,
                                "why": "probing upward"}) + "\n")
PY
/usr/bin/time -f "rows=$rows wall=%es maxrss=%MKiB" target/release/midas-cancel report "$dir/results.csv" \
  --html "$dir/report.html" --log "$dir/run.jsonl" 2>&1 | tail -1
echo "report.html: $(stat -c %s "$dir/report.html") bytes; log: $(stat -c %s "$dir/run.jsonl") bytes"
