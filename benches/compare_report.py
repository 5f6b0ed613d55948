"""benches/compare.sh's helpers and its report.

`python3 benches/compare_report.py COMMAND ARGS...`, called by compare.sh
(through its `py` function, which passes the run's settings in the
environment): `meta` (CPU and LB counters of one run), `census` (perf stat
counts), `catchup` (the joining worker's timings and every worker's RSS),
`best`, `halfrate`, `brief`, `env`, and `doc`, which renders the section
between <!-- compare:begin --> and <!-- compare:end --> of docs/BENCHMARKS.md
from the JSON files in the results folder.
"""
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

def read_rss(path):
    """`ROLE KB` lines (compare.sh's rss_of_workers) as {role: bytes}."""
    rss = {}
    try:
        for line in open(path):
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                rss[parts[0]] = int(parts[1]) * 1024
    except OSError:
        pass
    return rss

# `<time> <LEVEL> rrstore lb: <message>` or `... rrstore worker 3: <message>`
# (src/main.rs, init_logging).
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z?)\s+\w+\s+rrstore (\w+)(?: (\d+))?: (.*)$")

def log_events(path):
    """(epoch seconds, message) of every log line of an rrstore daemon; a
    worker's messages are given back as `worker N: <message>`."""
    events = []
    try:
        for line in open(path, errors="replace"):
            m = LOG_LINE.match(line.rstrip("\n"))
            if not m:
                continue
            ts = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=datetime.timezone.utc)
            msg = m.group(4) if m.group(3) is None else f"worker {m.group(3)}: {m.group(4)}"
            events.append((ts.timestamp(), msg))
    except OSError:
        pass
    return events

def role_ids(logs_dir):
    """{role: worker ID} from each worker's `registered id=N` line (its stdout,
    in logs/ROLE.log). Roles are numbered in start order; IDs are handed out by
    the LB in registration order, so the two need not match."""
    ids = {}
    for path in glob.glob(f"{logs_dir}/rr-w*.log"):
        role = os.path.basename(path)[:-4]
        try:
            for line in open(path, errors="replace"):
                m = re.match(r"registered id=(\d+) ", line)
                if m:
                    ids[role] = int(m.group(1))
                    break
        except OSError:
            pass
    return ids

