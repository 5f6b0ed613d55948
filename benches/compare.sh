#!/usr/bin/env bash
# rrstore vs Redis, side by side, with one load generator (tools/loadgen).
#
#   rrstore: `rrstore lb` on 127.0.0.1:17059 (control :17060) + 3 workers,
#            fresh data dirs under a mktemp -d, a fresh cluster secret
#            (`rrstore keygen`, --secret-file);
#   Redis 7: a primary on 127.0.0.1:6390 and 2 replicas (6391, 6392,
#            --replicaof 127.0.0.1 6390).
#
# Workloads (PUT/SET of 64 B values, keys uniform over 100,000, 50 connections,
# one loadgen thread), each run ROUNDS times, alternating rrstore, Redis,
# rrstore, Redis ... so that noise on the (shared) machine hits both:
#   w1  closed loop, pipeline 1, as fast as it goes
#   w2  closed loop, pipeline 16
#   w3  open loop, pipeline 1, at 50% of Redis's best w1 throughput
#   w4  w1 with 1 KiB values (shorter runs: SHORT_DUR)
#   reads  w1 with 90 % GETs, no target (SHORT_DUR runs, before w4, so that
#       the GETs find 64 B values; loadgen sends them to port 5059 and to
#       the Redis primary)
#   fs  w1 with matched persistence: rrstore --fsync interval vs Redis
#       --appendonly yes --appendfsync everysec, then rrstore --fsync never
#       vs Redis --appendonly no
#   w5  w1 acknowledged by every replica: rrstore `lb --ack all` vs Redis
#       SET + `WAIT 2 0` per write (loadgen --redis-wait 2), SHORT_DUR runs
# (w1-w5 use each system's benchmark defaults: rrstore --fsync interval,
# Redis --save '' --appendonly no.) Then rrstore alone:
#   scale  w1 (SCALE_DUR runs, one round) with 1, 2, 3, 5 and 8 workers
#   catch-up  FILL_KEYS records of 64 B loaded into 3 workers (loadgen
#       --fill, pipeline 64); a 4th worker joins: time from its start, and
#       from its registration to the end of its catch-up stream, to active
#       at the LB (from the worker's and the LB's log timestamps); every
#       worker's VmRSS before the load, after it, and the joiner's after.
#
# Every run writes loadgen's --json, plus a .meta.json with the CPU each
# process (and thread) used during the measured window (from /proc/PID/stat),
# the VM's busy/other/steal (/proc/stat) and, for rrstore, the LB's syscall
# counters (`rrstore stats`) over the run. Before each run it waits, bounded,
# for the VM to be idle (other people's jobs share the 2 vCPUs). After w3, if
# perf is there, short "census" runs count every server process's syscalls,
# CPU and context switches per request (perf stat; kept out of the main
# tables since counting slows syscalls). At the
# end docs/bench/latency.svg is drawn (`loadgen plot`) and the section
# between <!-- compare:begin --> and <!-- compare:end --> in
# docs/BENCHMARKS.md is rewritten from the JSON by benches/compare_report.py
# (which also holds the small helpers this script calls through `py`).
#
# Usage, from anywhere (it cd's to the repository root):
#   bash benches/compare.sh              # the full run, < 10 minutes
#   QUICK=1 bash benches/compare.sh      # ~1 s runs, a smoke test; writes
#                                        # into a temp dir, docs untouched
# Environment: QUICK=1; ROUNDS (2); BUDGET seconds (600); FILL_KEYS
# (1,000,000; QUICK 100,000); SCALE_WORKERS ("1 2 3 5 8"); PHASES (all:
# "defaults persistence ack_all scaling catchup"); QUIET_MAX (30 %),
# QUIET_WAIT (20 s), QUIET_TOTAL (120 s) for the idle gate; OUT (docs/bench,
# QUICK: a temp dir); DOC (docs/BENCHMARKS.md, QUICK: none, i.e. the section
# is only printed); RR_PORT/RR_CONTROL_PORT (17059/17060); REDIS_PORT (6390,
# replicas on the next two ports).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
ROUNDS=${ROUNDS:-2}
BUDGET=${BUDGET:-600}
# measured / warmup seconds: w1-w3 and fs; w4 and w5; each scaling step
if [[ $QUICK == 1 ]]; then
    DUR=1 WARM=0.5 SHORT_DUR=1 SHORT_WARM=0.5 SCALE_DUR=1 SCALE_WARM=0.5
    FILL_KEYS=${FILL_KEYS:-100000}
