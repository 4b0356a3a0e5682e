#!/usr/bin/env python3
"""Memory per key of the de-duplicator, for N distinct alerts (what a storm leaves for the TTL).

Every alert with an executionId is remembered for ``butlerWebhook.dedupTtl`` (10 minutes by
default), so the keys held grow with the alert *rate*: 2,000 alerts/s for a minute is
120,000 keys. Each measurement runs in a fresh subprocess: bytes per key as tracemalloc
counts them (the alerts themselves excluded), as RSS grows, and the time per ``seen``.
``--old-rev`` also measures the de-duplicator of that revision (``git show`` into a
temporary module): the one that held each key as a tuple of lower-cased strings.

    .venv/bin/python bench/dedup_memory.py [--n N] [--old-rev REV]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine  # noqa: E402
from ratelimit_memory import vm_rss  # noqa: E402


def deduplicator(rev: str | None) -> Any:
    if rev is None:
        from butler_tw.core.dedup import Deduplicator

        return Deduplicator
    source = subprocess.run(
        ["git", "show", f"{rev}:butler_tw/core/dedup.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "dedup_old.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("dedup_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Deduplicator


def child(rev: str | None, n: int, metric: str) -> dict[str, Any]:
    from twisted.internet.task import Clock

    from butler_tw.core.alert import Alert, EventKind

    alerts = [
        Alert(
            EventKind.FAILED,
            "qlik-node-1",
            "LAB\\svc-reload",
            "Reload",
            str(uuid.uuid4()).upper(),  # Qlik's ids, which the key holds lower-cased
            "App",
            "",
            "2024-05-01 13:35:07,434",
            "INFO",
            str(uuid.uuid4()).upper(),
            "Max retries reached",
        )
        for _ in range(n)
    ]
    clock = Clock()
    dedup = deduplicator(rev)(clock, 600.0)
    gc.collect()
    if metric == "tracemalloc":
        tracemalloc.start()
    before = vm_rss()
    start = time.perf_counter()
    for alert in alerts:
        clock.advance(0.0005)  # 2,000 alerts/s
        assert not dedup.seen(alert)
    elapsed = time.perf_counter() - start
    gc.collect()
    assert len(dedup) == n and dedup.seen(alerts[-1])
    if metric == "tracemalloc":
        return {"traced": tracemalloc.get_traced_memory()[0]}
    return {"rss": vm_rss() - before, "seconds": elapsed}


def measure(rev: str | None, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in ("rss", "tracemalloc"):
        cmd = [sys.executable, __file__, "--child", metric, "--n", str(n)]
        if rev:
            cmd += ["--old-rev", rev]
        out.update(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120_000, help="distinct alerts (default 120,000)")
    parser.add_argument("--old-rev", help="also measure the de-duplicator of this git revision")
    parser.add_argument("--child", choices=["rss", "tracemalloc"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.old_rev, args.n, args.child)))
        return
    print(f"Machine: {machine()}\n")
    print("| de-duplicator | keys | bytes/key (tracemalloc) | RSS delta/key | per seen() |")
    print("|---|---:|---:|---:|---:|")
    for rev in [None, args.old_rev] if args.old_rev else [None]:
        r = measure(rev, args.n)
        name = "this tree" if rev is None else rev[:7]
        print(
            f"| {name} | {args.n:,} | {r['traced'] / args.n:.0f} | {r['rss'] / args.n:.0f} "
            f"| {r['seconds'] / args.n * 1e6:.2f} µs |",
            flush=True,
        )


if __name__ == "__main__":
    main()
