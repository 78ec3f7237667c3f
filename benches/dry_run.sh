#!/usr/bin/env bash
# Whole dry run on generated data: wall time and peak RSS.
#   bash benches/dry_run.sh [ROWS...]          (default: 100000 1000000 2000000)
#   API=v2 bash benches/dry_run.sh [ROWS...]   the same file through --api v2
#                                              (amount from the amount_fen column)
#   API=xpay | API=xpay-refund                 the same through the Mini Program APIs
#                                              (coin cancels: --user-ip for rows without one)
# Needs GNU time (/usr/bin/time, Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin midas-cancel --example gen_orders
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export MIDAS_APP_KEY=BENCHappKEY000000000000000000000 WECHAT_ACCESS_TOKEN=BENCH_TOKEN_0123456789
api_args=()
case "${API:-v1}" in
  v2) api_args=(--api v2 --column amount=amount_fen) ;;
  xpay) api_args=(--api xpay --column amount=amount_fen --user-ip 203.0.113.1) ;;
  xpay-refund) api_args=(--api xpay-refund --column amount=amount_fen) ;;
esac
for n in "${@:-100000 1000000 2000000}"; do
  for n1 in $n; do
    target/release/examples/gen_orders "$n1" "$dir/orders.csv" "$dir/keys.csv"
    rm -f "$dir/out.csv"
    /usr/bin/time -f "api=${API:-v1} rows=$n1 wall=%es user=%Us sys=%Ss maxrss=%MKiB" \
      target/release/midas-cancel run "$dir/orders.csv" -o "$dir/out.csv" --appid wxbench --offer-id 1 \
      --session-keys "$dir/keys.csv" --dry-run --ts 1700000000 "${api_args[@]}" 2>&1 >/dev/null | tail -1
  done
done
