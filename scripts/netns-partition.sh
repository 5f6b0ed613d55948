#!/usr/bin/env bash
# Partitions across real network interfaces.
#
# Builds one Linux network namespace per host (rr-lb, rr-w1, rr-w2, rr-w3),
# each with one veth into a bridge in the root namespace (10.99.0.0/24; the
# root side is 10.99.0.254, where loadgen and the admin commands run).
# Under a steady write load (loadgen --verify: fresh ids, every STORED kept),
# it cuts worker 3 off the network (`ip link set ... down`) for CUT_FOR
# seconds, heals it, and reports:
#   - how long after the heal worker 3 is active again (caught up),
#   - loadgen's check: every acknowledged record on every active worker,
#   - `rrstore verify`: the stores identical.
# Exit 0 only if nothing acknowledged was lost and the stores converged.
#
# Needs root and `ip netns`; anywhere else it says so and exits 0 (skipped).
# Knobs (environment): DURATION (s, default 20), CUT_AT (5), CUT_FOR (5),
# RATE (req/s, 2000), ROUNDS (1: cuts repeated every CUT_AT + CUT_FOR s),
# MODE (`all`: worker 3 loses its link, so the LB and its peers lose it;
# `peers`: blackhole routes between worker 3 and the other workers only,
# so the LB still reaches everyone and only replication is cut).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CUT_AT=${CUT_AT:-5}
CUT_FOR=${CUT_FOR:-5}
RATE=${RATE:-2000}
ROUNDS=${ROUNDS:-1}
MODE=${MODE:-all}
NET=10.99.0
HOSTS=(lb w1 w2 w3)
declare -A ADDR=([lb]=$NET.1 [w1]=$NET.11 [w2]=$NET.12 [w3]=$NET.13)

