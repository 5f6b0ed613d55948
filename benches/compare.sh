#!/usr/bin/env bash
# rrstore vs Redis, side by side, with one load generator (tools/loadgen).
#
#   rrstore: `rrstore lb` on 127.0.0.1:17059 (control :17060) + 3 workers,
#            fresh data dirs under a mktemp -d;
#   Redis 7: a primary on 127.0.0.1:6390 and 2 replicas (6391, 6392,
#            --replicaof 127.0.0.1 6390).
#
# Workloads (PUT/SET of 64 B values, keys uniform over 100,000, 50 connections,
# one loadgen thread), each run ROUNDS times, alternating rrstore, Redis,
# rrstore, Redis ... so that noise on the (shared) machine hits both:
#   w1  closed loop, pipeline 1, as fast as it goes
#   w2  closed loop, pipeline 16
#   w3  open loop, pipeline 1, at 50% of Redis's best w1 throughput
#   fs  w1 with matched persistence: rrstore --fsync interval vs Redis
#       --appendonly yes --appendfsync everysec, then rrstore --fsync never
#       vs Redis --appendonly no
# (The w1-w3 rows use each system's benchmark defaults: rrstore --fsync
# interval, Redis --save '' --appendonly no.)
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
# docs/BENCHMARKS.md is rewritten from the JSON.
#
# Usage, from anywhere (it cd's to the repository root):
#   bash benches/compare.sh              # the full run, < 10 minutes
#   QUICK=1 bash benches/compare.sh      # ~1 s runs, a smoke test; writes
#                                        # into a temp dir, docs untouched
# Environment: QUICK=1; ROUNDS (2); BUDGET seconds (600); QUIET_MAX (30 %),
# QUIET_WAIT (20 s), QUIET_TOTAL (120 s) for the idle gate; OUT (docs/bench,
# QUICK: a temp dir); DOC (docs/BENCHMARKS.md, QUICK: none, i.e. the section
# is only printed); RR_PORT/RR_CONTROL_PORT (17059/17060); REDIS_PORT (6390,
# replicas on the next two ports).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
ROUNDS=${ROUNDS:-2}
BUDGET=${BUDGET:-600}
if [[ $QUICK == 1 ]]; then DUR=1 WARM=0.5; else DUR=10 WARM=2; fi
SAMPLE=$(awk -v d="$DUR" 'BEGIN { e = d * 0.2; if (e > 0.5) e = 0.5; print d - e }')
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

wait_until() { # DEADLINE_S WHAT CMD...: poll CMD every 0.1 s until it succeeds
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
            die "timed out after $1 s waiting for $what"
        }
        sleep 0.1
    done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---------------------------------------------------------------- helpers in Python
cat >"$tmp/bench.py" <<'PY'
import datetime, glob, json, os, platform, re, subprocess, sys

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def read_snap(path):
    snap, threads = {}, {}
    for line in open(path):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "thread" and len(parts) == 3:
            threads[parts[1]] = threads.get(parts[1], 0) + int(parts[2])
            continue
        snap[parts[0]] = [int(x) for x in parts[1:]]
    snap["_threads"] = threads
    return snap

def read_stats(path):
    stats = {}
    try:
        for line in open(path):
            parts = line.split()
            if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
                stats[parts[0]] = int(parts[1])
    except OSError:
        pass
    return stats

def cmd_census(out, run_json, window, busy_before, *files):
    window = float(window)
    run = load(run_json) or {}
    tput = run.get("throughput") or 0
    reqs = tput * window
    procs = {}
    for spec in files:
        role, path = spec.split("=", 1)
        counts = {}
        try:
            for line in open(path):
                parts = line.strip().split(",")
                if len(parts) < 3 or not parts[0] or parts[0].startswith("<"):
                    continue
                try:
                    value = float(parts[0])
                except ValueError:
                    continue
                event = parts[2].replace("syscalls:sys_enter_", "").replace(
                    "raw_syscalls:sys_enter", "all_syscalls")
                counts[event] = value
        except OSError:
            continue
        per = {k: round(v / reqs, 3) for k, v in counts.items()
               if k not in ("task-clock",) and reqs}
        if "task-clock" in counts and reqs:
            per["cpu_us"] = round(counts["task-clock"] * 1000 / reqs, 2)  # task-clock is in ms
        procs[role] = {"counts": counts, "per_request": per}
    res = {"window_s": window, "throughput": tput, "requests_in_window": round(reqs),
           "vm_busy_before_pct": int(busy_before), "pipeline": run.get("pipeline"),
           "processes": procs}
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    tot = sum(p["per_request"].get("all_syscalls", 0) for p in procs.values())
    print(f"  => {tput:.0f} req/s under perf; server syscalls per request {tot:.2f}: "
          + ", ".join(f"{r} {p['per_request'].get('all_syscalls', 0):.2f}"
                      for r, p in sorted(procs.items())))

