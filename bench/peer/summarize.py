#!/usr/bin/env python3
"""Markdown tables of bench/peer.sh from the files of its run folder (standard library only).

A measured window of scenario S, round N, side X (safra or peer) leaves in RUNS/:
  S.rN.X.wrk          wrk's output, whose line `PEER_BENCH_RESULT {json}` common.lua printed;
  S.rN.X.before.json  procstat.py cpu of the groups `server` and `postgres` before wrk;
  S.rN.X.after.json   the same after wrk.

  summarize.py round RUNS S N     the table of scenario S, round N (both sides)
  summarize.py summary RUNS       per scenario, every round, with Safra/peer ratios
  summarize.py memory FILE        RSS and PSS per process from procstat.py mem (groups safra, peer)
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

SIDES = (("safra", "Safra"), ("peer", "FastAPI peer"))
SCENARIOS = {
    "invest": "POST /v1/offerings/{id}:invest",
    "get_offering": "GET /v1/offerings/{id}",
    "list_offerings": "GET /v1/offerings?pageSize=50",
    "users_me": "GET /v1/users/me",
}


def window(runs: Path, scenario: str, rnd: int, side: str) -> dict | None:
    stem = runs / f"{scenario}.r{rnd}.{side}"
    wrk = Path(f"{stem}.wrk")
    if not wrk.exists():
        return None
    line = next((l for l in wrk.read_text().splitlines() if l.startswith("PEER_BENCH_RESULT ")), None)
    if line is None:
        return None
    res = json.loads(line.split(" ", 1)[1])
    before = json.loads(Path(f"{stem}.before.json").read_text())["groups"]
    after = json.loads(Path(f"{stem}.after.json").read_text())["groups"]
    err = res["errors"]
    ok = res["requests"] - err["status"]
    seconds = res["duration_us"] / 1e6
    cpu = {g: after[g] - before[g] for g in ("server", "postgres")}
    per_req = lambda s: s * 1000.0 / ok if ok > 0 else float("nan")
    return {
        "ok": ok,
        "rps": ok / seconds if seconds else 0.0,
        "p50_ms": res["latency_us"]["p50"] / 1000.0,
        "p99_ms": res["latency_us"]["p99"] / 1000.0,
        "errors": err,
        "error_total": sum(err.values()),
        "server_ms": per_req(cpu["server"]),
        "pg_ms": per_req(cpu["postgres"]),
        "total_ms": per_req(cpu["server"] + cpu["postgres"]),
    }


def rounds(runs: Path, scenario: str) -> list[int]:
    found = {int(p.name.split(".")[1][1:]) for p in runs.glob(f"{scenario}.r*.*.wrk")}
    return sorted(found)


def errors_cell(w: dict) -> str:
    if not w["error_total"]:
        return "0"
    parts = [f"{'non-2xx' if k == 'status' else k} {v}" for k, v in w["errors"].items() if v]
    return f"{w['error_total']} ({', '.join(parts)})"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def print_round(runs: Path, scenario: str, rnd: int) -> None:
    print(f"\n#### {SCENARIOS.get(scenario, scenario)}, round {rnd}\n")
    print("| side | RPS | p50 ms | p99 ms | errors | server CPU ms/req | PostgreSQL CPU ms/req | total CPU ms/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for side, label in SIDES:
        w = window(runs, scenario, rnd, side)
        if w is None:
            print(f"| {label} | (no result) | | | | | | |")
            continue
        print(f"| {label} | {w['rps']:.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {errors_cell(w)} "
              f"| {w['server_ms']:.3f} | {w['pg_ms']:.3f} | {w['total_ms']:.3f} |")
    sys.stdout.flush()


def print_summary(runs: Path) -> None:
    print("\n### Summary (Safra/peer: RPS above 1 and p99 below 1 favour Safra)")
    for scenario, title in SCENARIOS.items():
        rows = []
        for rnd in rounds(runs, scenario):
            s, p = window(runs, scenario, rnd, "safra"), window(runs, scenario, rnd, "peer")
            if s and p:
                rows.append((str(rnd), s, p))
        if not rows:
            continue
        if len(rows) > 1:
            med = lambda side, key: statistics.median(r[side][key] for r in rows)
            rows.append(("median", *({k: med(i, k) for k in ("rps", "p99_ms", "total_ms")} for i in (1, 2))))
        print(f"\n#### {title}\n")
        print("| round | Safra RPS | peer RPS | RPS Safra/peer | Safra p99 ms | peer p99 ms | p99 Safra/peer "
              "| Safra CPU ms/req | peer CPU ms/req |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, s, p in rows:
            print(f"| {name} | {s['rps']:.0f} | {p['rps']:.0f} | {ratio(s['rps'], p['rps'])} "
                  f"| {s['p99_ms']:.2f} | {p['p99_ms']:.2f} | {ratio(s['p99_ms'], p['p99_ms'])} "
                  f"| {s['total_ms']:.3f} | {p['total_ms']:.3f} |")


def print_memory(path: Path) -> None:
    groups = json.loads(path.read_text())
    print("\n### Memory after the runs (PostgreSQL excluded on both sides)\n")
    print("| side | process | pid | RSS MiB | PSS MiB |")
    print("|---|---|---:|---:|---:|")
    totals = {}
    for side, label in SIDES:
        procs = groups.get(side, [])
        for m in procs:
            print(f"| {label} | {m['name']} | {m['pid']} | {m['rss_kib'] / 1024:.1f} | {m['pss_kib'] / 1024:.1f} |")
        totals[side] = (sum(m["rss_kib"] for m in procs) / 1024, sum(m["pss_kib"] for m in procs) / 1024)
        print(f"| **{label} total** | {len(procs)} processes | | **{totals[side][0]:.1f}** "
              f"| **{totals[side][1]:.1f}** |")
    (srss, spss), (prss, ppss) = totals["safra"], totals["peer"]
    print(f"| **Safra/peer** | | | **{ratio(srss, prss)}** | **{ratio(spss, ppss)}** |")


def main(argv: list[str]) -> None:
    if argv[:1] == ["round"] and len(argv) == 4:
        print_round(Path(argv[1]), argv[2], int(argv[3]))
    elif argv[:1] == ["summary"] and len(argv) == 2:
        print_summary(Path(argv[1]))
    elif argv[:1] == ["memory"] and len(argv) == 2:
        print_memory(Path(argv[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
