#!/usr/bin/env bash
# make demo: a worker, simulated shoppers and personas, tags appearing live.
# Windows are shortened 100x (15 minutes -> 9 s) so results show in about a minute.
# Ctrl-C stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
st=.venv/bin/streamtags
run_id=$(date +%s)
demo=.demo/$run_id
mkdir -p "$demo"

export STREAMTAGS_APP_ID="streamtags-demo-$run_id"
export STREAMTAGS_TIME_SCALE=0.01
export STREAMTAGS_LATENESS_MS=1000
export STREAMTAGS_TICK_INTERVAL_S=0.25
export STREAMTAGS_PARTITIONS=4
export STREAMTAGS_STORE=rocksdb://
export STREAMTAGS_DATA_DIR="$demo/data"
export STREAMTAGS_WEB_PORT=${STREAMTAGS_WEB_PORT:-6066}
export STREAMTAGS_REDIS_KEY_PREFIX="demo$run_id:user:"
export STREAMTAGS_REDIS_TRIGGER_PREFIX="demo$run_id:trigger:"
for t in orders browse logins accounts tags risk_tags coupon_triggers dead_letter; do
  export "STREAMTAGS_TOPIC_${t^^}=demo-$run_id.${t//_/-}"
done

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "demo: stopping worker and viewers"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  stack/stack.sh down
}
trap cleanup INT TERM EXIT

if (exec 3<>"/dev/tcp/127.0.0.1/$STREAMTAGS_WEB_PORT") 2>/dev/null; then
  echo "demo: port $STREAMTAGS_WEB_PORT is busy; set STREAMTAGS_WEB_PORT to a free port"; exit 1
fi

echo "demo: starting a worker (log: $demo/worker.log)"
$st worker >"$demo/worker.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$STREAMTAGS_WEB_PORT/health" >/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { tail -20 "$demo/worker.log"; exit 1; }
  sleep 0.5
done
echo "demo: worker up; live view of tag changes and coupon triggers:"
echo "------------------------------------------------------------------------"
$st watch --coupons --from-beginning &
pids+=($!)

echo "demo: simulating 200 shopper events/s for 40 s plus 2 users per persona"
$st simulate --rate 200 --users 2000 --duration 40 --personas 2 --truth "$demo/truth.jsonl"
echo "demo: traffic done; waiting 15 s for the last deadlines (carts abandoned 9 s ago)"
sleep 15
kill "${pids[1]}" 2>/dev/null || true
echo "------------------------------------------------------------------------"
echo "demo: what the checkout service sees (lookup API, one Redis round trip each):"
for user in abandoner-0 ip_hopper-0 frustrated-0 whale-0 shopper-1; do
  $st tags "$user"
done
echo "demo: same over HTTP: curl http://127.0.0.1:$STREAMTAGS_WEB_PORT/v1/users/ip_hopper-0/tags"
curl -s "http://127.0.0.1:$STREAMTAGS_WEB_PORT/v1/users/ip_hopper-0/tags" | head -c 400; echo
echo "demo: personas vs ground truth:"
$st score --truth "$demo/truth.jsonl" || true
echo "demo: metrics sample:"
curl -s "http://127.0.0.1:$STREAMTAGS_WEB_PORT/metrics" | grep -E "^streamtags_(events_consumed_total|coupon_triggers_total|deadline_fire_delay_seconds_(sum|count))" | head -8
