#!/usr/bin/env bash
# A/B: loadgen throughput with and without scraping every /metrics once a second.
# Usage: cargo build --release --workspace && bash benches/scrape.sh
# Alternates plain and scraped rounds (3 each) on one cluster, so both see the
# same machine state; prints loadgen throughput per round.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/rrstore; LG=$ROOT/target/release/loadgen
D=$(mktemp -d /tmp/scrape.XXXX)
$BIN lb --insecure --listen 127.0.0.1:0 --control 127.0.0.1:0 --processed-log $D/p.log --metrics 127.0.0.1:0 > $D/lb.out 2> $D/lb.log &
PIDS=($!)
for i in $(seq 50); do grep -q listening $D/lb.out && break; sleep 0.1; done
CL=$(sed -n 's/.*clients=\([^ ]*\).*/\1/p' $D/lb.out); CT=$(sed -n 's/.*control=\([^ ]*\).*/\1/p' $D/lb.out)
for w in 1 2 3; do $BIN worker --insecure --lb $CT --data-dir $D/w$w --metrics 127.0.0.1:0 > /dev/null 2> $D/w$w.log & PIDS+=($!); sleep 0.5; done
for i in $(seq 100); do [ "$($BIN members --insecure --control $CT | grep -c active)" = 3 ] && break; sleep 0.1; done
URLS=$(grep -ho "http://[^ ]*/metrics" $D/*.log)
echo "endpoints: $(echo $URLS | wc -w)"
run() { $LG --target rrstore://$CL --connections 50 --pipeline 1 --duration 8 --warmup 1 --quiet --json $D/$1.json > /dev/null 2>&1; python3 -c "import json;d=json.load(open('$D/$1.json'));print(d.get('throughput') or d.get('achieved_rps') or d)" ; }
for r in 1 2 3; do
  a=$(run plain$r)
  ( for s in $(seq 12); do for u in $URLS; do curl -s $u > /dev/null; done; sleep 1; done ) & SC=$!
  b=$(run scraped$r)
  kill $SC 2>/dev/null; wait $SC 2>/dev/null
  echo "round $r: plain $a | scraped $b"
done
kill ${PIDS[@]}; wait 2>/dev/null; rm -rf $D