else
    DUR=10 WARM=2 SHORT_DUR=6 SHORT_WARM=2 SCALE_DUR=5 SCALE_WARM=1
    FILL_KEYS=${FILL_KEYS:-1000000}
fi
SCALE_WORKERS=${SCALE_WORKERS:-1 2 3 5 8}
# in this order; persistence and ack_all reuse the Redis of the phase before
# (started if missing), the rest run rrstore alone
PHASES=${PHASES:-defaults persistence ack_all scaling catchup}
RR_PORT=${RR_PORT:-17059}
RR_CONTROL_PORT=${RR_CONTROL_PORT:-17060}
REDIS_PORT=${REDIS_PORT:-6390}
REDIS_PORTS=("$REDIS_PORT" "$((REDIS_PORT + 1))" "$((REDIS_PORT + 2))")
RR_CONTROL=127.0.0.1:$RR_CONTROL_PORT
CONNS=50 VALUE=64 KEYS=100000
HZ=$(getconf CLK_TCK)
# Before each run, wait (up to QUIET_WAIT s, QUIET_TOTAL s over the whole
# script) while the VM is more than QUIET_MAX % of one core busy with
# servers idle, i.e. while someone else's job is using it.
QUIET_MAX=${QUIET_MAX:-30}
QUIET_WAIT=${QUIET_WAIT:-20}
QUIET_TOTAL=${QUIET_TOTAL:-120}
# Syscall census (perf stat on every server process) in separate short runs
if [[ $QUICK == 1 ]]; then CENSUS_DUR=1; else CENSUS_DUR=5; fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rrstore-compare.XXXXXX")
if [[ $QUICK == 1 ]]; then
    OUT=${OUT:-$tmp/bench}
    DOC=${DOC:-}
else
    OUT=${OUT:-docs/bench}
    DOC=${DOC-docs/BENCHMARKS.md}
fi
mkdir -p "$OUT" "$tmp/logs"

# ---------------------------------------------------------------- processes
# Every process this script starts is a direct child, recorded in PIDS with
# its start time (field 22 of /proc/PID/stat) in STARTED, and under a role
# name in ROLE_PID for CPU sampling. bash reaps an exited child on its own,
# so a PID could be reused: a process is only signalled while its start
# time still matches.
PIDS=()
declare -A STARTED=() ROLE_PID=()

log() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }
die() {
    printf 'compare.sh: %s\n' "$*" >&2
    exit 2
}

