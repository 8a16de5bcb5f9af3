#!/usr/bin/env python3
"""CPU time and memory of process trees, for bench/peer.sh (reads /proc only).

Each group is NAME=ROOT or NAME=ROOT:EXCLUDED[,EXCLUDED...]: the process ROOT and all its
descendants, less the subtrees rooted at the EXCLUDED pids (Safra's PostgreSQL, say, when it
runs below `safra up`).

  procstat.py cpu GROUP...   {"clock_ticks_per_s": 100, "groups": {NAME: cpu seconds}}
      cpu seconds = utime + stime + cutime + cstime of ROOT (cutime/cstime grow when ROOT
      reaps a child, so a PostgreSQL backend that exits between two readings is still
      counted) + utime + stime of every live descendant.
  procstat.py mem GROUP...   {NAME: [{"pid", "name", "rss_kib", "pss_kib"}, ...]}
      RSS and PSS from /proc/<pid>/smaps_rollup.
"""
from __future__ import annotations

import json
import os
import sys

TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [0] is state, [1] ppid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields:
                out[int(entry)] = int(fields[1])
    return out


def tree(root: int, excluded: set[int], ppid: dict[int, int]) -> list[int]:
    kids: dict[int, list[int]] = {}
    for pid, parent in ppid.items():
        kids.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in excluded or pid not in ppid:
            continue
        found.append(pid)
        todo.extend(kids.get(pid, []))
    return found


def parse_group(arg: str) -> tuple[str, int, set[int]]:
    name, _, spec = arg.partition("=")
    root, _, rest = spec.partition(":")
    return name, int(root), {int(p) for p in rest.split(",") if p}


def cpu_seconds(root: int, pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = stat_fields(pid)
        if not fields:
            continue  # exited since the scan
        # utime, stime, cutime, cstime are fields 14..17 of stat(5): [11]..[14] here
        ticks += int(fields[11]) + int(fields[12])
        if pid == root:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return "?"
    if not argv:
        return "?"
    joined = " ".join(argv)
    if "multiprocessing.resource_tracker" in joined:
        return "python resource tracker"
    if "spawn_main" in joined or "--multiprocessing-fork" in joined:
        return "uvicorn worker"
    if any(os.path.basename(a) == "uvicorn" for a in argv[:2]):
        return "uvicorn master"
    program = os.path.basename(argv[0])
    if program.startswith("safra"):  # `safra up`, `safra serve <name>` (any binary name)
        return " ".join([program] + argv[1:3])
    return " ".join([program] + argv[1:2])[:60]


def memory(pid: int) -> dict | None:
    rss = pss = None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "Rss":
                    rss = int(value.split()[0])
                elif key == "Pss":
                    pss = int(value.split()[0])
    except OSError:
        return None
    if rss is None:
        return None  # a kernel thread or a zombie
    return {"pid": pid, "name": process_name(pid), "rss_kib": rss, "pss_kib": pss}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in ("cpu", "mem"):
        sys.exit(__doc__)
    ppid = parents()
    groups = [parse_group(a) for a in argv[1:]]
    if argv[0] == "cpu":
        out = {name: round(cpu_seconds(root, tree(root, excl, ppid)), 3) for name, root, excl in groups}
        print(json.dumps({"clock_ticks_per_s": TICKS, "groups": out}))
    else:
        print(json.dumps({name: [m for m in map(memory, sorted(tree(root, excl, ppid))) if m]
                          for name, root, excl in groups}))


if __name__ == "__main__":
    main(sys.argv[1:])
