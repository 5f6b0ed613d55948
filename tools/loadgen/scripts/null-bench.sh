#!/usr/bin/env bash
# How many requests/s loadgen drives on one core against its own null
# server on another: 50 connections, pipeline 1 and 16, 5 s each (plus 1 s
# warmup), for both protocols. Prints the achieved rate, loadgen's CPU time
# (user + sys) and requests sent per loadgen CPU-second (its ceiling when
# it, not the server, is the bottleneck).
# Usage, from the repository root: tools/loadgen/scripts/null-bench.sh [DURATION_S]
set -euo pipefail
duration=${1:-5}
cargo build --release -p loadgen 2>/dev/null
bin=target/release/loadgen
pin_gen=() pin_srv=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    pin_gen=(taskset -c 0) pin_srv=(taskset -c 1)
fi
tmp=$(mktemp -d)
for proto in rrstore redis; do
    "${pin_srv[@]}" "$bin" null-server --listen 127.0.0.1:0 --protocol "$proto" >"$tmp/server" &
    server=$!
    for _ in $(seq 100); do grep -q listening "$tmp/server" && break; sleep 0.05; done
    addr=$(awk '/listening/ {print $3}' "$tmp/server")
    for p in 1 16; do
        TIMEFORMAT="%U %S"
        cpu=$( { time "${pin_gen[@]}" "$bin" --target "$proto://$addr" --connections 50 \
            --pipeline "$p" --duration "$duration" --warmup 1 --quiet \
            --json "$tmp/run.json" >/dev/null; } 2>&1 )
        rate=$(sed -n 's/^ *"throughput": \([0-9.]*\).*/\1/p' "$tmp/run.json")
        sent=$(sed -n 's/^ *"sent": \([0-9]*\).*/\1/p' "$tmp/run.json")
        awk -v proto="$proto" -v p="$p" -v rate="$rate" -v sent="$sent" -v cpu="$cpu" \
            -v wall="$((duration + 1))" 'BEGIN {
                split(cpu, t, " "); c = t[1] + t[2];
                printf "%-8s pipeline %-3s %10.0f req/s   loadgen CPU %.2f s of %d s   %9.0f req per CPU-second\n",
                    proto, p, rate, c, wall, sent / c }'
    done
    kill "$server"
    wait "$server" 2>/dev/null || true
done
rm -rf "$tmp"
