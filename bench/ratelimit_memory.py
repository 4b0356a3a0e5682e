#!/usr/bin/env python3
"""Memory per tracked task of the RateLimiter, for N distinct tasks.

Opens one window for each of N random-UUID tasks (default 1,000,000) on the
real reactor's clock (``reactor.callLater`` without running the reactor) and
prints a Markdown table: bytes per task as tracemalloc counts them (the
limiter's own lowercased taskId strings included, the alerts excluded) and as
the process RSS grows, and the time the N ``allow`` calls took. Each number
comes from a fresh subprocess, and tracemalloc runs only where it is
reported, since it slows allocation and takes memory of its own.

``--old`` also measures the limiter of ``--old-rev`` (one ``IDelayedCall``
per window), loaded from ``git show`` into a temporary module.

    .venv/bin/python bench/ratelimit_memory.py [--n N] [--old] [--old-n N]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The last revision whose limiter kept one IDelayedCall per open window.
OLD_REV = "bfdeaade7c0de637b686ed5ee6d51231697cd4be"
TARGET = 300  # bytes per tracked task


def vm_rss() -> int:
    """This process's resident set size, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def limiter_class(design: str, rev: str) -> Any:
    if design == "new":
        from butler_tw.core.ratelimit import RateLimiter

        return RateLimiter
    source = subprocess.run(
        ["git", "show", f"{rev}:butler_tw/ratelimit.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "ratelimit_old.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("ratelimit_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RateLimiter


def child(design: str, n: int, metric: str, rev: str) -> dict[str, Any]:
    """One measurement, in a fresh process: prints its result as JSON."""
    sys.path.insert(0, str(ROOT))
    from twisted.internet import reactor

    from butler_tw.core.alert import Alert, EventKind

    cls = limiter_class(design, rev)
    # The alerts exist before the baseline: only what the limiter keeps counts.
    alerts = [
        Alert(
            EventKind.FAILED,
            "qlik-node-1",
            "LAB\\svc-reload",
            "Reload",
            str(uuid.uuid4()),
            "App",
            "",
            "2024-05-01 13:35:07,434",
            "INFO",
            "3d11d7e3-07b2-42b8-8351-ceb6e24aea59",
            "Max retries reached",
        )
        for _ in range(n)
    ]
    limiter = cls(reactor, {EventKind.FAILED: 300.0, EventKind.ABORTED: 300.0})
    gc.collect()
    if metric == "tracemalloc":
        tracemalloc.start()
    before = vm_rss()
    start = time.perf_counter()
    for alert in alerts:
        limiter.allow(alert)
    elapsed = time.perf_counter() - start
    gc.collect()
    result: dict[str, Any] = {"design": design, "n": n, "seconds": elapsed}
    if metric == "tracemalloc":
        result["traced"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    else:
        result["rss"] = vm_rss() - before
    assert len(limiter) == n, (len(limiter), n)
    result["timers"] = len(reactor.getDelayedCalls())  # type: ignore[attr-defined]
    return result


def measure(design: str, n: int, rev: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in ("rss", "tracemalloc"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            design,
            "--metric",
            metric,
            "--n",
            str(n),
            "--old-rev",
            rev,
        ]
        run = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result = json.loads(run.stdout)
        if metric == "rss":
            out.update(result)  # the time without tracemalloc's overhead
        else:
            out["traced"] = result["traced"]
    return out


def cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="distinct tasks (default 1,000,000)")
    parser.add_argument("--old", action="store_true", help="also measure the limiter of --old-rev")
    parser.add_argument("--old-n", type=int, help="tasks for the old limiter (default: --n)")
    parser.add_argument("--old-rev", default=OLD_REV, help="git revision of the old limiter")
    parser.add_argument("--child", choices=["new", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--metric", choices=["rss", "tracemalloc"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.metric, args.old_rev)))
        return

    runs = [("new", args.n)]
    if args.old:
        runs.append(("old", args.old_n or args.n))
    print(
        f"Machine: {cpu()}, {platform.machine()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}\n"
    )
    print(
        "| limiter | N | bytes/task (tracemalloc) | RSS delta/task | insert N | per insert | timers pending |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    results = []
    for design, n in runs:
        r = measure(design, n, args.old_rev)
        results.append(r)
        name = "one timer per kind" if design == "new" else f"one DelayedCall per window ({args.old_rev[:7]})"
        print(
            f"| {name} | {n:,} | {r['traced'] / n:.0f} | {r['rss'] / n:.0f} | {r['seconds']:.2f} s "
            f"| {r['seconds'] / n * 1e6:.2f} µs | {r['timers']:,} |",
            flush=True,
        )
    new = results[0]
    verdict = "under" if max(new["traced"], new["rss"]) / new["n"] < TARGET else "OVER"
    print(f"\nCurrent limiter: {verdict} the {TARGET} bytes/task target.")


if __name__ == "__main__":
    main()