skip() {
    echo "SKIPPED: network-namespace partition test: $*" >&2
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root"
command -v ip >/dev/null || skip "no ip(8)"
ip netns add rr-probe 2>/dev/null || skip "ip netns does not work here"
ip netns del rr-probe

cargo build --release --workspace --quiet
BIN=$PWD/target/release/rrstore
LOADGEN=$PWD/target/release/loadgen
# Every process here (and `members`, loadgen --verify) takes the cluster
# secret from the environment; `ip netns exec` passes it on.
RRSTORE_SECRET=$("$BIN" keygen)
export RRSTORE_SECRET
RUN=$(mktemp -d /tmp/rrstore-netns.XXXXXX)
PIDS=()

# Deletes the veths explicitly: a deleted namespace takes its end of a
# veth pair down lazily, and a run right after would find the name taken.
remove_network() {
    for h in "${HOSTS[@]}"; do
        ip link del "rr-$h-h" 2>/dev/null || true
        ip netns del "rr-$h" 2>/dev/null || true
    done
    ip link del rr-br0 2>/dev/null || true
}

cleanup() {
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    remove_network
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

ms() { date +%s%3N; }

# Polls a command until it succeeds or `secs` pass; never a fixed sleep.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$(($(ms) + secs * 1000))
    until "$@" >/dev/null 2>&1; do
        if [ "$(ms)" -gt "$deadline" ]; then
            echo "timed out after ${secs}s waiting for $what" >&2
            return 1
        fi
        sleep 0.05
    done
}

# --- the network -----------------------------------------------------------
remove_network # leftovers of an interrupted run
ip link add rr-br0 type bridge
ip addr add $NET.254/24 dev rr-br0
ip link set rr-br0 up
for h in "${HOSTS[@]}"; do
    ip netns add "rr-$h"
    ip link add "rr-$h-h" type veth peer name eth0 netns "rr-$h"
    ip link set "rr-$h-h" master rr-br0 up
    ip -n "rr-$h" addr add "${ADDR[$h]}/24" dev eth0
    ip -n "rr-$h" link set eth0 up
    ip -n "rr-$h" link set lo up
done

# --- the cluster -------------------------------------------------------------
CONTROL=${ADDR[lb]}:5060
ip netns exec rr-lb "$BIN" lb --listen "${ADDR[lb]}:5059" --control "$CONTROL" \
    --processed-log "$RUN/processed.log" >"$RUN/lb.out" 2>"$RUN/lb.log" &
PIDS+=($!)
# The LB in its namespace, reached over the bridge from the root namespace:
# if that fails, this machine's network does not forward between namespaces.
wait_for 10 "the LB across the bridge" "$BIN" members --control "$CONTROL" ||
    skip "namespaces were built, but no traffic crosses the bridge here"
for w in w1 w2 w3; do
    ip netns exec "rr-$w" "$BIN" worker --lb "$CONTROL" --listen "${ADDR[$w]}:7000" \
        --data-dir "$RUN/$w" >"$RUN/$w.out" 2>"$RUN/$w.log" &
    PIDS+=($!)
done
active_count() { "$BIN" members --control "$CONTROL" | grep -c " active"; }
three_active() { [ "$(active_count)" = 3 ]; }
wait_for 30 "three active workers" three_active
W3_ID=$("$BIN" members --control "$CONTROL" | awk -v a="${ADDR[w3]}:7000" '$0 ~ a {print $1}')
others_records() {
    "$BIN" members --control "$CONTROL" |
        awk -v a="${ADDR[w3]}:7000" '$2 != a && $3 == "active" {print $4}' | sort -n | tail -1
}
w3_caught_up() {
    local n
    n=$("$BIN" members --control "$CONTROL" | awk -v a="${ADDR[w3]}:7000" '$2 == a {print $4}')
    [ "${n:-0}" -ge "$TARGET" ]
}
w3_active() { "$BIN" members --control "$CONTROL" | grep "${ADDR[w3]}:7000" | grep -q " active"; }
echo "cluster up: LB ${ADDR[lb]}, workers ${ADDR[w1]} ${ADDR[w2]} ${ADDR[w3]} (worker 3 has ID $W3_ID)"

# --- load and partitions -----------------------------------------------------
# `peers`: blackhole routes both ways between worker 3 and the others.
blackholes() {
    for w in w1 w2; do
        ip -n rr-w3 route "$1" blackhole "${ADDR[$w]}/32"
        ip -n "rr-$w" route "$1" blackhole "${ADDR[w3]}/32"
    done
}
cut() { if [ "$MODE" = peers ]; then blackholes add; else ip link set rr-w3-h down; fi; }
heal() { if [ "$MODE" = peers ]; then blackholes del; else ip link set rr-w3-h up; fi; }

"$LOADGEN" --target "rrstore://${ADDR[lb]}:5059" --connections 8 --pipeline 4 \
    --rate "$RATE" --duration "$DURATION" --warmup 0 --verify --control "$CONTROL" \
    --verify-wait 20 --quiet --json "$RUN/load.json" >"$RUN/load.out" 2>&1 &
LOAD=$!
PIDS+=($LOAD)
HEAL_TIMES=()
for round in $(seq 1 "$ROUNDS"); do
    sleep "$CUT_AT" # the schedule of the fault, not a wait for a condition
    cut
    echo "round $round: worker 3 cut off ($MODE)"
    sleep "$CUT_FOR"
    heal
    healed=$(ms)
    # Worker 3 must hold at least what the others held at the heal (`peers`:
    # it stayed active, but its replication was cut).
    TARGET=$(others_records)
    wait_for 30 "worker 3 to be active again" w3_active
    wait_for 30 "worker 3 to catch up $TARGET records" w3_caught_up
    back=$(($(ms) - healed))
    HEAL_TIMES+=("$back")
    echo "round $round: healed; worker 3 active and holding the $TARGET records the others had at the heal after ${back} ms"
done

status=0
wait "$LOAD" || status=$?
cat "$RUN/load.out"
verify_out=$("$BIN" verify --control "$CONTROL" --wait 20) || status=1
echo "$verify_out"
echo "netns partition ($MODE): rounds=$ROUNDS cut_for=${CUT_FOR}s rate=$RATE/s; worker 3 active again after heal: ${HEAL_TIMES[*]} ms; loadgen+verify exit $status"
exit "$status"