def cmd_catchup(out, t0, t1, keys, fill_json, logs_dir, joiner, rss_empty, rss_loaded,
                rss_joined, cpu_before, cpu_after, verify_out, busy_before="0"):
    """The joining worker's (role `joiner`) timeline from its log and the
    LB's, the CPU every process used meanwhile, and RSS."""
    joiner_log, lb_log = f"{logs_dir}/{joiner}.log", f"{logs_dir}/rr-lb.log"
    hz = int(os.environ.get("HZ", "100"))
    value = int(os.environ.get("VALUE", "64"))
    keys = int(keys)
    t0 = float(t0)
    res = {"records": keys, "value_size": value, "raw_bytes": keys * (8 + value),
           "t_start": t0, "t_active_polled": float(t1) if t1 else None,
           "vm_busy_before_pct": int(busy_before)}
    fill = load(fill_json) or {}
    res["fill"] = {k: fill.get(k) for k in ("throughput", "requests", "errors", "unfinished",
                                             "duration_s", "pipeline", "connections")}
    wev, lev = log_events(joiner_log), log_events(lb_log)
    jid = reg = None
    for t, msg in wev:
        m = re.match(r"worker (\d+): registered with LB", msg)
        if m:
            jid, reg = int(m.group(1)), t
            break
    active = None
    if jid is not None:
        active = next((t for t, msg in lev
                       if re.match(rf"worker {jid} caught up\b.*now active", msg)), None)
    catchups = []
    for t, msg in wev:
        m = re.match(r"worker \d+: catch-up from worker (\d+): (\d+) records", msg)
        if m and (active is None or t <= active + 0.001):
            catchups.append({"t": t, "from": int(m.group(1)), "records": int(m.group(2))})
    res.update({"joiner_role": joiner, "role_ids": role_ids(logs_dir), "joiner_id": jid,
                "t_registered": reg, "t_active_lb": active, "catchups": catchups})
    got = sum(c["records"] for c in catchups)
    res["caught_up_records"] = got
    if active is not None:
        res["start_to_active_s"] = round(active - t0, 3)
        res["start_to_active_rate"] = round(got / (active - t0)) if active > t0 else None
    if reg is not None and catchups:
        done = catchups[-1]["t"]
        res["t_catchup_done"] = done
        res["start_to_registered_s"] = round(reg - t0, 3)
        res["catchup_s"] = round(done - reg, 3)
        res["catchup_rate"] = round(got / (done - reg)) if done > reg else None
        if active is not None:
            res["done_to_active_s"] = round(active - done, 3)
    # CPU over the join: the joiner did not exist before, so all its ticks count
    wall = (float(t1) if t1 else t0) - t0
    if wall > 0:
        b, a = read_snap(cpu_before), read_snap(cpu_after)
        cpu, threads = {}, {}
        for role, v in a.items():
            if role in ("machine", "_threads"):
                continue
            before = b[role][1] if role in b and b[role][0] == v[0] else 0
            cpu[role] = round((v[1] - before) / hz / wall * 100, 1)
        for key, ticks in a["_threads"].items():
            role = key.split("/", 1)[0]
            if role.startswith("rr-"):
                threads[key] = round((ticks - b["_threads"].get(key, 0)) / hz / wall * 100, 1)
        res["wall_s"] = round(wall, 3)
        res["cpu_pct"] = cpu
        res["thread_cpu_pct"] = threads
        if "machine" in a and "machine" in b:
            d = [x - y for x, y in zip(a["machine"], b["machine"])]
            busy = (d[0] + d[1] + d[2] + d[5] + d[6]) / hz / wall * 100
            res["machine_busy_pct"] = round(busy, 1)
            res["machine_other_pct"] = round(max(0.0, busy - sum(cpu.values())), 1)
    res["rss_bytes"] = {"empty": read_rss(rss_empty), "loaded": read_rss(rss_loaded),
                        "joined": read_rss(rss_joined)}
    try:
        text = open(verify_out).read()
    except OSError:
        text = ""
    res["verify"] = text.strip().splitlines()
    res["identical"] = text.strip().endswith("identical")
    with open(out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    rate = res.get("start_to_active_rate")
    print(f"  => joiner {jid}: {got} records caught up; start to active "
          f"{res.get('start_to_active_s', '?')} s ({rate or '?'} records/s), catch-up stream "
          f"{res.get('catchup_s', '?')} s ({res.get('catchup_rate') or '?'} records/s); "
          f"verify {'identical' if res['identical'] else 'NOT identical'}")
    for phase in ("empty", "loaded", "joined"):
        r = res["rss_bytes"][phase]
        print(f"     RSS {phase}: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(r.items())))

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
        "short_duration_s": float(os.environ["SHORT_DUR"]),
        "short_warmup_s": float(os.environ["SHORT_WARM"]),
        "scale_duration_s": float(os.environ["SCALE_DUR"]),
        "scale_warmup_s": float(os.environ["SCALE_WARM"]),
        "fill_keys": int(os.environ["FILL_KEYS"]),
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

def worker_roles(cpu):
    """rr-w1, rr-w2, ... present in a CPU dict, in worker order."""
    return sorted((k for k in cpu if re.fullmatch(r"rr-w\d+", k)), key=lambda k: int(k[4:]))

def cpu_cell(meta, system):
    cpu = meta.get("cpu_pct", {})
    if not cpu:
        return "–"
    if system == "rrstore":
        ws = [cpu[k] for k in worker_roles(cpu)]
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

    def scaling(self):
        """[(workers, run)] of the scaling steps, by worker count."""
        ns = set()
        for p in glob.glob(f"{self.out}/scale*-rrstore-r*.json"):
            m = re.search(r"/scale(\d+)-rrstore-r\d+\.json$", p)
            if m:
                ns.add(int(m.group(1)))
        res = []
        for n in sorted(ns):
            b = self.best(self.runs(f"scale{n}", "rrstore"), "closed")
            if b:
                res.append((n, b))
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

ALL_PREFIXES = ["w1", "w2", "w3", "w4", "rd", "w5", "fsi", "fsn"]

def round_others(d):
    """(other %, name) of every round that recorded it."""
    others = []
    scale = [f"scale{n}" for n, _ in d.scaling()]
    for prefix in ALL_PREFIXES + scale:
        for system in ("rrstore", "redis"):
            for x in d.runs(prefix, system):
                o = x["meta"].get("machine_pct", {}).get("other")
                if o is not None:
                    others.append((o, f"{prefix} {system} round {x['round']}"))
    return others

def noisy_rounds(d):
    """(rounds with other ≥ 20 %, rounds, median other %), or None."""
    others = sorted(o for o, _ in round_others(d))
    if not others:
        return None
    return (sum(o >= 20 for o in others), len(others), others[len(others) // 2])

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
        "(`w1-rrstore-r1.json` …, `scale3-rrstore-r1.json` for the scaling steps), a "
        "`.meta.json` beside each (CPU per process and per thread over the measured window, "
        "the VM's busy/other/steal, the LB's `rrstore stats` deltas), `census-*.json` (perf "
        "stat counts), `fill-rrstore.json` (the load before the catch-up), `catchup.json` (the "
        "joining worker's timeline, CPU and every worker's RSS) and `env.json`.")
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
    noisy = noisy_rounds(d)
    if noisy and noisy[0] * 2 > noisy[1]:
        w(f"**This run was not quiet.** In {noisy[0]} of its {noisy[1]} rounds other processes "
          f"than the benchmark's used ≥ 20 % of a core (median {noisy[2]:.0f} %, column *other*); "
          "they took CPU from whichever system was running, so absolute figures are lower "
          "and ratios noisier than in a quiet run.")
        w()
    w("**Versions.** " + f"{env.get('rrstore', '?')}; {env.get('redis', '?')}; "
      f"{env.get('loadgen', '?')}; {env.get('rustc', '?')}.")
    w()
    w("**Setups** (loopback only):")
    w()
    w("- rrstore: `rrstore lb --listen 127.0.0.1:17059 --control 127.0.0.1:17060` and three "
      "`rrstore worker --lb 127.0.0.1:17060 --data-dir <fresh temp dir> --fsync F`, all with "
      "`--secret-file` (a fresh `rrstore keygen` secret: the LB, worker and admin links "
      "authenticate once per connection, the client port needs nothing); "
      "loadgen talks to the LB. Every PUT crosses the LB, goes to one worker (round robin), "
      "which logs it, sends it to both peers and confirms; the LB answers. The LB's default "
      "`--ack local` confirms once that worker has logged it (its peers have it queued).")
    w("- Redis: `redis-server --port 6390 --save '' --appendonly no --repl-diskless-sync-delay 0` and two replicas "
      "`--replicaof 127.0.0.1 6390` with the same flags (`--appendonly yes --appendfsync "
      "everysec` on all three for the persistence rows); loadgen talks to the primary. "
      "Replication is asynchronous: Redis answers before the replicas have the write "
      "(except in workload 5, where each SET is followed by `WAIT 2 0`).")
    w("- Persistence per row: workloads 1–5, the reads run, the census, the scaling and catch-up runs use "
      "rrstore `--fsync interval` (each worker's log fdatasynced once a second) against Redis "
      "with no persistence (`--save '' --appendonly no`); only the *Persistence settings "
      "matched* rows change it (rrstore `--fsync interval` vs Redis AOF `everysec`, rrstore "
      "`--fsync never` vs Redis `appendonly no`). Workload 5 adds rrstore `lb --ack all`.")
    w(f"- loadgen: {env.get('connections', 50)} connections, one thread, SET/PUT of "
      f"{env.get('value_size', 64)} B values, keys uniform over {fmt_int(env.get('keys', 100000))}; "
      f"each run {env.get('duration_s', '?'):g} s measured after {env.get('warmup_s', '?'):g} s "
      f"warmup (workloads 4 and 5: {env.get('short_duration_s', '?'):g} s after "
      f"{env.get('short_warmup_s', '?'):g} s; each scaling step: one run of "
      f"{env.get('scale_duration_s', '?'):g} s after {env.get('scale_warmup_s', '?'):g} s); "
      f"{env.get('rounds', '?')} round(s) per system. Closed loop: a connection sends "
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
    w4 = (d.runs("w4", "rrstore"), d.runs("w4", "redis"))
    w5 = (d.runs("w5", "rrstore"), d.runs("w5", "redis"))
    b4 = (d.best(w4[0], "closed"), d.best(w4[1], "closed"))
    b5 = (d.best(w5[0], "closed"), d.best(w5[1], "closed"))
    scale = d.scaling()
    cu = load(f"{out}/catchup.json")

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
    target_rows(d, b4, b5, scale, cu)
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

    section_w4(d, w4, b4)
    section_reads(d)
    section_w5(d, w5, b5)

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

    section_scaling(d, scale)
    section_catchup(d, cu)

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
                          ("w4", "4 (1 KiB, P1)"), ("rd", "reads (90 % GET, P1)"),
                          ("w5", "5 (ack all, P1)"),
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

    reading(d, b1, b2, b3, b4, b5, scale, cu)

    w("### Latency spectra")
    w()
    w(f"Workloads 1 and 3, best round of each system (corrected latency, log axes): "
      f"[{svg_rel}]({svg_rel})")
    w()
    w(f"![latency spectra, workloads 1 and 3]({svg_rel})")
    w()
    w("<!-- compare:end -->")
    return "\n".join(d.lines) + "\n"

# ---------------------------------------------------------------- targets 4, 5, 7
RR_ACK_ALL = "rrstore, 3 workers, `--ack all`, `--fsync interval`"
RD_WAIT = "Redis, SET + `WAIT 2 0`, no persistence"

def us_per_req(pct, tput):
    return pct / 100 / tput * 1e6 if tput else 0.0

def mb(b):
    return f"{b / 1e6:.1f}"

def catchup_rss(cu):
    """(largest RSS of a worker holding the records, its role, the phase)."""
    best_ = (0, None, None)
    for phase in ("loaded", "joined"):
        for role, b in cu.get("rss_bytes", {}).get(phase, {}).items():
            if b > best_[0]:
                best_ = (b, role, phase)
    return best_

def joiner_role(cu):
    # compare.sh starts the joiner as role rr-w4 (files written before the
    # role was recorded lack it)
    return cu.get("joiner_role", "rr-w4")

def donor_roles(cu):
    """Roles of the workers that streamed the catch-up; None if the run did
    not record which role had which worker ID."""
    ids = cu.get("role_ids")
    if not ids:
        return None
    by_id = {i: r for r, i in ids.items()}
    return {by_id[c["from"]] for c in cu.get("catchups", []) if c["from"] in by_id}

def role_label(cu, role):
    """`loaded worker 2 (ID 3)`, `the joiner (ID 4)`."""
    i = (cu.get("role_ids") or {}).get(role)
    name = "the joiner" if role == joiner_role(cu) else f"loaded worker {role[4:]}"
    return f"{name} (ID {i})" if i is not None else name

def target_rows(d, b4, b5, scale, cu):
    w = d.w
    if all(b4):
        a, b = b4[0]["run"], b4[1]["run"]
        ok = a["throughput"] >= b["throughput"]
        w(f"| 4 | PUT 1 KiB, 50 conns, P1, max rate; rrstore 3 workers | ≥ 1.0× Redis SET 1 KiB "
          f"throughput | {ratio(a['throughput'], b['throughput'])} throughput "
          f"({fmt_int(a['throughput'])} vs {fmt_int(b['throughput'])} req/s); p99 "
          f"{fmt_int(a['latency_us']['p99'])} vs {fmt_int(b['latency_us']['p99'])} µs | {verdict(ok)} |")
    else:
        w("| 4 | PUT 1 KiB, 50 conns, P1, max rate | ≥ 1.0× Redis SET 1 KiB throughput | not run | |")
    if all(b5):
        a, b = b5[0]["run"], b5[1]["run"]
        ok = a["throughput"] >= 1.5 * b["throughput"] and a["errors"] == 0
        w(f"| 5 | PUT 64 B, 50 conns, P1; rrstore `--ack all` vs Redis SET + `WAIT 2 0` per write | "
          f"≥ 1.5× Redis throughput | {ratio(a['throughput'], b['throughput'])} throughput "
          f"({fmt_int(a['throughput'])} vs {fmt_int(b['throughput'])} req/s); p99 "
          f"{fmt_int(a['latency_us']['p99'])} vs {fmt_int(b['latency_us']['p99'])} µs | {verdict(ok)} |")
    else:
        w("| 5 | PUT 64 B, 50 conns, P1; `--ack all` vs SET + `WAIT 2 0` | ≥ 1.5× Redis | not run | |")
    if scale:
        cells = ", ".join(f"{n}: {fmt_int(x['run']['throughput'])}" for n, x in scale)
        w(f"| 7a | PUT 64 B, 50 conns, P1, rrstore alone with {'/'.join(str(n) for n, _ in scale)} "
          f"workers | none (results only) | req/s by workers: {cells} | – |")
    else:
        w("| 7a | rrstore with 1/2/3/5/8 workers | none | not run | |")
    if cu and cu.get("start_to_active_rate"):
        rate = cu["start_to_active_rate"]
        pure = (f"; catch-up stream alone {fmt_int(cu['catchup_rate'])} records/s "
                f"({cu['catchup_s']:.3f} s)" if cu.get("catchup_rate") else "")
        note = "" if cu.get("identical") else "; **verify did not find the workers identical**"
        w(f"| 7b | a 4th worker joins 3 holding {fmt_int(cu['records'])} records of "
          f"{cu['value_size']} B | ≥ 1M records/s absorbed | start → active at the LB: "
          f"{fmt_int(cu['caught_up_records'])} records in {cu['start_to_active_s']:.3f} s = "
          f"{fmt_int(rate)} records/s{pure}{note} | {verdict(rate >= 1e6 and cu.get('identical'))} |")
    else:
        w("| 7b | a worker joins 1M records | ≥ 1M records/s | not measured | |")
    if cu and cu.get("rss_bytes", {}).get("loaded"):
        top, role, phase = catchup_rss(cu)
        raw = cu["raw_bytes"]
        empty = cu["rss_bytes"].get("empty", {})
        before = max(empty.values()) if empty else 0
        who = role_label(cu, role)
        w(f"| 7c | RSS of a worker holding {fmt_int(cu['records'])} records of {cu['value_size']} B | "
          f"≤ 1.5× the raw data ({mb(raw)} MB: 8 B id + {cu['value_size']} B each) | largest: "
          f"{mb(top)} MB = {top / raw:.2f}× ({who}{', after the join' if phase == 'joined' else ''}); "
          f"{mb(before)} MB before loading | {verdict(top <= 1.5 * raw)} |")
    else:
        w("| 7c | worker RSS with 1M records | ≤ 1.5× raw | not measured | |")

def section_w4(d, w4, b4):
    w = d.w
    if not any(w4):
        return
    env = d.env
    w("### 4. PUT/SET 1 KiB values, 50 connections, pipeline 1, closed loop")
    w()
    w(f"Workload 1 with 1,024-byte values, in the same phase and processes as workloads 1–3 "
      f"(rrstore `--fsync interval`, Redis no persistence), {env.get('short_duration_s', '?'):g} s "
      f"runs after {env.get('short_warmup_s', '?'):g} s warmup.")
    w()
    if all(b4):
        d.summary_table(b4[0], b4[1], "rrstore, 3 workers, `--fsync interval`",
                        "Redis, primary + 2 replicas, no persistence")
    w("All rounds (latencies in µs):")
    w()
    d.rounds_table([(0, "rrstore", "fsync interval, 1 KiB", w4[0]),
                    (0, "redis", "no persistence, 1 KiB", w4[1])])

def section_reads(d):
    w = d.w
    rr, rd = d.runs("rd", "rrstore"), d.runs("rd", "redis")
    if not (rr or rd):
        return
    env = d.env
    w("### Reads: 90 % GET, 10 % PUT/SET, 64 B, 50 connections, pipeline 1, closed loop (no target)")
    w()
    w(f"Not one of the issue's targets: what a user who adds `--get-ratio` sees. The same "
      f"processes as workloads 1–4, right after workload 2, so the stores hold a 64 B value "
      f"for every id (every GET finds one), {env.get('short_duration_s', '?'):g} s runs after "
      f"{env.get('short_warmup_s', '?'):g} s warmup. loadgen sends every request to port "
      "5059 or to the Redis primary, so Redis answers each GET from the primary alone, "
      "with nothing to replicate, while rrstore's crosses the LB to a worker (round robin) "
      "and back, and the worker answers once it holds every write the LB acknowledged "
      "before the GET arrived.")
    w()
    a, b = d.best(rr, "closed"), d.best(rd, "closed")
    if a and b:
        d.summary_table(a, b, "rrstore, 3 workers, `--fsync interval`",
                        "Redis, primary + 2 replicas, no persistence")
    w("All rounds (latencies in µs):")
    w()
    d.rounds_table([(0, "rrstore", "fsync interval, 90 % GET", rr),
                    (0, "redis", "no persistence, 90 % GET", rd)])

def section_w5(d, w5, b5):
    w = d.w
    if not any(w5):
        return
    env = d.env
    w("### 5. Writes acknowledged by every replica: rrstore `--ack all` vs Redis SET + `WAIT 2 0`")
    w()
    w("64 B values, 50 connections, pipeline 1, closed loop, "
      f"{env.get('short_duration_s', '?'):g} s runs after {env.get('short_warmup_s', '?'):g} s "
      "warmup. rrstore: a fresh cluster whose LB runs `--ack all`, so a worker confirms a PUT "
      "only once every active worker has applied it (applied to its in-memory store; with "
      "`--fsync interval` its log is written in the same loop turn and fdatasynced within a "
      "second). Redis: the processes "
      "of the `appendonly no` persistence rows (no persistence), and loadgen `--redis-wait 2`: "
      "each SET is followed on the same connection by `WAIT 2 0`, which answers once both "
      "replicas have acknowledged it (in memory; nothing is written to disk); the pair is one "
      "request, timed from the SET's send to WAIT's reply. Either way a write is confirmed once "
      "all three copies hold it.")
    w()
    if all(b5):
        d.summary_table(b5[0], b5[1], RR_ACK_ALL, RD_WAIT)
    w("All rounds (latencies in µs):")
    w()
    d.rounds_table([(0, "rrstore", "ack all, fsync interval", w5[0]),
                    (0, "redis", "SET + WAIT 2 0, no persistence", w5[1])])

def section_scaling(d, scale):
    w = d.w
    if not scale:
        return
    env = d.env
    w("### 7a. rrstore alone with 1 to 8 workers (64 B, 50 connections, pipeline 1, closed loop)")
    w()
    w(f"A fresh cluster per step (`--fsync interval`, `--ack local`), one run of "
      f"{env.get('scale_duration_s', '?'):g} s after {env.get('scale_warmup_s', '?'):g} s warmup. "
      "No target: every worker applies and logs every record, and the VM has only 2 vCPUs, which "
      "the LB, every worker and loadgen share, so more workers than cores add work per request, "
      "not capacity.")
    w()
    w("| workers | req/s | p50 µs | p99 µs | LB CPU % | workers CPU %, sum | server CPU µs / req | of which workers | loadgen CPU % | other % |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for n, x in scale:
        r, m = x["run"], x["meta"]
        cpu = m.get("cpu_pct", {})
        t = r["throughput"]
        lb, wk = cpu.get("rr-lb", 0), role_sum(cpu, "rr-w")
        w(f"| {n} | {fmt_int(t)} | {r['latency_us']['p50']} | {r['latency_us']['p99']} | "
          f"{lb:.0f} | {wk:.0f} | {us_per_req(lb + wk, t):.1f} | {us_per_req(wk, t):.1f} | "
          f"{cpu.get('loadgen', 0):.0f} | {m.get('machine_pct', {}).get('other', '–')} |")
    w()

def section_catchup(d, cu):
    w = d.w
    if not cu:
        return
    n, v = cu["records"], cu["value_size"]
    f = cu.get("fill") or {}
    w(f"### 7b, 7c. A worker joining {fmt_int(n)} records; memory")
    w()
    w(f"A fresh cluster of 3 workers (`--fsync interval`) is loaded with ids 0…{fmt_int(n - 1)}, "
      f"{v} B each, every id once (`loadgen --fill --keys {n} --pipeline 64`, 50 connections); "
      "once `rrstore members` shows every worker holding them all, a 4th worker starts on an "
      "empty data dir. Its timeline comes from the log lines (ms timestamps) of the worker "
      "(`registered with LB`, `catch-up from worker N: K records`) and of the LB (`worker N caught "
      "up …; now active`); the start is taken by the script just before it spawns the worker. "
      "RSS is `VmRSS` from `/proc/PID/status`.")
    w()
    w("| step | result |")
    w("|---|---|")
    if f.get("throughput"):
        w(f"| load: {fmt_int(f.get('requests') or 0)} PUTs at pipeline {f.get('pipeline')} | "
          f"{f.get('duration_s', 0):.2f} s, {fmt_int(f['throughput'])} req/s, "
          f"{f.get('errors')} errors, {f.get('unfinished')} unfinished |")
    if cu.get("start_to_registered_s") is not None:
        w(f"| joiner started → registered with the LB | {cu['start_to_registered_s']:.3f} s |")
    for c in cu.get("catchups", []):
        w(f"| catch-up stream from worker {c['from']} | {fmt_int(c['records'])} records |")
    if cu.get("catchup_s") is not None:
        w(f"| registered → end of its catch-up (links to peers, request, stream, apply) | "
          f"{cu['catchup_s']:.3f} s = **{fmt_int(cu.get('catchup_rate') or 0)} records/s** |")
    if cu.get("done_to_active_s") is not None:
        w(f"| end of catch-up → active at the LB (READY, the LB's check) | {cu['done_to_active_s']:.3f} s |")
    if cu.get("start_to_active_s") is not None:
        w(f"| **started → active at the LB** | **{cu['start_to_active_s']:.3f} s = "
          f"{fmt_int(cu.get('start_to_active_rate') or 0)} records/s** |")
    else:
        w("| started → active at the LB | not seen in the LB's log |")
    cpu = cu.get("cpu_pct", {})
    jr = joiner_role(cu)
    if cpu and jr:
        donors = donor_roles(cu)
        parts = [f"joiner {cpu.get(jr, 0):.0f}"]
        loaded = [r for r in worker_roles(cpu) if r != jr]
        if donors is None:
            parts.append("loaded workers " + "/".join(f"{cpu[r]:.0f}" for r in loaded)
                         + " (which one was the donor was not recorded)")
        else:
            parts += [f"{role_label(cu, r)}{' (donor)' if r in donors else ''} {cpu[r]:.0f}"
                      for r in loaded]
        parts.append(f"LB {cpu.get('rr-lb', 0):.0f}")
        w(f"| CPU from the start to active ({cu.get('wall_s', 0):.3f} s, polled; /proc ticks of "
          f"10 ms), % of one core | "
          + ", ".join(parts) + f"; VM busy {cu.get('machine_busy_pct', '–')} |")
    w(f"| `rrstore verify` after the join | {'identical' if cu.get('identical') else 'NOT identical'} |")
    w()
    rss = cu.get("rss_bytes", {})
    raw = cu["raw_bytes"]
    if rss.get("loaded"):
        w(f"Memory (MB = 10^6 bytes; raw data = {fmt_int(n)} × (8 B id + {v} B) = {mb(raw)} MB):")
        w()
        w(f"| worker | RSS, empty | RSS with {fmt_int(n)} records | ÷ raw | growth per record, B | RSS after the join |")
        w("|---|---|---|---|---|---|")
        roles = worker_roles({**rss.get("empty", {}), **rss.get("loaded", {}), **rss.get("joined", {})})
        for r in roles:
            e, l_, j = (rss.get(k, {}).get(r) for k in ("empty", "loaded", "joined"))
            if r == jr:
                if j is not None:
                    w(f"| {role_label(cu, r)} | – | {mb(j)} (after its catch-up) | {j / raw:.2f}× | "
                      f"– | {mb(j)} |")
                continue
            if l_ is None:
                continue
            grow = f"{(l_ - e) / n:.0f}" if e is not None else "–"
            w(f"| {role_label(cu, r)} | {mb(e) if e is not None else '–'} | {mb(l_)} | "
              f"{l_ / raw:.2f}× | {grow} | {mb(j) if j is not None else '–'} |")
        w()

def hash_table_estimate(n, shards=2):
    """The id index of a store of n records in `shards` shards (the replay
    threads: the VM's cores, at most 4): per shard a hashbrown table of u32
    positions, a power of two of buckets at most 7/8 full, 4 B + 1 control
    byte each. Returns (buckets in all, bytes in all)."""
    each = -(-n // shards)
    buckets = 1
    while buckets * 7 // 8 < each:
        buckets *= 2
    return buckets * shards, buckets * shards * 5

def reading_new(d, b1, b4, b5, scale, cu):
    """Bullets for targets 4, 5 and 7 (computed; the wording follows the data)."""
    out = []
    def cpu_split(b):
        c, t = b["meta"].get("cpu_pct", {}), b["run"]["throughput"]
        return (us_per_req(c.get("rr-lb", 0), t), us_per_req(role_sum(c, "rr-w"), t),
                us_per_req(c.get("redis-primary", 0), t), us_per_req(role_sum(c, "redis-replica"), t),
                us_per_req(c.get("loadgen", 0), t))
    if all(b4):
        a, b = b4
        ta, tb = a["run"]["throughput"], b["run"]["throughput"]
        lb, wk, _, _, lga = cpu_split(a)
        _, _, pr, rp, lgb = cpu_split(b)
        met = ta >= tb
        out.append(
            f"**1 KiB values (target 4, {'met' if met else 'missed'}: {ta / tb:.2f}×).** rrstore's "
            f"processes used {lb + wk:.1f} µs of CPU per request (LB {lb:.1f}, workers {wk:.1f}) "
            f"against Redis's {pr + rp:.1f} µs (primary {pr:.1f}, replicas {rp:.1f}), loadgen "
            f"{lga:.1f} and {lgb:.1f} µs; "
            + (f"against workload 1 that is {lb + wk - sum(cpu_split(b1[0])[:2]):+.1f} µs for rrstore "
               f"and {pr + rp - sum(cpu_split(b1[1])[2:4]):+.1f} µs for Redis, " if all(b1) else "")
            + "since an rrstore PUT's kilobyte goes through the kernel on more hops (client → LB → "
              "worker → both peers, plus each worker's log write) than a SET's (client → primary "
              "→ both replicas).")
    if all(b5):
        a, b = b5
        ta, tb = a["run"]["throughput"], b["run"]["throughput"]
        lb, wk, _, _, lga = cpu_split(a)
        _, _, pr, rp, lgb = cpu_split(b)
        met = ta >= 1.5 * tb
        extra = ""
        if all(b1):
            extra = (f" Against their own workload-1 rounds, `--ack all` kept "
                     f"{ta / b1[0]['run']['throughput'] * 100:.0f} % of rrstore's throughput and "
                     f"WAIT left Redis {tb / b1[1]['run']['throughput'] * 100:.0f} % of its own.")
        out.append(
            f"**Acknowledged by every replica (target 5, {'met' if met else 'missed'}: "
            f"{ta / tb:.2f}× against 1.5×).** rrstore's processes used {lb + wk:.1f} µs of CPU per "
            f"acknowledged write (LB {lb:.1f}, workers {wk:.1f}) against Redis's {pr + rp:.1f} µs "
            f"(primary {pr:.1f}, replicas {rp:.1f}) for a SET and its WAIT, loadgen {lga:.1f} and "
            f"{lgb:.1f} µs; mean round trip {a['run']['latency_us']['mean']:.0f} µs against "
            f"{b['run']['latency_us']['mean']:.0f} µs. A Redis WAIT is a second command per write, "
            f"and the primary answers it only after asking the replicas for their offsets "
            f"(`REPLCONF GETACK`) and hearing back, while rrstore's workers already acknowledge "
            f"every record to the origin as part of replication." + extra)
    if len(scale) >= 2:
        (n0, x0), (n1, x1) = scale[0], scale[-1]
        t0, t1 = x0["run"]["throughput"], x1["run"]["throughput"]
        c0, c1 = x0["meta"].get("cpu_pct", {}), x1["meta"].get("cpu_pct", {})
        out.append(
            f"**Scaling (7a, no target).** From {n0} to {n1} workers throughput went from "
            f"{fmt_int(t0)} to {fmt_int(t1)} req/s ({t1 / t0:.2f}×) while the workers' CPU per "
            f"request went from {us_per_req(role_sum(c0, 'rr-w'), t0):.1f} to "
            f"{us_per_req(role_sum(c1, 'rr-w'), t1):.1f} µs: every worker applies and logs every "
            f"record, so each added worker adds work to every request, and on 2 vCPUs shared with "
            f"the LB and loadgen there is no spare core for it to run on.")
    if cu and cu.get("start_to_active_rate"):
        rate = cu["start_to_active_rate"]
        cpu = cu.get("cpu_pct", {})
        jr = joiner_role(cu)
        donors = donor_roles(cu)
        donor = "the donor"
        if donors is None:  # not recorded: the busiest loaded worker (the others idle)
            donors = [r for r in worker_roles(cpu) if r != jr]
            donor = "the busiest loaded worker (the donor; the other two had nothing to do)"
        dn = max((cpu.get(r, 0) for r in donors), default=0)
        th = {k.split("/", 1)[1]: v for k, v in cu.get("thread_cpu_pct", {}).items()
              if jr and k.startswith(jr + "/")}
        main = th.get("rrstore", cpu.get(jr, 0))
        met = rate >= 1e6
        busy = ""
        if cu.get("machine_busy_pct") is not None:
            busy = (f", while the VM was {cu['machine_busy_pct']:.0f} % busy, "
                    f"{cu.get('machine_other_pct', 0):.0f} % of a core of it other processes "
                    f"than rrstore's")
        out.append(
            f"**Catch-up (target 7b, {'met' if met else 'missed'}: {fmt_int(rate)} records/s from "
            f"start to active).** Over the {cu.get('wall_s', 0):.2f} s from its start to active "
            f"(as polled) the joiner used {cpu.get(jr, 0):.0f} % of a core ({main:.0f} % in its "
            f"event loop) and {donor} {dn:.0f} %{busy}"
            + (": the joiner, which does the work, did not get a whole core. "
               if cpu.get(jr, 0) < 90 else
               ": the joiner's loop, which does the work, had a whole core. ")
            + f"The stream itself ran at "
            f"{fmt_int(cu.get('catchup_rate') or 0)} records/s; the rest of the time went to "
            f"starting, registering ({cu.get('start_to_registered_s', 0):.3f} s) and the READY "
            f"check ({cu.get('done_to_active_s', 0):.3f} s). Each record is decoded, applied to the "
            f"store (hashed for the digest) and appended to the log by one thread of the joiner, "
            f"and read out of the donor's store and framed by one thread of the donor.")
    if cu and cu.get("rss_bytes", {}).get("loaded"):
        top, role, phase = catchup_rss(cu)
        raw, n = cu["raw_bytes"], cu["records"]
        rss = cu["rss_bytes"]
        grows = [(rss["loaded"][r] - rss["empty"][r]) / n
                 for r in rss["loaded"] if r in rss.get("empty", {})]
        g = sum(grows) / len(grows) if grows else 0
        buckets, table = hash_table_estimate(n)
        met = top <= 1.5 * raw
        out.append(
            f"**Memory (target 7c, {'met' if met else 'missed'}: {top / raw:.2f}×).** A loaded "
            f"worker's RSS grew by {g:.0f} B per record against {8 + cu['value_size']} B of raw "
            f"data. By its layout a record costs its 8 B id and an 82 B entry (a 7-byte version, "
            f"a 6-byte seq, the origin, a length and {cu['value_size']} B of content inline: "
            f"contents up to 64 B need "
            f"no allocation of their own), plus the id index, a table of 4 B positions and a "
            f"control byte per bucket in each of the store's shards, grown by powers of two and "
            f"kept at most 7/8 full ({buckets:,} buckets in all for {fmt_int(n)} records, "
            f"{table / n:.1f} B per record)."
            + (f" The joiner, filled by its catch-up, held the most: {mb(top)} MB after it."
               if role == joiner_role(cu) else "")
            + (f" The largest figure ({mb(top)} MB) was taken the moment the joiner became "
               f"active, while a donor still held its catch-up stream's buffers; a worker frees "
               f"its links' idle buffers every second."
               if phase == "joined" and role != joiner_role(cu) else ""))
    return out

def census_total(c, prefix, key):
    return sum(p["per_request"].get(key, 0) for r, p in c["processes"].items()
               if r.startswith(prefix))

def reading(d, b1, b2, b3, b4=(None, None), b5=(None, None), scale=(), cu=None):
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
            "dead records, and each worker compacts soon after a roll: its loop encodes the "
            "live set from its store (about 10 MB here) and its compaction thread "
            "(`rrstore-compact`) writes and fsyncs it in place of the sealed segments. In the "
            "best rounds those threads used "
            + " and ".join(comp) + " (the encoding is counted in the loop's CPU, both in the "
            "workers' CPU above). Redis with `--appendonly no` has no such work (with AOF it "
            "rewrites the file from memory in a forked child once it has doubled in size, "
            "as rrstore writes from its store; a child's CPU lands in *other*).")
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
    bullets += reading_new(d, b1, b4, b5, scale, cu)
    bullets += reading_reads(d)
    others = round_others(d)
    noisy = [n for o, n in others if o >= 20]
    if others:
        seen = (f"in this run *other* stayed at or below {max(o for o, _ in others):.0f} % of a "
                f"core in every round" if not noisy else
                f"in this run {len(noisy)} of {len(others)} rounds had *other* ≥ 20 % of a core "
                + (f"({', '.join(noisy)})" if len(noisy) <= 8 else
                   f"(median {sorted(o for o, _ in others)[len(others) // 2]:.0f} % over all rounds)"))
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

def reading_reads(d):
    """The reads run, read against workload 1: what a GET costs each system."""
    a = d.best(d.runs("rd", "rrstore"), "closed")
    b = d.best(d.runs("rd", "redis"), "closed")
    if not (a and b):
        return []
    ra, rb = a["run"]["throughput"], b["run"]["throughput"]
    w1 = (d.best(d.runs("w1", "rrstore"), "closed"), d.best(d.runs("w1", "redis"), "closed"))
    if not (ra and rb):
        return []
    than = ""
    if all(w1) and w1[1]["run"]["throughput"]:
        r1 = w1[0]["run"]["throughput"] / w1[1]["run"]["throughput"]
        than = (f"; writes, workload 1: {r1:.2f}×" if abs(ra / rb - r1) < 0.05 else
                f", {'more' if ra / rb < r1 else 'less'} than writes do ({r1:.2f}× in workload 1)")
    ca, cb = server_cpu(a["meta"], "rrstore"), server_cpu(b["meta"], "redis")
    cpu = (f" (server CPU per request {ca / 100 / ra * 1e6:.1f} against "
           f"{cb / 100 / rb * 1e6:.1f} µs)" if ca and cb else "")
    return [
        f"**Reads** (90 % GET, no target): rrstore {'loses' if ra < rb else 'wins'} at "
        f"{ratio(ra, rb)}{than}. A Redis GET is one read and one write on the primary, with "
        f"nothing to replicate; an rrstore GET still crosses the LB to a worker and back, and "
        f"that hop is most of the work{cpu}. Serving GETs at the LB would need the records "
        f"there, which the design keeps on the workers only."]

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
    elif cmd == "catchup":
        cmd_catchup(*args)
    elif cmd == "brief":
        cmd_brief(args[0])
    elif cmd == "env":
        cmd_env(args[0])
    elif cmd == "doc":
        cmd_doc(args[0], args[1], args[2])
    else:
        sys.exit(f"unknown command {cmd}")