def cmd_meta(out, wall, before, after, sbefore, safter, rc, run_json, busy_before="0"):
    hz = int(os.environ.get("HZ", "100"))
    wall = float(wall)
    b, a = read_snap(before), read_snap(after)
    cpu = {}
    threads = {}
    for key, ticks in a["_threads"].items():
        role = key.split("/", 1)[0]
        if role in a and role in b and a[role][0] == b[role][0]:
            threads[key] = round((ticks - b["_threads"].get(key, 0)) / hz / wall * 100, 1)
    for role, v in a.items():
        if role in ("machine", "_threads") or role not in b:
            continue
        if b[role][0] != v[0]:  # another process under the same role
            continue
        cpu[role] = round((v[1] - b[role][1]) / hz / wall * 100, 1)
    meta = {"wall_s": round(wall, 3), "loadgen_rc": int(rc), "cpu_pct": cpu,
            "thread_cpu_pct": threads, "vm_busy_before_pct": int(busy_before)}
    if "machine" in a and "machine" in b:
        d = [x - y for x, y in zip(a["machine"], b["machine"])]
        user, nice, system, idle, iowait, irq, softirq, steal = (d + [0] * 8)[:8]
        busy = (user + nice + system + irq + softirq) / hz / wall * 100
        ours = sum(cpu.values())
        meta["machine_pct"] = {
            "busy": round(busy, 1),
            "kernel": round((system + irq + softirq) / hz / wall * 100, 1),
            "user": round((user + nice) / hz / wall * 100, 1),
            "ours": round(ours, 1),
            "other": round(max(0.0, busy - ours), 1),
            "steal": round(steal / hz / wall * 100, 1),
            "iowait": round(iowait / hz / wall * 100, 1),
        }
    sb, sa = read_stats(sbefore), read_stats(safter)
    if sb and sa:
        keys = ["requests_put", "requests_get", "requests_ping", "read_syscalls",
                "write_syscalls", "loop_turns", "errors_busy", "errors_timeout",
                "errors_unavailable"]
        delta = {k: sa.get(k, 0) - sb.get(k, 0) for k in keys}
        reqs = delta["requests_put"] + delta["requests_get"] + delta["requests_ping"]
        meta["lb_stats_delta"] = delta
        if reqs:
            meta["lb_syscalls_per_request"] = round(
                (delta["read_syscalls"] + delta["write_syscalls"]) / reqs, 3)
            meta["lb_reads_per_request"] = round(delta["read_syscalls"] / reqs, 3)
            meta["lb_writes_per_request"] = round(delta["write_syscalls"] / reqs, 3)
        if delta["loop_turns"]:
            meta["lb_requests_per_turn"] = round(reqs / delta["loop_turns"], 2)
    run = load(run_json)
    if run and run.get("throughput"):
        tput = run["throughput"]
        meta["cpu_us_per_request"] = {
            role: round(pct / 100 / tput * 1e6, 2) for role, pct in cpu.items()}
    with open(out, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

def best(paths, mode):
    """The better round: highest throughput (closed loop) or lowest p99 (open)."""
    runs = [(p, load(p)) for p in paths]
    runs = [(p, r) for p, r in runs if r]
    if not runs:
        return None
    if mode == "closed":
        return max(runs, key=lambda pr: pr[1]["throughput"])[0]
    # open loop: a run that fell behind (unfinished) is worse than any that did not
    return min(runs, key=lambda pr: (pr[1].get("unfinished", 0) > 0,
                                     pr[1]["latency_us"]["p99"]))[0]

def run_paths(out, prefix, system):
    return sorted(p for p in glob.glob(f"{out}/{prefix}-{system}-r*.json")
                  if not p.endswith(".meta.json"))

def cmd_brief(path):
    r = load(path)
    m = load(path[:-5] + ".meta.json") or {}
    if not r:
        print(f"  {os.path.basename(path)}: no result")
        return
    lat = r["latency_us"]
    cpu = " ".join(f"{k}={v:.0f}%" for k, v in sorted(m.get("cpu_pct", {}).items()) if v >= 0.5)
    extra = ""
    if "lb_syscalls_per_request" in m:
        extra = f"  LB syscalls/req {m['lb_syscalls_per_request']:.2f}"
    mach = m.get("machine_pct", {})
    print(f"  => {r['throughput']:.0f} req/s  p50 {lat['p50']}  p99 {lat['p99']}  "
          f"p99.9 {lat['p999']}  max {lat['max']} µs  errors {r['errors']}  "
          f"unfinished {r['unfinished']}{extra}")
    print(f"     CPU: {cpu}  (other {mach.get('other', '?')}%, steal {mach.get('steal', '?')}%)")

def cmd_env(out):
    def sh(*args):
        try:
            return subprocess.run(args, capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except Exception as e:  # noqa: BLE001
            return f"unavailable ({e})"
    model = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    src_dirty = sh("git", "status", "--porcelain", "--", "src", "tools", "Cargo.toml", "Cargo.lock")
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": sh("git", "rev-parse", "--short", "HEAD"),
        "source_modified": bool(src_dirty),
        "rrstore": sh(os.environ["RR"], "--version"),
        "redis": sh("redis-server", "--version"),
        "loadgen": sh(os.environ["LG"], "--version"),
        "rustc": sh("rustc", "--version"),
        "uname": sh("uname", "-a"),
        "nproc": sh("nproc"),
        "cpu_model": model,
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
        "duration_s": float(os.environ["DUR"]),
        "warmup_s": float(os.environ["WARM"]),
        "rounds": int(os.environ["ROUNDS"]),
        "quick": os.environ.get("QUICK") == "1",
        "connections": int(os.environ["CONNS"]),
        "value_size": int(os.environ["VALUE"]),
        "keys": int(os.environ["KEYS"]),
    }
    with open(f"{out}/env.json", "w") as f:
        json.dump(env, f, indent=2)
        f.write("\n")

# ---------------------------------------------------------------- the Markdown section
def fmt_int(x):
    return f"{x:,.0f}"

def ratio(a, b):
    if a is None or b is None or not b:
        return "–"
    return f"{a / b:.2f}×"

def role_sum(cpu, prefix):
    return sum(v for k, v in cpu.items() if k.startswith(prefix))

def cpu_cell(meta, system):
    cpu = meta.get("cpu_pct", {})
    if not cpu:
        return "–"
    if system == "rrstore":
        ws = [cpu.get(f"rr-w{i}", 0) for i in (1, 2, 3)]
        return (f"LB {cpu.get('rr-lb', 0):.0f} + workers "
                + "/".join(f"{w:.0f}" for w in ws)
                + f" = {cpu.get('rr-lb', 0) + sum(ws):.0f}")
    reps = [cpu.get(f"redis-replica{i}", 0) for i in (1, 2)]
    return (f"primary {cpu.get('redis-primary', 0):.0f} + replicas "
            + "/".join(f"{r:.0f}" for r in reps)
            + f" = {cpu.get('redis-primary', 0) + sum(reps):.0f}")

def helpers(meta, system):
    """CPU of the threads other than each server's main loop, summed by name."""
    th = meta.get("thread_cpu_pct", {})
    if not th:
        return "–"
    sums = {}
    for key, pct in th.items():
        role, comm = key.split("/", 1)
        if role == "loadgen" or not role.startswith("rr-" if system == "rrstore" else "redis-"):
            continue
        if comm in ("rrstore", "redis-server"):
            continue
        sums[comm] = sums.get(comm, 0) + pct
    if not sums:
        return "none"
    return ", ".join(f"{k} {v:.0f}" for k, v in sorted(sums.items()))

def server_cpu(meta, system):
    cpu = meta.get("cpu_pct", {})
    return role_sum(cpu, "rr-") if system == "rrstore" else role_sum(cpu, "redis-")

class Doc:
    def __init__(self, out):
        self.out = out
        self.env = load(f"{out}/env.json") or {}
        self.lines = []

    def w(self, s=""):
        self.lines.append(s)

    def runs(self, prefix, system):
        res = []
        for p in run_paths(self.out, prefix, system):
            r = load(p)
            if r is None:
                continue
            m = re.search(r"-r(\d+)\.json$", p)
            res.append({"round": int(m.group(1)) if m else 0, "path": p, "run": r,
                        "meta": load(p[:-5] + ".meta.json") or {}})
        return res

    def best(self, runs, mode):
        if not runs:
            return None
        p = best([x["path"] for x in runs], mode)
        return next(x for x in runs if x["path"] == p)

    def summary_table(self, rr, rd, rr_name, rd_name):
        self.w(f"| best round | {rr_name} | {rd_name} | rrstore / Redis |")
        self.w("|---|---|---|---|")
        a, b = rr["run"], rd["run"]
        self.w(f"| throughput, req/s | {fmt_int(a['throughput'])} | {fmt_int(b['throughput'])} | "
               f"**{ratio(a['throughput'], b['throughput'])}** |")
        for key, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")):
            x, y = a["latency_us"][key], b["latency_us"][key]
            bold = "**" if key == "p99" else ""
            self.w(f"| {name} latency, µs | {fmt_int(x)} | {fmt_int(y)} | {bold}{ratio(x, y)}{bold} |")
        self.w(f"| errors / unfinished | {a['errors']} / {a['unfinished']} | "
               f"{b['errors']} / {b['unfinished']} | |")
        ca, cb = server_cpu(rr["meta"], "rrstore"), server_cpu(rd["meta"], "redis")
        self.w(f"| server CPU, % of one core | {cpu_cell(rr['meta'], 'rrstore')} | "
               f"{cpu_cell(rd['meta'], 'redis')} | {ratio(ca, cb)} |")
        self.w(f"| of which helper threads, % | {helpers(rr['meta'], 'rrstore')} | "
               f"{helpers(rd['meta'], 'redis')} | |")
        ua = ca / 100 / a["throughput"] * 1e6 if a["throughput"] else None
        ub = cb / 100 / b["throughput"] * 1e6 if b["throughput"] else None
        if ua and ub:
            self.w(f"| server CPU per request, µs | {ua:.1f} | {ub:.1f} | {ratio(ua, ub)} |")
        la = rr["meta"].get("cpu_pct", {}).get("loadgen")
        lb = rd["meta"].get("cpu_pct", {}).get("loadgen")
        if la is not None and lb is not None:
            self.w(f"| loadgen CPU, % | {la:.0f} | {lb:.0f} | |")
        ma, mb = rr["meta"].get("machine_pct", {}), rd["meta"].get("machine_pct", {})
        if ma and mb:
            self.w(f"| other CPU on the VM / steal, % | {ma['other']:.0f} / {ma['steal']:.0f} | "
                   f"{mb['other']:.0f} / {mb['steal']:.0f} | |")
        if "lb_syscalls_per_request" in rr["meta"]:
            self.w(f"| LB syscalls per request | {rr['meta']['lb_syscalls_per_request']:.2f} | | |")
        self.w(f"| round | {rr['round']} | {rd['round']} | |")
        self.w()

    def rounds_table(self, groups):
        """groups: list of (phase, system, setting, runs), in the order the phases ran."""
        self.w("| system | setting | round | req/s | p50 | p99 | p99.9 | max µs | err / unfin. | server CPU % | loadgen CPU % | other / steal % |")
        self.w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        rows = []
        for phase, system, setting, runs in groups:
            for x in runs:
                rows.append((phase, x["round"], system, setting, x))
        rows.sort(key=lambda t: (t[0], t[1], t[2] != "rrstore"))
        for _phase, rnd, system, setting, x in rows:
            r, m = x["run"], x["meta"]
            lat = r["latency_us"]
            mach = m.get("machine_pct", {})
            lgc = m.get("cpu_pct", {}).get("loadgen")
            self.w(f"| {system} | {setting} | {rnd} | {fmt_int(r['throughput'])} | {lat['p50']} | "
                   f"{lat['p99']} | {lat['p999']} | {lat['max']} | {r['errors']} / {r['unfinished']} | "
                   f"{cpu_cell(m, system)} | {'–' if lgc is None else f'{lgc:.0f}'} | "
                   f"{mach.get('other', '–')} / {mach.get('steal', '–')} |")
        self.w()

def verdict(ok):
    return "**met**" if ok else "**missed**"

def render(out, svg_rel):
    d = Doc(out)
    env = d.env
    w = d.w
    rr_default = "rrstore, 3 workers, `--fsync interval`"
    rd_default = "Redis, primary + 2 replicas, no persistence"
    w("<!-- compare:begin -->")
    w("## rrstore vs Redis")
    w()
    w(f"Generated by `bash benches/compare.sh` on {env.get('date_utc', '?')} at commit "
      f"`{env.get('commit', '?')}`"
      + (" (with uncommitted changes under src/ or tools/)" if env.get("source_modified") else "")
      + "; everything between the `compare:begin`/`compare:end` markers is rewritten "
        "by the next run. Raw results in `docs/bench/`: one loadgen `--json` per run "
        "(`w1-rrstore-r1.json` …), a `.meta.json` beside each (CPU per process and per "
        "thread over the measured window, the VM's busy/other/steal, the LB's `rrstore "
        "stats` deltas), `census-*.json` (perf stat counts) and `env.json`.")
    w()
    if env.get("quick"):
        w("**QUICK=1 smoke run: ~1 s per run, the figures mean nothing.**")
        w()
    w("**Machine.** " + f"{env.get('cpu_model', '?')}, {env.get('nproc', '?')} vCPUs, "
      f"{env.get('mem_gib', '?')} GiB; `{env.get('uname', '?')}`. "
      f"Load average at start {' '.join(env.get('loadavg_at_start', []))}.")
    w()
    w("**Noise.** The VM has 2 vCPUs **shared with another engineer's builds and tests**, "
      "and loadgen, the servers and their replicas all run on those same 2 cores. "
      "Expect ±15 % or more between runs. The runs alternate rrstore, Redis, rrstore, "
      "Redis … so noise hits both; every round is listed, and the columns *other* (CPU "
      "used on the VM by processes other than these, measured from /proc/stat) and "
      "*steal* (time the hypervisor gave to other guests) show how much noise each run had. "
      "Before each run the script waits (at most 20 s, 120 s in all) while the idle VM is "
      "more than 30 % of a core busy.")
    w()
    w("**Versions.** " + f"{env.get('rrstore', '?')}; {env.get('redis', '?')}; "
      f"{env.get('loadgen', '?')}; {env.get('rustc', '?')}.")
    w()
    w("**Setups** (loopback only):")
    w()
    w("- rrstore: `rrstore lb --listen 127.0.0.1:17059 --control 127.0.0.1:17060` and three "
      "`rrstore worker --lb 127.0.0.1:17060 --data-dir <fresh temp dir> --fsync F`; "
      "loadgen talks to the LB. Every PUT crosses the LB, goes to one worker (round robin), "
      "which logs it, sends it to both peers and confirms; the LB answers.")
    w("- Redis: `redis-server --port 6390 --save '' --appendonly no --repl-diskless-sync-delay 0` and two replicas "
      "`--replicaof 127.0.0.1 6390` with the same flags (`--appendonly yes --appendfsync "
      "everysec` on all three for the persistence rows); loadgen talks to the primary. "
      "Replication is asynchronous: Redis answers before the replicas have the write.")
    w(f"- loadgen: {env.get('connections', 50)} connections, one thread, SET/PUT of "
      f"{env.get('value_size', 64)} B values, keys uniform over {fmt_int(env.get('keys', 100000))}; "
      f"each run {env.get('duration_s', '?'):g} s measured after {env.get('warmup_s', '?'):g} s "
      f"warmup; {env.get('rounds', '?')} round(s) per system. Closed loop: a connection sends "
      "when its previous answer arrived. Open loop: a fixed schedule, latency corrected for "
      "coordinated omission.")
    w("- *Best round*: per system, the round with the highest throughput (closed loop) or "
      "the lowest p99 (open loop); targets compare best against best. Ratios are "
      "rrstore ÷ Redis (for latency and CPU, below 1 favours rrstore). CPU is in % of "
      "one core (200 % = the whole VM) over the measured window.")
    w()

    w1 = (d.runs("w1", "rrstore"), d.runs("w1", "redis"))
    w2 = (d.runs("w2", "rrstore"), d.runs("w2", "redis"))
    w3 = (d.runs("w3", "rrstore"), d.runs("w3", "redis"))
    b1 = (d.best(w1[0], "closed"), d.best(w1[1], "closed"))
    b2 = (d.best(w2[0], "closed"), d.best(w2[1], "closed"))
    b3 = (d.best(w3[0], "open"), d.best(w3[1], "open"))

    w("### Targets")
    w()
    w("| # | workload | target | result | |")
    w("|---|---|---|---|---|")
    if all(b1):
        a, b = b1[0]["run"], b1[1]["run"]
        ok = a["throughput"] >= b["throughput"] and a["latency_us"]["p99"] <= b["latency_us"]["p99"]
        w(f"| 1 | PUT 64 B, 50 conns, P1, max rate; rrstore 3 workers | ≥ 1.0× Redis primary+2 "
          f"replicas throughput, with p99 ≤ Redis p99 | {ratio(a['throughput'], b['throughput'])} "
          f"throughput; p99 {fmt_int(a['latency_us']['p99'])} vs {fmt_int(b['latency_us']['p99'])} µs "
          f"| {verdict(ok)} |")
    else:
        w("| 1 | PUT 64 B, 50 conns, P1, max rate | ≥ 1.0× Redis, p99 ≤ Redis p99 | not run | |")
    if all(b2):
        a, b = b2[0]["run"], b2[1]["run"]
        ok = a["throughput"] >= b["throughput"]
        w(f"| 2 | same at P16 | ≥ 1.0× Redis at -P 16 | {ratio(a['throughput'], b['throughput'])} "
          f"throughput | {verdict(ok)} |")
    else:
        w("| 2 | same at P16 | ≥ 1.0× Redis at -P 16 | not run | |")
    if all(b3):
        a, b = b3[0]["run"], b3[1]["run"]
        clean = a["errors"] == 0 and a["unfinished"] == 0
        ok = clean and a["latency_us"]["p99"] <= b["latency_us"]["p99"]
        note = "" if clean else f"; rrstore had {a['errors']} errors, {a['unfinished']} unfinished"
        w(f"| 3 | open loop P1 at 50% of Redis max ({fmt_int(a['rate_requested'])} req/s) | "
          f"p99 ≤ Redis p99 | p99 {fmt_int(a['latency_us']['p99'])} vs "
          f"{fmt_int(b['latency_us']['p99'])} µs ({ratio(a['latency_us']['p99'], b['latency_us']['p99'])}){note} "
          f"| {verdict(ok)} |")
    else:
        w("| 3 | open loop P1 at 50% of Redis max | p99 ≤ Redis p99 | not run | |")
    w()

    sections = [
        ("1. PUT/SET 64 B, 50 connections, pipeline 1, closed loop (max rate)", w1, b1),
        ("2. The same at pipeline 16", w2, b2),
        (None, w3, b3),
    ]
    for title, (rr, rd), (brr, brd) in sections:
        if title is None:
            rate = (brr or brd)["run"]["rate_requested"] if (brr or brd) else 0
            title = (f"3. Open loop, pipeline 1, {fmt_int(rate)} req/s "
                     "(50 % of Redis's best workload-1 throughput)")
            if b1[0] and rate:
                title += (f"; that is {rate / b1[0]['run']['throughput'] * 100:.0f} % "
                          "of rrstore's best workload-1 throughput")
        w(f"### {title}")
        w()
        if brr and brd:
            d.summary_table(brr, brd, rr_default, rd_default)
        w("All rounds, in the order they ran (latencies in µs):")
        w()
        d.rounds_table([(0, "rrstore", "fsync interval", rr), (0, "redis", "no persistence", rd)])

    # persistence
    fi = (d.runs("fsi", "rrstore"), d.runs("fsi", "redis"))
    fn = (d.runs("fsn", "rrstore"), d.runs("fsn", "redis"))
    if any(fi) or any(fn):
        w("### Persistence settings matched (workload 1)")
        w()
        w("Each pair ran in its own phase, alternating, right after a restart of the "
          "processes whose setting changed. rrstore `--fsync interval` fdatasyncs each "
          "worker's log once a second from a helper thread, like Redis "
          "`appendfsync everysec`; rrstore `--fsync never` still writes its log "
          "(write(2) into the page cache) but never syncs it, while Redis `--appendonly no "
          "--save ''` writes nothing at all.")
        w()
        w("| pairing | rrstore req/s | Redis req/s | ratio | rrstore p99 µs | Redis p99 µs | ratio |")
        w("|---|---|---|---|---|---|---|")
        for name, (rr, rd) in (("rrstore `--fsync interval` vs Redis `--appendonly yes --appendfsync everysec`", fi),
                               ("rrstore `--fsync never` vs Redis `--appendonly no`", fn)):
            a, b = d.best(rr, "closed"), d.best(rd, "closed")
            if a and b:
                ra, rb = a["run"], b["run"]
                w(f"| {name} | {fmt_int(ra['throughput'])} | {fmt_int(rb['throughput'])} | "
                  f"{ratio(ra['throughput'], rb['throughput'])} | {ra['latency_us']['p99']} | "
                  f"{rb['latency_us']['p99']} | {ratio(ra['latency_us']['p99'], rb['latency_us']['p99'])} |")
        w()
        w("All rounds (latencies in µs):")
        w()
        d.rounds_table([(0, "rrstore", "fsync interval", fi[0]), (0, "redis", "AOF everysec", fi[1]),
                        (1, "rrstore", "fsync never", fn[0]), (1, "redis", "appendonly no", fn[1])])

    # syscalls
    w("### LB syscalls per request (`rrstore stats`)")
    w()
    w("`rrstore stats` counters read before and after each rrstore run (warmup and drain "
      "included): the LB loop's `read_syscalls` and `write_syscalls` (client and worker "
      "sockets) over the requests it took, and requests per `loop_turns`. At pipeline 1 "
      "the client side alone costs one read and one write per request.")
    w()
    w("| run | requests | reads / req | writes / req | syscalls / req | requests / loop turn | LB CPU µs / req | workers CPU µs / req |")
    w("|---|---|---|---|---|---|---|---|")
    for prefix, label in (("w1", "1 (P1 closed)"), ("w2", "2 (P16 closed)"), ("w3", "3 (P1 open)"),
                          ("fsi", "1, fsync interval"), ("fsn", "1, fsync never")):
        for x in d.runs(prefix, "rrstore"):
            m = x["meta"]
            if "lb_syscalls_per_request" not in m:
                continue
            dl = m["lb_stats_delta"]
            reqs = dl["requests_put"] + dl["requests_get"] + dl["requests_ping"]
            us = m.get("cpu_us_per_request", {})
            wus = sum(v for k, v in us.items() if k.startswith("rr-w"))
            w(f"| {label}, round {x['round']} | {fmt_int(reqs)} | {m['lb_reads_per_request']:.2f} | "
              f"{m['lb_writes_per_request']:.2f} | **{m['lb_syscalls_per_request']:.2f}** | "
              f"{m.get('lb_requests_per_turn', 0):.1f} | {us.get('rr-lb', 0):.1f} | {wus:.1f} |")
    w()

    census_rows = []
    for system in ("rrstore", "redis"):
        for pipe in (1, 16):
            c = load(f"{out}/census-{system}-p{pipe}.json")
            if c:
                census_rows.append((system, pipe, c))
    if census_rows:
        w("### Syscalls and CPU per request, every server process (`perf stat`)")
        w()
        w(f"Separate closed-loop runs, 50 connections, after the workloads above: `perf stat` "
          f"counts every syscall (`raw_syscalls:sys_enter`), the main ones by name, "
          f"`task-clock` (CPU time, all threads) and context switches of each server "
          f"process over {census_rows[0][2]['window_s']:g} s of the measured window. Counting "
          f"slows every syscall a little, so these runs stay out of the tables above. Reads "
          f"are `read` + `recvfrom` (sockets and files), writes `write` + `sendto` (sockets, "
          f"rrstore's worker logs and the LB's processed log).")
        w()
        w("| system | P | req/s | process | syscalls / req | reads | writes | epoll_wait | futex | other | CPU µs / req | ctx switches / req |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        names = {"rr-lb": "LB", "rr-w1": "worker 1", "rr-w2": "worker 2", "rr-w3": "worker 3",
                 "redis-primary": "primary", "redis-replica1": "replica 1",
                 "redis-replica2": "replica 2"}
        for system, pipe, c in census_rows:
            tot = {}
            for role in sorted(c["processes"], key=lambda r: list(names).index(r) if r in names else 99):
                per = c["processes"][role]["per_request"]
                rd = per.get("read", 0) + per.get("recvfrom", 0)
                wr = per.get("write", 0) + per.get("sendto", 0)
                ep, fx = per.get("epoll_wait", 0), per.get("futex", 0)
                al = per.get("all_syscalls", 0)
                row = {"all": al, "rd": rd, "wr": wr, "ep": ep, "fx": fx,
                       "ot": al - rd - wr - ep - fx, "cpu": per.get("cpu_us", 0),
                       "cs": per.get("context-switches", 0)}
                for k, v in row.items():
                    tot[k] = tot.get(k, 0) + v
                w(f"| {system} | {pipe} | {fmt_int(c['throughput'])} | {names.get(role, role)} | "
                  f"{row['all']:.2f} | {row['rd']:.2f} | {row['wr']:.2f} | {row['ep']:.2f} | "
                  f"{row['fx']:.2f} | {row['ot']:.2f} | {row['cpu']:.1f} | {row['cs']:.2f} |")
            w(f"| **{system}** | **{pipe}** | | **all** | **{tot.get('all', 0):.2f}** | "
              f"{tot.get('rd', 0):.2f} | {tot.get('wr', 0):.2f} | {tot.get('ep', 0):.2f} | "
              f"{tot.get('fx', 0):.2f} | {tot.get('ot', 0):.2f} | **{tot.get('cpu', 0):.1f}** | "
              f"{tot.get('cs', 0):.2f} |")
        w()
        d.census = {(s_, p_): c for s_, p_, c in census_rows}
    else:
        d.census = {}

    reading(d, b1, b2, b3)

    w("### Latency spectra")
    w()
    w(f"Workloads 1 and 3, best round of each system (corrected latency, log axes): "
      f"[{svg_rel}]({svg_rel})")
    w()
    w(f"![latency spectra, workloads 1 and 3]({svg_rel})")
    w()
    w("<!-- compare:end -->")
    return "\n".join(d.lines) + "\n"

def census_total(c, prefix, key):
    return sum(p["per_request"].get(key, 0) for r, p in c["processes"].items()
               if r.startswith(prefix))

def reading(d, b1, b2, b3):
    """What this run's numbers say, computed (the wording follows the data)."""
    w = d.w
    if not all(b1):
        return
    w("### Reading this run")
    w()
    rr, rd = b1
    cr, cd = rr["meta"].get("cpu_pct", {}), rd["meta"].get("cpu_pct", {})
    tr, td = rr["run"]["throughput"], rd["run"]["throughput"]
    us = lambda pct, t: pct / 100 / t * 1e6 if t else 0.0
    lb, wk = us(cr.get("rr-lb", 0), tr), us(role_sum(cr, "rr-w"), tr)
    pr, rp = us(cd.get("redis-primary", 0), td), us(role_sum(cd, "redis-replica"), td)
    lgr, lgd = us(cr.get("loadgen", 0), tr), us(cd.get("loadgen", 0), td)
    mr, md = rr["meta"].get("machine_pct", {}), rd["meta"].get("machine_pct", {})
    bullets = []
    if not (lb + wk + lgr) or not (pr + rp + lgd):
        return
    saturated = min(mr.get("busy", 0), md.get("busy", 0)) >= 170
    more = "more" if lb + wk > pr + rp else "less"
    head = (f"Workload 1 saturates the VM's CPUs, and rrstore needs {more} CPU per request."
            if saturated else f"rrstore needs {more} CPU per request in workload 1.")
    bullets.append(
        f"**{head}** In the "
        f"best rounds the VM was {mr.get('busy', 0):.0f} % (rrstore) and {md.get('busy', 0):.0f} % "
        f"(Redis) busy out of 200 %, {mr.get('kernel', 0):.0f} % and {md.get('kernel', 0):.0f} % of "
        f"it in the kernel (syscalls and the loopback TCP stack). rrstore's processes used "
        f"{lb + wk:.1f} µs of CPU per request (LB {lb:.1f}, the three workers {wk:.1f} together) "
        f"against Redis's {pr + rp:.1f} µs (primary {pr:.1f}, replicas {rp:.1f}); loadgen "
        f"itself used {lgr:.1f} and {lgd:.1f} µs. With every process sharing 2 vCPUs, throughput "
        f"should follow total CPU per request, loadgen included: Redis's total ÷ rrstore's = "
        f"{pr + rp + lgd:.1f} ÷ {lb + wk + lgr:.1f} = {(pr + rp + lgd) / (lb + wk + lgr):.2f}, "
        f"against a measured throughput ratio of {tr / td:.2f}. The LB alone costs "
        + ("more" if lb > pr else "less") + " per request than the whole Redis primary.")
    c1r, c1d = d.census.get(("rrstore", 1)), d.census.get(("redis", 1))
    if c1r and c1d:
        bullets.append(
            f"**Syscalls.** At pipeline 1 rrstore's server processes made "
            f"{census_total(c1r, 'rr-', 'all_syscalls'):.2f} syscalls per request (LB "
            f"{census_total(c1r, 'rr-lb', 'all_syscalls'):.2f}, workers "
            f"{census_total(c1r, 'rr-w', 'all_syscalls'):.2f}) against Redis's "
            f"{census_total(c1d, 'redis-', 'all_syscalls'):.2f} (primary "
            f"{census_total(c1d, 'redis-primary', 'all_syscalls'):.2f}), and "
            f"{census_total(c1r, 'rr-', 'context-switches'):.2f} context switches per request "
            f"against {census_total(c1d, 'redis-', 'context-switches'):.2f}. A Redis SET is one "
            f"read and one write on the client's socket plus a share of a replication write; "
            f"an rrstore PUT is the same read and write at the LB, plus the LB↔worker hop (a "
            f"write and a read on each side), the worker's log write and its peer sends, each "
            f"batched per loop turn but with only a few requests per turn at pipeline 1. The "
            f"LB's own futex calls ({census_total(c1r, 'rr-lb', 'futex'):.2f} per request) are "
            f"wake-ups of its processed-log thread.")
    if all(b2):
        a, b = b2
        ca, cb = a["meta"].get("cpu_pct", {}), b["meta"].get("cpu_pct", {})
        ta, tb = a["run"]["throughput"], b["run"]["throughput"]
        r16, r1 = ta / tb, tr / td
        verb = ("narrows the gap" if r16 > r1 + 0.1 else
                "hardly changes the ratio" if r16 >= r1 - 0.1 else "widens the gap")
        bullets.append(
            f"**Pipeline 16 {verb}** ({r16:.2f}× against {r1:.2f}× at pipeline "
            f"1): batching spreads the per-message syscalls over many requests (the LB's "
            f"`rrstore stats` count falls to "
            f"{a['meta'].get('lb_syscalls_per_request', 0):.2f} socket reads+writes per request), "
            f"and what remains is per-record work: the LB at {us(ca.get('rr-lb', 0), ta):.1f} µs "
            f"per request, the workers at {us(role_sum(ca, 'rr-w'), ta):.1f} µs together (each "
            f"record is applied, hashed, logged and later compacted on all three), against Redis's primary at "
            f"{us(cb.get('redis-primary', 0), tb):.1f} µs and replicas at "
            f"{us(role_sum(cb, 'redis-replica'), tb):.1f} µs.")
    comp = []
    for label, b_ in (("workload 1", b1[0]), ("workload 2", b2[0])):
        if not b_:
            continue
        th = b_["meta"].get("thread_cpu_pct", {})
        c_ = sum(v for k, v in th.items() if k.startswith("rr-w") and k.endswith("/rrstore-compact"))
        tot = server_cpu(b_["meta"], "rrstore")
        if tot:
            comp.append(f"{c_:.0f} % of a core in {label} ({c_ / tot * 100:.0f} % of rrstore's "
                        f"server CPU)")
    if comp:
        bullets.append(
            "**Log compaction is part of rrstore's cost under sustained overwrites.** Every "
            "PUT overwrites one of 100,000 keys, so a sealed 64 MiB log segment is almost all "
            "dead records and the workers' background compactors (thread `rrstore-compact`) "
            "rewrite it soon after it rolls: in the best rounds they used "
            + " and ".join(comp) + ", counted in the workers' CPU above. Redis with "
            "`--appendonly no` has no such work (with AOF it rewrites the file in a forked "
            "child once it has doubled in size; a child's CPU lands in *other*).")
    if all(b3):
        a = b3[0]["run"]
        share = a["rate_requested"] / tr if tr else 0
        bullets.append(
            f"**Workload 3 asks rrstore for {share * 100:.0f} % of its own best closed-loop "
            f"throughput** ({fmt_int(a['rate_requested'])} of {fmt_int(tr)} req/s) while Redis "
            f"runs at 50 % of its own: rrstore is much closer to saturation, so queueing (and any "
            f"burst of other load on the VM) shows up in its tail first. With "
            f"{a['connections']} connections at pipeline 1 at most {a['connections']} requests "
            f"are in flight, so the schedule holds only while the round trip stays under "
            f"{a['connections']} ÷ rate = {a['connections'] / a['rate_requested'] * 1e6:.0f} µs; "
            f"rrstore's mean round trip in its best workload-1 round was "
            f"{rr['run']['latency_us']['mean']:.0f} µs (Redis's {rd['run']['latency_us']['mean']:.0f} µs), "
            f"so a short stall leaves a backlog that the little spare capacity drains slowly, "
            f"and the corrected latency of everything scheduled meanwhile counts it. Target 3 "
            f"cannot be met while target 1's throughput is far below 1.0×.")
    others = []
    for prefix in ("w1", "w2", "w3", "fsi", "fsn"):
        for system in ("rrstore", "redis"):
            for x in d.runs(prefix, system):
                o = x["meta"].get("machine_pct", {}).get("other")
                if o is not None:
                    others.append((o, f"{prefix} {system} round {x['round']}"))
    noisy = [n for o, n in others if o >= 20]
    if others:
        seen = (f"in this run *other* stayed at or below {max(o for o, _ in others):.0f} % of a "
                f"core in every round" if not noisy else
                f"in this run {len(noisy)} of {len(others)} rounds had *other* ≥ 20 % of a core "
                f"({', '.join(noisy)})")
    else:
        seen = "no CPU figures were recorded"
    bullets.append(
        "**Noise.** The VM's 2 vCPUs are shared with another engineer's jobs; " + seen
        + ". Rounds with a high *other* column shared the CPUs and are slower for that reason "
        "alone. Even quiet rounds of the same system differ by 5–10 %, so read ratios within "
        "±15 % as ties.")
    for b_ in bullets:
        w(f"- {b_}")
    w()

def cmd_doc(out, doc, svg_rel):
    section = render(out, svg_rel)
    if not doc:
        sys.stdout.write(section)
        return
    text = open(doc).read()
    begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
    if begin in text and end in text:
        i = text.index(begin)
        j = text.index(end) + len(end)
        if j < len(text) and text[j] == "\n":
            j += 1
        text = text[:i] + section + text[j:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(doc, "w") as f:
        f.write(text)
    print(f"wrote the 'rrstore vs Redis' section of {doc}")

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "meta":
        cmd_meta(*args)
    elif cmd == "best":
        p = best(args[1:], args[0])
        if p:
            print(p)
    elif cmd == "halfrate":
        p = best(args, "closed")
        if p:
            print(int(load(p)["throughput"] * 0.5))
    elif cmd == "census":
        cmd_census(*args)
    elif cmd == "brief":
        cmd_brief(args[0])
    elif cmd == "env":
        cmd_env(args[0])
    elif cmd == "doc":
        cmd_doc(args[0], args[1], args[2])
    else:
        sys.exit(f"unknown command {cmd}")
PY
py() { HZ=$HZ RR=$RR LG=$LG DUR=$DUR WARM=$WARM ROUNDS=$ROUNDS QUICK=$QUICK \
    CONNS=$CONNS VALUE=$VALUE KEYS=$KEYS python3 "$tmp/bench.py" "$@"; }

# ---------------------------------------------------------------- build, install, versions
log "building release binaries"
cargo build --release --workspace
RR=$PWD/target/release/rrstore
LG=$PWD/target/release/loadgen

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
echo "settings: QUICK=$QUICK ROUNDS=$ROUNDS duration ${DUR}s warmup ${WARM}s budget ${BUDGET}s, results in $OUT"

for p in "$RR_PORT" "$RR_CONTROL_PORT" "${REDIS_PORTS[@]}"; do
    port_free "$p" || die "127.0.0.1:$p is already in use"
done
# stale results of an earlier run would be mixed into the tables
rm -f "$OUT"/w[123]-*.json "$OUT"/fs[in]-*.json "$OUT"/census-*.json "$OUT"/env.json "$OUT"/latency.svg
py env "$OUT"

# ---------------------------------------------------------------- rrstore and Redis
rr_ready() {
    local n
    n=$("$RR" members --control "$RR_CONTROL" 2>/dev/null | awk '$3 == "active"' | wc -l)
    ((n == 3))
}

start_rrstore() { # FSYNC
    local dir
    dir=$(mktemp -d "$tmp/rrstore-$1.XXXX")
    log "starting rrstore: LB 127.0.0.1:$RR_PORT (control $RR_CONTROL) + 3 workers, --fsync $1"
    start_bg rr-lb "$RR" lb --listen "127.0.0.1:$RR_PORT" --control "$RR_CONTROL" \
        --processed-log "$dir/processed.log"
    local i
    for i in 1 2 3; do
        start_bg "rr-w$i" "$RR" worker --lb "$RR_CONTROL" --listen 127.0.0.1:0 \
            --data-dir "$dir/w$i" --fsync "$1"
    done
    wait_until 60 "3 active rrstore workers" rr_ready
    "$RR" members --control "$RR_CONTROL"
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

RUNS=0
run_one() { # NAME SYSTEM LABEL LOADGEN-ARGS...
    local name=$1 system=$2 label=$3
    shift 3
    local need
    need=$(awk -v d="$DUR" -v w="$WARM" 'BEGIN { printf "%d", d + w + 5 }')
    if ((SECONDS + need > BUDGET)); then
        log "SKIPPED $name: ${BUDGET}s budget (at ${SECONDS}s, a run takes ~${need}s)"
        return 0
    fi
    quiet_gate
    local json=$OUT/$name.json target
    if [[ $system == rrstore ]]; then
        target=rrstore://127.0.0.1:$RR_PORT
        "$RR" stats --control "$RR_CONTROL" >"$tmp/stats.before"
    else
        target=redis://127.0.0.1:${REDIS_PORTS[0]}
        : >"$tmp/stats.before"
    fi
    log "run $name: $label"
    "$LG" --target "$target" --connections "$CONNS" --value-size "$VALUE" --keys "$KEYS" \
        --duration "$DUR" --warmup "$WARM" --quiet --label "$label" --json "$json" "$@" \
        >"$tmp/loadgen.out" 2>&1 &
    local lg=$!
    track "$lg"
    ROLE_PID[loadgen]=$lg
    # CPU is sampled inside loadgen's measured window (ending a little early,
    # while loadgen still runs): these sleeps time the measurement, they do
    # not wait for anything to become ready
    sleep "$WARM"
    snap >"$tmp/cpu.before"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    sleep "$SAMPLE"
    snap >"$tmp/cpu.after"
    t1=$(date +%s.%N)
    wait "$lg" || rc=$?
    forget_pid "$lg"
    unset 'ROLE_PID[loadgen]'
    sed 's/^/    /' "$tmp/loadgen.out"
    if [[ $system == rrstore ]]; then
        "$RR" stats --control "$RR_CONTROL" >"$tmp/stats.after"
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

# ---------------------------------------------------------------- phase A: defaults
start_rrstore interval
start_redis no

rr_lbl="rrstore 3 workers, fsync interval"
rd_lbl="Redis primary+2 replicas, no persistence"

log "== workload 1: closed loop, pipeline 1"
for ((r = 1; r <= ROUNDS; r++)); do
    run_one "w1-rrstore-r$r" rrstore "w1 $rr_lbl, P1 (r$r)" --pipeline 1
    run_one "w1-redis-r$r" redis "w1 $rd_lbl, P1 (r$r)" --pipeline 1
done

log "== workload 2: closed loop, pipeline 16"
for ((r = 1; r <= ROUNDS; r++)); do
    run_one "w2-rrstore-r$r" rrstore "w2 $rr_lbl, P16 (r$r)" --pipeline 16
    run_one "w2-redis-r$r" redis "w2 $rd_lbl, P16 (r$r)" --pipeline 16
done

mapfile -t redis_w1 < <(ls "$OUT"/w1-redis-r*.json 2>/dev/null | grep -v '\.meta\.json$' || true)
rate=""
((${#redis_w1[@]})) && rate=$(py halfrate "${redis_w1[@]}")
if [[ -n $rate && $rate -gt 0 ]]; then
    log "== workload 3: open loop, pipeline 1, $rate req/s (50% of Redis's best w1)"
    for ((r = 1; r <= ROUNDS; r++)); do
        run_one "w3-rrstore-r$r" rrstore "w3 $rr_lbl, open $rate/s (r$r)" --pipeline 1 --rate "$rate"
        run_one "w3-redis-r$r" redis "w3 $rd_lbl, open $rate/s (r$r)" --pipeline 1 --rate "$rate"
    done
else
    log "SKIPPED workload 3: no Redis workload-1 result to take 50% of"
fi

log "== syscall census: every server process under perf stat, pipeline 1 and 16"
census census-rrstore-p1 rrstore 1
census census-redis-p1 redis 1
census census-rrstore-p16 rrstore 16
census census-redis-p16 redis 16

# ---------------------------------------------------------------- phase B: fsync every second on both
log "== persistence 1: rrstore --fsync interval vs Redis --appendonly yes --appendfsync everysec"
stop_roles redis-
start_redis yes
for ((r = 1; r <= ROUNDS; r++)); do
    run_one "fsi-rrstore-r$r" rrstore "w1 rrstore fsync interval (r$r)" --pipeline 1
    run_one "fsi-redis-r$r" redis "w1 Redis AOF everysec (r$r)" --pipeline 1
done

# ---------------------------------------------------------------- phase C: no fsync on either
log "== persistence 2: rrstore --fsync never vs Redis --appendonly no"
stop_roles rr-w
stop_roles rr-lb
stop_roles redis-
start_rrstore never
start_redis no
for ((r = 1; r <= ROUNDS; r++)); do
    run_one "fsn-rrstore-r$r" rrstore "w1 rrstore fsync never (r$r)" --pipeline 1
    run_one "fsn-redis-r$r" redis "w1 Redis appendonly no (r$r)" --pipeline 1
done
stop_roles rr-w
stop_roles rr-lb
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