stat_of() { # PID: the fields of /proc/PID/stat after "(comm) " (no fork)
    local st
    { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
    [[ -n $st ]] && echo "${st##*) }"
}

track() { # PID: remember it and its start time
    local f
    read -ra f <<<"$(stat_of "$1")"
    PIDS+=("$1")
    STARTED[$1]=${f[19]:-?}
}

alive() { # PID: still our process, running (not gone, not a zombie)
    local f
    read -ra f <<<"$(stat_of "$1")"
    ((${#f[@]} > 19)) && [[ ${f[0]} != Z && ${f[19]} == "${STARTED[$1]:-}" ]]
}

forget_pid() {
    local keep=() p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=(${keep[@]+"${keep[@]}"})
    unset "STARTED[$1]"
}

stop_pids() { # PID...: TERM, a second TERM (rrstore exits at once), KILL; reap
    (($# == 0)) && return 0
    local p t sig
    for sig in TERM TERM KILL; do
        for p in "$@"; do alive "$p" && kill -"$sig" "$p" 2>/dev/null; done
        for ((t = 0; t < 50; t++)); do
            local any=0
            for p in "$@"; do alive "$p" && any=1; done
            ((any)) || break
            sleep 0.1
        done
    done
    for p in "$@"; do
        wait "$p" 2>/dev/null || true
        forget_pid "$p"
    done
}

stop_roles() { # PREFIX: stop every role whose name starts with it
    local r pids=() t0=$SECONDS
    for r in "${!ROLE_PID[@]}"; do [[ $r == "$1"* ]] && pids+=("${ROLE_PID[$r]}"); done
    stop_pids ${pids[@]+"${pids[@]}"}
    for r in "${!ROLE_PID[@]}"; do [[ $r == "$1"* ]] && unset "ROLE_PID[$r]"; done
    ((${#pids[@]} == 0)) || log "stopped $1* (${#pids[@]} processes) in $((SECONDS - t0))s"
}

start_bg() { # ROLE CMD...: start CMD in the background, output to logs/ROLE.log
    local role=$1
    shift
    "$@" >"$tmp/logs/$role.log" 2>&1 &
    track "$!"
    ROLE_PID[$role]=$!
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # workers before their LB: a worker told to leave while its LB is gone
    # waits for the LB's DEREGISTER_OK until --leave-timeout-secs
    stop_roles rr-w
    stop_pids ${PIDS[@]+"${PIDS[@]}"}
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_until() { # DEADLINE_S WHAT CMD...: poll CMD every 0.1 s until it succeeds, else die
    poll_until "$@" || die "timed out after $1 s waiting for $2"
}

poll_until() { # DEADLINE_S WHAT CMD...: poll CMD every 0.1 s; 1 if DEADLINE_S passed
    local deadline=$((SECONDS + $1)) what=$2 r
    shift 2
    until "$@"; do
        for r in "${!ROLE_PID[@]}"; do
            alive "${ROLE_PID[$r]}" || {
                tail -n 20 "$tmp/logs/$r.log" >&2
                die "$r (pid ${ROLE_PID[$r]}) exited while waiting for $what"
            }
        done
        ((SECONDS < deadline)) || {
            tail -n 5 "$tmp"/logs/*.log >&2
            log "timed out waiting for $what"
            return 1
        }
        sleep 0.1
    done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- helpers in Python
REPORT_PY=$PWD/benches/compare_report.py
py() { HZ=$HZ RR=$RR LG=$LG DUR=$DUR WARM=$WARM SHORT_DUR=$SHORT_DUR SHORT_WARM=$SHORT_WARM \
    SCALE_DUR=$SCALE_DUR SCALE_WARM=$SCALE_WARM FILL_KEYS=$FILL_KEYS ROUNDS=$ROUNDS \
    QUICK=$QUICK CONNS=$CONNS VALUE=$VALUE KEYS=$KEYS python3 "$REPORT_PY" "$@"; }

# ---------------------------------------------------------------- build, install, versions
log "building release binaries"
cargo build --release --workspace
# where cargo put them (CARGO_TARGET_DIR, if set, else ./target)
TARGET_DIR=$(realpath "${CARGO_TARGET_DIR:-target}")
RR=$TARGET_DIR/release/rrstore
LG=$TARGET_DIR/release/loadgen
# the cluster secret every rrstore node and admin command is given
SECRET=$tmp/secret
(umask 077 && "$RR" keygen >"$SECRET")

if ! command -v redis-server >/dev/null; then
    log "installing redis-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y redis-server || { apt-get update && apt-get install -y redis-server; }
fi
command -v redis-cli >/dev/null || die "redis-cli is missing (package redis-tools)"
redis-server --version | grep -q 'v=7\.' || log "warning: this is not Redis 7: $(redis-server --version)"

echo "== versions and machine"
"$RR" --version
"$LG" --version
redis-server --version
rustc --version
uname -a
echo "nproc: $(nproc)"
echo "cpu: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "loadavg: $(cat /proc/loadavg)"
echo "settings: QUICK=$QUICK ROUNDS=$ROUNDS duration ${DUR}s warmup ${WARM}s (w4/w5 ${SHORT_DUR}/${SHORT_WARM}s, scaling ${SCALE_DUR}/${SCALE_WARM}s), fill $FILL_KEYS, budget ${BUDGET}s, results in $OUT"

for p in "$RR_PORT" "$RR_CONTROL_PORT" "${REDIS_PORTS[@]}"; do
    port_free "$p" || die "127.0.0.1:$p is already in use"
done
# stale results of an earlier run would be mixed into the tables
rm -f "$OUT"/w[12345]-*.json "$OUT"/fs[in]-*.json "$OUT"/census-*.json "$OUT"/env.json "$OUT"/latency.svg \
    "$OUT"/scale*-*.json "$OUT"/fill-*.json "$OUT"/catchup.json
py env "$OUT"

# ---------------------------------------------------------------- rrstore and Redis
rr_admin() { # COMMAND [ARG...]: an rrstore admin command against our LB
    "$RR" "$1" --control "$RR_CONTROL" --secret-file "$SECRET" "${@:2}"
}

rr_ready() { # N: exactly N workers, every one active
    local members
    members=$(rr_admin members 2>/dev/null) || return 1
    (($(awk 'NR > 1' <<<"$members" | wc -l) == $1)) &&
        (($(awk 'NR > 1 && $3 == "active"' <<<"$members" | wc -l) == $1))
}

rr_all_hold() { # RECORDS N: N active workers, each holding RECORDS records
    local members
    members=$(rr_admin members 2>/dev/null) || return 1
    (($(awk -v r="$1" 'NR > 1 && $3 == "active" && $4 == r' <<<"$members" | wc -l) == $2))
}

RR_DIR="" RR_FSYNC=""
start_rr_worker() { # I: worker I of the running cluster, data dir RR_DIR/wI
    start_bg "rr-w$1" "$RR" worker --lb "$RR_CONTROL" --listen 127.0.0.1:0 \
        --data-dir "$RR_DIR/w$1" --fsync "$RR_FSYNC" --secret-file "$SECRET"
}

start_rrstore() { # FSYNC WORKERS [LB-ARG...]
    local fsync=$1 n=$2 i
    shift 2
    RR_DIR=$(mktemp -d "$tmp/rrstore-$fsync.XXXX") RR_FSYNC=$fsync
    log "starting rrstore: LB 127.0.0.1:$RR_PORT (control $RR_CONTROL)${*:+ $*} + $n workers, --fsync $fsync"
    start_bg rr-lb "$RR" lb --listen "127.0.0.1:$RR_PORT" --control "$RR_CONTROL" \
        --processed-log "$RR_DIR/processed.log" --secret-file "$SECRET" "$@"
    for ((i = 1; i <= n; i++)); do start_rr_worker "$i"; done
    wait_until 60 "$n active rrstore workers" rr_ready "$n"
    rr_admin members
}

stop_rrstore() {
    # workers before their LB: a worker told to leave while its LB is gone
    # waits for the LB's DEREGISTER_OK until --leave-timeout-secs
    stop_roles rr-w
    stop_roles rr-lb
}

redis_ping() { redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; }

redis_ready() { # AOF(yes|no)
    local info port
    info=$(redis-cli -p "${REDIS_PORTS[0]}" info replication 2>/dev/null | tr -d '\r') || return 1
    grep -q '^connected_slaves:2$' <<<"$info" || return 1
    (($(grep -c 'state=online' <<<"$info") == 2)) || return 1
    for port in "${REDIS_PORTS[@]}"; do
        info=$(redis-cli -p "$port" info persistence 2>/dev/null | tr -d '\r') || return 1
        grep -q '^loading:0$' <<<"$info" || return 1
        grep -q "^aof_enabled:$([[ $1 == yes ]] && echo 1 || echo 0)\$" <<<"$info" || return 1
        grep -q '^aof_rewrite_in_progress:0$' <<<"$info" || return 1
        grep -q '^aof_rewrite_scheduled:0$' <<<"$info" || return 1
        grep -q '^rdb_bgsave_in_progress:0$' <<<"$info" || return 1
    done
}

start_redis() { # AOF(yes|no)
    # (no 5 s wait before the replicas' first, diskless, full sync)
    local dir args=(--bind 127.0.0.1 --daemonize no --save '' --repl-diskless-sync-delay 0)
    dir=$(mktemp -d "$tmp/redis-aof-$1.XXXX")
    if [[ $1 == yes ]]; then
        args+=(--appendonly yes --appendfsync everysec)
    else
        args+=(--appendonly no)
    fi
    log "starting Redis: primary 127.0.0.1:${REDIS_PORTS[0]} + replicas ${REDIS_PORTS[1]}, ${REDIS_PORTS[2]}; ${args[*]:6}"
    mkdir -p "$dir/primary" "$dir/replica1" "$dir/replica2"
    start_bg redis-primary redis-server --port "${REDIS_PORTS[0]}" --dir "$dir/primary" "${args[@]}"
    wait_until 30 "the Redis primary" redis_ping "${REDIS_PORTS[0]}"
    local i
    for i in 1 2; do
        start_bg "redis-replica$i" redis-server --port "${REDIS_PORTS[$i]}" --dir "$dir/replica$i" \
            "${args[@]}" --replicaof 127.0.0.1 "${REDIS_PORTS[0]}"
    done
    wait_until 60 "2 online Redis replicas" redis_ready "$1"
    redis-cli -p "${REDIS_PORTS[0]}" info replication | tr -d '\r' | grep -E '^(connected_slaves|slave[0-9])'
}

# ---------------------------------------------------------------- one run
snap() { # every recorded process's CPU ticks, and the machine's
    local r st f
    for r in "${!ROLE_PID[@]}"; do
        alive "${ROLE_PID[$r]}" || continue
        st=$(stat_of "${ROLE_PID[$r]}") || continue
        read -ra f <<<"$st"
        echo "$r ${ROLE_PID[$r]} $((f[11] + f[12]))"
        local t line comm
        for t in /proc/"${ROLE_PID[$r]}"/task/*; do
            { read -r line <"$t/stat"; } 2>/dev/null || continue
            comm=${line#*(}
            comm=${comm%)*}
            read -ra f <<<"${line##*) }"
            echo "thread $r/${comm// /_} $((f[11] + f[12]))"
        done
    done
    read -ra f </proc/stat
    echo "machine ${f[*]:1:8}"
}

vm_busy() { # % of one core the whole VM was busy over 0.5 s
    local a b
    read -ra a </proc/stat
    sleep 0.5
    read -ra b </proc/stat
    awk -v hz="$HZ" -v d="$(((b[1] + b[2] + b[3] + b[6] + b[7]) - (a[1] + a[2] + a[3] + a[6] + a[7])))" \
        'BEGIN { printf "%d", d / hz / 0.5 * 100 }'
}

QUIET_WAITED=0
BUSY_BEFORE=0
quiet_gate() { # sets BUSY_BEFORE; waits a bounded time for a quiet VM
    local t0=$SECONDS
    BUSY_BEFORE=$(vm_busy)
    while ((BUSY_BEFORE > QUIET_MAX && SECONDS - t0 < QUIET_WAIT && QUIET_WAITED + SECONDS - t0 < QUIET_TOTAL)); do
        ((SECONDS - t0 > 0)) || log "VM ${BUSY_BEFORE}% busy before the run (the last run settling, or another job); waiting up to ${QUIET_WAIT}s for < ${QUIET_MAX}%"
        sleep 0.5
        BUSY_BEFORE=$(vm_busy)
    done
    QUIET_WAITED=$((QUIET_WAITED + SECONDS - t0))
    ((SECONDS - t0 == 0)) || log "  ... waited $((SECONDS - t0))s, now ${BUSY_BEFORE}% busy"
}

PERF_OK=0
CENSUS_EVENTS=raw_syscalls:sys_enter,task-clock,context-switches
for sc in read recvfrom write sendto epoll_wait futex epoll_ctl; do
    CENSUS_EVENTS+=,syscalls:sys_enter_$sc
done
if command -v perf >/dev/null && perf stat -x, -e "$CENSUS_EVENTS" -- true >/dev/null 2>&1; then
    PERF_OK=1
fi

census() { # NAME SYSTEM PIPELINE: a short run with perf stat on every server process
    local name=$1 system=$2 pipeline=$3
    if ((!PERF_OK)); then
        log "SKIPPED census $name: perf with syscall tracepoints is not available"
        return 0
    fi
    local need=$((CENSUS_DUR + 6))
    if ((SECONDS + need > BUDGET)); then
        log "SKIPPED census $name: ${BUDGET}s budget"
        return 0
    fi
    quiet_gate
    local target prefix
    if [[ $system == rrstore ]]; then
        target=rrstore://127.0.0.1:$RR_PORT prefix=rr-
    else
        target=redis://127.0.0.1:${REDIS_PORTS[0]} prefix=redis-
    fi
    local json=$OUT/$name.loadgen.json
    log "census $name: perf stat on every $system process, pipeline $pipeline, ${CENSUS_DUR}s"
    "$LG" --target "$target" --connections "$CONNS" --value-size "$VALUE" --keys "$KEYS" \
        --duration "$CENSUS_DUR" --warmup 1 --quiet --label "$name" --json "$json" \
        --pipeline "$pipeline" >"$tmp/loadgen.out" 2>&1 &
    local lg=$! r perfs=() files=()
    track "$lg"
    sleep 1 # into the measured window
    local window
    window=$(awk -v d="$CENSUS_DUR" 'BEGIN { print d * 0.8 }')
    for r in "${!ROLE_PID[@]}"; do
        [[ $r == "$prefix"* ]] || continue
        perf stat -x, -e "$CENSUS_EVENTS" -p "${ROLE_PID[$r]}" -o "$tmp/perf.$r" -- sleep "$window" \
            >/dev/null 2>&1 &
        track "$!"
        perfs+=("$!")
        files+=("$r=$tmp/perf.$r")
    done
    for r in "${perfs[@]}"; do
        wait "$r" || true
        forget_pid "$r"
    done
    local rc=0
    wait "$lg" || rc=$?
    forget_pid "$lg"
    ((rc == 0)) || log "WARNING: loadgen exited $rc in census $name"
    py census "$OUT/$name.json" "$json" "$window" "$BUSY_BEFORE" "${files[@]}"
}

budget_allows() { # WHAT SECONDS: whether SECONDS more fit in the budget (logs if not)
    if ((SECONDS + $2 > BUDGET)); then
        log "SKIPPED $1: ${BUDGET}s budget (at ${SECONDS}s, it takes ~${2}s)"
        return 1
    fi
}

RUNS=0
# One loadgen run of RUN_DUR s (default DUR) after RUN_WARM s (WARM) with
# RUN_VALUE-byte values (VALUE), e.g. `RUN_VALUE=1024 run_one ...`.
run_one() { # NAME SYSTEM LABEL LOADGEN-ARGS...
    local name=$1 system=$2 label=$3
    shift 3
    local dur=${RUN_DUR:-$DUR} warm=${RUN_WARM:-$WARM} value=${RUN_VALUE:-$VALUE}
    local need sample
    need=$(awk -v d="$dur" -v w="$warm" 'BEGIN { printf "%d", d + w + 5 }')
    sample=$(awk -v d="$dur" 'BEGIN { e = d * 0.2; if (e > 0.5) e = 0.5; print d - e }')
    budget_allows "$name" "$need" || return 0
    quiet_gate
    local json=$OUT/$name.json target
    if [[ $system == rrstore ]]; then
        target=rrstore://127.0.0.1:$RR_PORT
        rr_admin stats >"$tmp/stats.before"
    else
        target=redis://127.0.0.1:${REDIS_PORTS[0]}
        : >"$tmp/stats.before"
    fi
    log "run $name: $label"
    "$LG" --target "$target" --connections "$CONNS" --value-size "$value" --keys "$KEYS" \
        --duration "$dur" --warmup "$warm" --quiet --label "$label" --json "$json" "$@" \
        >"$tmp/loadgen.out" 2>&1 &
    local lg=$!
    track "$lg"
    ROLE_PID[loadgen]=$lg
    # CPU is sampled inside loadgen's measured window (ending a little early,
    # while loadgen still runs): these sleeps time the measurement, they do
    # not wait for anything to become ready
    sleep "$warm"
    snap >"$tmp/cpu.before"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    sleep "$sample"
    snap >"$tmp/cpu.after"
    t1=$(date +%s.%N)
    wait "$lg" || rc=$?
    forget_pid "$lg"
    unset 'ROLE_PID[loadgen]'
    sed 's/^/    /' "$tmp/loadgen.out"
    if [[ $system == rrstore ]]; then
        rr_admin stats >"$tmp/stats.after"
    else
        : >"$tmp/stats.after"
    fi
    if ((rc != 0)); then
        log "WARNING: loadgen exited $rc for $name"
        [[ -s $json ]] || return 0
    fi
    py meta "${json%.json}.meta.json" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        "$tmp/cpu.before" "$tmp/cpu.after" "$tmp/stats.before" "$tmp/stats.after" "$rc" "$json" \
        "$BUSY_BEFORE"
    py brief "$json"
    RUNS=$((RUNS + 1))
}

# ---------------------------------------------------------------- phases
rr_lbl="rrstore 3 workers, fsync interval"
rd_lbl="Redis primary+2 replicas, no persistence"

alternate() { # PREFIX RR-LABEL REDIS-LABEL [LOADGEN-ARG...] [-- REDIS-ONLY-ARG...]
    local prefix=$1 rl=$2 dl=$3 r
    shift 3
    local common=() redis_only=()
    while (($#)) && [[ $1 != -- ]]; do common+=("$1") && shift; done
    (($#)) && shift && redis_only=("$@")
    for ((r = 1; r <= ROUNDS; r++)); do
        run_one "$prefix-rrstore-r$r" rrstore "$rl (r$r)" "${common[@]}"
        run_one "$prefix-redis-r$r" redis "$dl (r$r)" "${common[@]}" ${redis_only[@]+"${redis_only[@]}"}
    done
}

phase_defaults() { # w1, w2, reads, w4, w3 and the census, both systems at their defaults
    start_rrstore interval 3
    start_redis no

    log "== workload 1: closed loop, pipeline 1"
    alternate w1 "w1 $rr_lbl, P1" "w1 $rd_lbl, P1" --pipeline 1

    log "== workload 2: closed loop, pipeline 16"
    alternate w2 "w2 $rr_lbl, P16" "w2 $rd_lbl, P16" --pipeline 16

    log "== reads: closed loop, pipeline 1, 90 % GET (no target)"
    RUN_DUR=$SHORT_DUR RUN_WARM=$SHORT_WARM \
        alternate rd "reads $rr_lbl, P1, 90% GET" "reads $rd_lbl, P1, 90% GET" \
        --pipeline 1 --get-ratio 0.9

    log "== workload 4: closed loop, pipeline 1, 1 KiB values"
    RUN_VALUE=1024 RUN_DUR=$SHORT_DUR RUN_WARM=$SHORT_WARM \
        alternate w4 "w4 $rr_lbl, P1, 1 KiB" "w4 $rd_lbl, P1, 1 KiB" --pipeline 1

    local redis_w1 rate=""
    mapfile -t redis_w1 < <(ls "$OUT"/w1-redis-r*.json 2>/dev/null | grep -v '\.meta\.json$' || true)
    ((${#redis_w1[@]})) && rate=$(py halfrate "${redis_w1[@]}")
    if [[ -n $rate && $rate -gt 0 ]]; then
        log "== workload 3: open loop, pipeline 1, $rate req/s (50% of Redis's best w1)"
        alternate w3 "w3 $rr_lbl, open $rate/s" "w3 $rd_lbl, open $rate/s" --pipeline 1 --rate "$rate"
    else
        log "SKIPPED workload 3: no Redis workload-1 result to take 50% of"
    fi

    log "== syscall census: every server process under perf stat, pipeline 1 and 16"
    census census-rrstore-p1 rrstore 1
    census census-redis-p1 redis 1
    census census-rrstore-p16 rrstore 16
    census census-redis-p16 redis 16
}

phase_persistence() { # w1 with matched persistence settings
    log "== persistence 1: rrstore --fsync interval vs Redis --appendonly yes --appendfsync everysec"
    [[ -n ${ROLE_PID[rr-lb]:-} ]] || start_rrstore interval 3
    stop_roles redis-
    start_redis yes
    alternate fsi "w1 rrstore fsync interval" "w1 Redis AOF everysec" --pipeline 1

    log "== persistence 2: rrstore --fsync never vs Redis --appendonly no"
    stop_rrstore
    stop_roles redis-
    start_rrstore never 3
    start_redis no
    alternate fsn "w1 rrstore fsync never" "w1 Redis appendonly no" --pipeline 1
    stop_rrstore
}

phase_ack_all() { # w5: acknowledged by every replica (Redis: no persistence)
    log "== workload 5: rrstore lb --ack all vs Redis SET + WAIT 2 0, pipeline 1"
    budget_allows "workload 5" $((2 * ROUNDS * 10 + 10)) || return 0
    stop_rrstore
    [[ -n ${ROLE_PID[redis-primary]:-} ]] || start_redis no
    start_rrstore interval 3 --ack all
    RUN_DUR=$SHORT_DUR RUN_WARM=$SHORT_WARM \
        alternate w5 "w5 rrstore 3 workers, ack all, fsync interval, P1" \
        "w5 Redis primary+2 replicas, SET + WAIT 2 0, no persistence, P1" --pipeline 1 -- --redis-wait 2
    stop_rrstore
}

phase_scaling() { # w1 on rrstore alone with 1, 2, 3, 5, 8 workers
    log "== scaling: rrstore w1 with $SCALE_WORKERS workers"
    local n
    for n in $SCALE_WORKERS; do
        budget_allows "scaling with $n workers" $((${SCALE_DUR%.*} + ${SCALE_WARM%.*} + 12)) || continue
        start_rrstore interval "$n"
        RUN_DUR=$SCALE_DUR RUN_WARM=$SCALE_WARM \
            run_one "scale$n-rrstore-r1" rrstore "scale: rrstore $n workers, fsync interval, P1" --pipeline 1
        stop_rrstore
    done
}

rss_of_workers() { # every rrstore worker's VmRSS, kB: "ROLE KB" lines
    local r rss
    for r in "${!ROLE_PID[@]}"; do
        [[ $r == rr-w* ]] && alive "${ROLE_PID[$r]}" || continue
        rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/${ROLE_PID[$r]}/status" 2>/dev/null) || continue
        echo "$r ${rss:-0}"
    done
}

phase_catchup() { # FILL_KEYS records into 3 workers; a 4th joins; RSS throughout
    log "== catch-up and memory: $FILL_KEYS records of $VALUE B, then a 4th worker joins"
    budget_allows "catch-up" 45 || return 0
    # A fresh cluster: the phase before may have left its own running
    # (`PHASES="defaults catchup"` did, and this start failed on the port).
    [[ -z ${ROLE_PID[rr-lb]:-} ]] || stop_rrstore
    quiet_gate
    start_rrstore interval 3
    rss_of_workers >"$tmp/rss.empty"

    log "loading ids 0..$FILL_KEYS (loadgen --fill, pipeline 64)"
    local rc=0 lg
    "$LG" --target "rrstore://127.0.0.1:$RR_PORT" --connections "$CONNS" --pipeline 64 \
        --value-size "$VALUE" --keys "$FILL_KEYS" --fill --duration 120 --quiet \
        --label "fill $FILL_KEYS records, P64" --json "$OUT/fill-rrstore.json" \
        >"$tmp/loadgen.out" 2>&1 &
    lg=$!
    track "$lg"
    wait "$lg" || rc=$?
    forget_pid "$lg"
    sed 's/^/    /' "$tmp/loadgen.out"
    if ((rc != 0)) || ! poll_until 120 "3 workers holding $FILL_KEYS records" rr_all_hold "$FILL_KEYS" 3; then
        log "WARNING: the load did not complete (loadgen exit $rc); catch-up not measured"
        stop_rrstore
        return 0
    fi
    rss_of_workers >"$tmp/rss.loaded"
    rr_admin members

    quiet_gate
    snap >"$tmp/cpu.before"
    local t0 t1=""
    t0=$(date +%s.%N)
    start_rr_worker 4
    poll_until 120 "worker 4 active" rr_ready 4 && t1=$(date +%s.%N)
    snap >"$tmp/cpu.after"
    rss_of_workers >"$tmp/rss.joined"
    rr_admin members
    rr_admin verify | tee "$tmp/verify.out" || true
    py catchup "$OUT/catchup.json" "$t0" "$t1" "$FILL_KEYS" "$OUT/fill-rrstore.json" \
        "$tmp/logs" rr-w4 "$tmp/rss.empty" "$tmp/rss.loaded" \
        "$tmp/rss.joined" "$tmp/cpu.before" "$tmp/cpu.after" "$tmp/verify.out" "$BUSY_BEFORE"
    RUNS=$((RUNS + 1))
    stop_rrstore
}

for phase in $PHASES; do
    case $phase in
    defaults | persistence | ack_all) ;;
    *) stop_roles redis- ;; # the rest is rrstore alone
    esac
    "phase_$phase"
done
stop_roles redis-

# ---------------------------------------------------------------- chart and report
plot=()
for w in w1 w3; do
    for s in rrstore redis; do
        mode=closed
        [[ $w == w3 ]] && mode=open
        mapfile -t files < <(ls "$OUT/$w-$s"-r*.json 2>/dev/null | grep -v '\.meta\.json$' || true)
        ((${#files[@]})) || continue
        b=$(py best "$mode" "${files[@]}")
        [[ -n $b ]] && plot+=("$b")
    done
done
if ((${#plot[@]})); then
    "$LG" plot --log-y "${plot[@]}" -o "$OUT/latency.svg"
    log "wrote $OUT/latency.svg from ${plot[*]}"
fi

if [[ -n $DOC ]]; then
    # the SVG link is relative to the document's folder
    svg_rel=$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], os.path.dirname(os.path.abspath(sys.argv[2]))))' \
        "$(realpath "$OUT/latency.svg")" "$DOC")
    py doc "$OUT" "$DOC" "$svg_rel"
else
    py doc "$OUT" "" "$OUT/latency.svg" >"$OUT/section.md"
    cat "$OUT/section.md"
    log "no DOC: the section above is only printed (and in $OUT/section.md); docs/BENCHMARKS.md untouched"
fi
log "done: $RUNS runs in ${SECONDS}s"
((RUNS > 0)) || die "no run completed"
