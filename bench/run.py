#!/usr/bin/env python3
"""Benchmark butler-tw with the shared harness (../shared/tools/udp_webhook_bench.py).

Starts `twistd -n butler-webhook` with a generated config (3 webhooks: GET,
POST and PUT to the harness's sink, rate limit off so every datagram is an
alert), runs one harness scenario per line of SCENARIOS, and prints a
Markdown table. Each scenario gets a fresh daemon.

    .venv/bin/python bench/run.py [--quick] [--harness PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "tools" / "udp_webhook_bench.py"

# (label, harness arguments, webhooks, outbox: "sqlite" or "memory")
SCENARIOS = [
    ("burst 2000", ["throughput", "--n", "2000", "--rate", "0"], 3, "sqlite"),
    ("burst 2000", ["throughput", "--n", "2000", "--rate", "0"], 3, "memory"),
    ("burst 2000", ["throughput", "--n", "2000", "--rate", "0"], 1, "sqlite"),
    ("burst 2000", ["throughput", "--n", "2000", "--rate", "0"], 1, "memory"),
    ("steady 200/s, 15 s", ["throughput", "--n", "3000", "--rate", "200"], 3, "sqlite"),
    ("steady 200/s, 15 s", ["throughput", "--n", "3000", "--rate", "200"], 3, "memory"),
    (
        "steady 500/s, 10 s",
        ["throughput", "--n", "5000", "--rate", "500", "--max-wait-s", "120"],
        3,
        "sqlite",
    ),
    (
        "steady 500/s, 10 s",
        ["throughput", "--n", "5000", "--rate", "500", "--max-wait-s", "120"],
        3,
        "memory",
    ),
    ("burst 10000", ["throughput", "--n", "10000", "--rate", "0", "--max-wait-s", "300"], 3, "sqlite"),
    (
        "receiver answers in 2 s, 300 at 100/s",
        ["throughput", "--n", "300", "--rate", "100", "--sink-delay-ms", "2000"],
        3,
        "sqlite",
    ),
]
QUICK = [SCENARIOS[0], SCENARIOS[4]]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(udp: int, sink: int, webhooks: int) -> str:
    methods = ["POST", "GET", "PUT"][:webhooks]
    hooks = "".join(
        f"""
        - description: bench {m}
          webhookURL: http://127.0.0.1:{sink}/bench/{m.lower()}{"?token=bench" if m == "GET" else ""}
          httpMethod: {m}
          concurrency: 16"""
        for m in methods
    )
    return f"""
Butler:
  udpServerConfig: {{enable: true, serverHost: 127.0.0.1, portTaskFailure: {udp}}}
  webhookNotification:
    enable: true
    reloadTaskFailure:
      rateLimit: 0
      webhooks:{hooks}
    reloadTaskAborted:
      rateLimit: 0
      webhooks:{hooks}
"""


def run(label: str, args: list[str], webhooks: int, outbox: str, harness: Path, workdir: Path) -> dict:
    udp, sink = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    cfg = workdir / f"bench-{udp}.yaml"
    cfg.write_text(config_text(udp, sink, webhooks))
    twistd = Path(sys.executable).parent / "twistd"
    log = open(workdir / f"daemon-{udp}.log", "wb")
    extra = ["--in-memory-outbox"] if outbox == "memory" else []
    daemon = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "butler-webhook", "--config", str(cfg), *extra],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # benchmark the working tree
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 20
        while b"Listening for Qlik Sense" not in (workdir / f"daemon-{udp}.log").read_bytes():
            if time.time() > deadline or daemon.poll() is not None:
                raise RuntimeError(f"daemon did not start: see {log.name}")
            time.sleep(0.1)
        cmd = [
            sys.executable,
            str(harness),
            *args,
            "--udp-port",
            str(udp),
            "--sink-port",
            str(sink),
            "--pid",
            str(daemon.pid),
            "--expect-per-msg",
            str(webhooks),
            "--label",
            label,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["_label"] = label
        result["_webhooks"] = webhooks
        result["_outbox"] = outbox
        return result
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two short scenarios only")
    ap.add_argument("--harness", type=Path, default=HARNESS)
    ap.add_argument("--out", type=Path, help="also write the raw JSON results here")
    opts = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, args, webhooks, outbox in QUICK if opts.quick else SCENARIOS:
            print(f"running: {label}, {webhooks} webhook(s), {outbox} outbox", file=sys.stderr)
            results.append(run(label, args, webhooks, outbox, opts.harness, Path(tmp)))
    if opts.out:
        opts.out.write_text(json.dumps(results, indent=1))
    print(f"Machine: {machine()}\n")
    print(
        "| scenario | webhooks | outbox | sent | lost | kernel drops | alerts/s delivered "
        "| first request p50 / p99 ms | max RSS MiB | daemon CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print("| " + " | ".join(str(x) for x in summary(r)) + " |")
    return 0


def summary(r: dict) -> list:
    lat = r.get("latency_first_request", {})
    daemon = r.get("daemon", {})
    kernel = r.get("udp_kernel_delta", {})
    rss = daemon.get("rss_kb_max")
    return [
        r["_label"],
        r["_webhooks"],
        r["_outbox"],
        r.get("sent"),
        r.get("lost_msgs"),
        kernel.get("RcvbufErrors", "-"),
        r.get("msgs_completed_per_s"),
        f"{lat.get('p50_ms', '-')} / {lat.get('p99_ms', '-')}",
        round(rss / 1024, 1) if rss else "-",
        daemon.get("cpu_s", "-"),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
