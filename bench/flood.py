#!/usr/bin/env python3
"""A flood of junk datagrams: the daemon must stay up, keep its memory flat, and still deliver.

Starts the installed `twistd -n butler-webhook` (one POST webhook to the
harness's sink, `maxMessageSize: 8192`), then sends ``--n`` datagrams (default
1,000,000) as fast as one sender process can, cycling through a pool of junk:

- random bytes, 1-1400 long;
- valid Qlik messages cut short (fewer than 11 fields);
- malformed Qlik messages: 11 or more fields but no GUID where the taskId
  goes, control characters, invalid UTF-8, a `;` storm;
- unknown message types (`/scheduler-task-exploded/` and the like);
- well-formed success and distribute messages (counted, not alerts);
- empty datagrams;
- oversize ones (8 KiB to 60 KiB, over maxMessageSize).

None of them is an alert. The daemon's RSS is sampled before, during and
after; when its socket has drained, the shared harness sends ``--valid``
(default 100) valid alerts, which must all be delivered. The counters the
daemon logs when stopped show what it read and rejected, and that exactly
the valid alerts were parsed as alerts.

    .venv/bin/python bench/flood.py [--n 1000000] [--valid 100] [--rmem-max BYTES] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    HARNESS,
    Daemon,
    Rmem,
    config_text,
    cpu_s,
    free_port,
    load_harness,
    machine,
    mib,
    rss_kb,
    versions,
    wait_quiet,
)

MAX_MESSAGE_SIZE = 8192


def valid(kind: str = "failed") -> str:
    g = lambda: str(uuid.uuid4())  # noqa: E731
    return ";".join(
        [
            f"/scheduler-task-{kind}/",
            "qs-node-1",
            "Reload of Sales dashboard",
            "Sales dashboard",
            "LAB\\joe.doe",
            g(),
            g(),
            "2026-11-28 09:24:59,099",
            "INFO",
            g(),
            "Max retries reached",
        ]
    )


def junk_pool(rng: random.Random, size: int = 4000) -> list[tuple[str, bytes]]:
    """(category, datagram) pairs; none of them parses as an alert."""
    pool: list[tuple[str, bytes]] = []

    def add(category: str, data: bytes) -> None:
        pool.append((category, data))

    for _ in range(size):
        r = rng.random()
        if r < 0.40:
            add("random bytes", rng.randbytes(rng.randint(1, 1400)))
        elif r < 0.60:
            text = valid(rng.choice(["failed", "aborted"]))
            cuts = [i for i, c in enumerate(text) if c == ";"]
            cut = rng.randint(1, cuts[8])  # at most 9 ';' kept: fewer than 11 fields
            add("truncated", text[:cut].encode())
        elif r < 0.75:
            parts = valid().split(";")
            variant = rng.randint(0, 3)
            if variant == 0:
                parts[5] = rng.choice(["not-a-guid", "", "{" + str(uuid.uuid4()) + "}", "x" * 36])
            elif variant == 1:
                parts[5] = "zzzzzzzz-" + parts[5][9:]
                parts[2] = "Reload\x00\x1b[31m\x07" + "\u202e" * 5
            elif variant == 2:
                parts[5] = "\udcff"  # becomes invalid UTF-8 below
                parts.insert(3, ";;;;;;;;")
            else:
                parts = parts[:1] + [";" * rng.randint(20, 200)] + parts[6:]
            add("malformed", ";".join(parts).encode("utf-8", "surrogateescape"))
        elif r < 0.85:
            parts = valid().split(";")
            parts[0] = rng.choice(
                ["/scheduler-task-exploded/", "/qrs-audit/", "scheduler-task-failed", "/x/"]
            )
            add("unknown type", ";".join(parts).encode())
        elif r < 0.93:
            parts = valid().split(";")
            parts[0] = rng.choice(["/scheduler-task-success/", "/scheduler-distribute/"])
            add("success / distribute", ";".join(parts).encode())
        elif r < 0.99:
            add("empty", rng.choice([b"", b"\r\n", b"   ", b"\x00"]))
        else:
            add("oversize", valid().encode() + b"x" * rng.randint(MAX_MESSAGE_SIZE, 60000))
    return pool


class Sampler(threading.Thread):
    """VmRSS of ``pid`` every ``interval`` seconds, with a phase name."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.phase = "idle"
        self.samples: list[tuple[float, str, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        while not self.stopping.is_set():
            kb = rss_kb(self.pid)
            if kb is not None:
                self.samples.append((time.monotonic() - t0, self.phase, kb))
            time.sleep(self.interval)

    def by_phase(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for phase in dict.fromkeys(p for _, p, _ in self.samples):
            values = [kb for _, p, kb in self.samples if p == phase]
            out[phase] = {"first": mib(values[0]), "max": mib(max(values)), "last": mib(values[-1])}
        return out


def flood(port: int, pool: list[tuple[str, bytes]], n: int) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    datagrams = [d for _, d in pool]
    addr = ("127.0.0.1", port)
    errors = 0
    size = len(datagrams)
    t0 = time.monotonic()
    for i in range(n):
        try:
            sock.sendto(datagrams[i % size], addr)
        except OSError:
            errors += 1
    elapsed = time.monotonic() - t0
    sock.close()
    return {"sent": n, "send_errors": errors, "send_s": round(elapsed, 2), "sent_per_s": round(n / elapsed)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="junk datagrams to send")
    ap.add_argument("--valid", type=int, default=100, help="valid alerts sent after the flood")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rmem-max", type=int, help="set net.core.rmem_max to this for the run (root)")
    ap.add_argument("--harness", type=Path, default=HARNESS)
    ap.add_argument("--out", type=Path, help="also write the JSON result here")
    opts = ap.parse_args()
    harness = load_harness(opts.harness)
    rng = random.Random(opts.seed)
    pool = junk_pool(rng)
    mix: dict[str, int] = {}
    for category, _ in pool:
        mix[category] = mix.get(category, 0) + 1
    rmem = Rmem()
    if opts.rmem_max is not None:
        rmem.set(opts.rmem_max)
    result: dict = {"bench": "flood", "pool": {k: f"{100 * v / len(pool):.0f} %" for k, v in mix.items()}}
    try:
        busy = wait_quiet()
        with tempfile.TemporaryDirectory() as tmp:
            udp, sink = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
            extra = f"\n    maxMessageSize: {MAX_MESSAGE_SIZE}"
            daemon = Daemon(Path(tmp), config_text(udp, sink, 1, extra)).start()
            sampler = Sampler(daemon.pid)
            sampler.start()
            try:
                time.sleep(1)
                k0 = harness.udp_kernel_counters(udp)
                cpu0 = cpu_s(daemon.pid) or 0.0
                sampler.phase = "flood"
                t0 = time.monotonic()
                print(f"flooding UDP {udp} with {opts.n} junk datagrams", file=sys.stderr)
                sent = flood(udp, pool, opts.n)
                # Until the daemon has read what waits in its socket.
                sampler.phase = "draining"
                while harness.udp_kernel_counters(udp).get("socket_rx_queue_bytes", 0) > 0:
                    time.sleep(0.05)
                t_drained = time.monotonic()
                cpu1 = cpu_s(daemon.pid) or 0.0
                k1 = harness.udp_kernel_counters(udp)
                sampler.phase = "after flood"
                time.sleep(3)
                alive_after_flood = daemon.alive()
                sampler.phase = "valid alerts"
                print(f"sending {opts.valid} valid alerts", file=sys.stderr)
                cmd = [
                    sys.executable,
                    str(opts.harness),
                    "throughput",
                    "--n",
                    str(opts.valid),
                    "--rate",
                    "50",
                    "--udp-port",
                    str(udp),
                    "--sink-port",
                    str(sink),
                    "--pid",
                    str(daemon.pid),
                    "--expect-per-msg",
                    "1",
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
                valid_result = json.loads(out.stdout.strip().splitlines()[-1])
                sampler.phase = "end"
                time.sleep(1)
            finally:
                sampler.stopping.set()
                sampler.join()
                counters = daemon.stop()
            kernel = harness.delta(k0, k1)
            warnings = daemon.log_lines(r"butler_tw\.gate#warn")
            read = counters.get("datagrams_received", 0) - valid_result.get("sent", 0)
            span = t_drained - t0
            result.update(
                {
                    "busy_before_pct": busy,
                    "flood": sent,
                    "kernel_drops": kernel.get("socket_drops"),
                    "kernel_delta": kernel,
                    "daemon_read": read,
                    "read_s": round(span, 2),
                    "read_per_s": round(read / span),
                    "daemon_cpu_s": round(cpu1 - cpu0, 2),
                    "daemon_us_per_datagram": round(1e6 * (cpu1 - cpu0) / read, 1) if read else None,
                    "alive_after_flood": alive_after_flood,
                    "rss_mib": sampler.by_phase(),
                    "rss_idle_mib": mib(daemon.idle_rss_kb),
                    "valid_sent": valid_result.get("sent"),
                    "valid_lost": valid_result.get("lost_msgs"),
                    "valid_latency": valid_result.get("latency_first_request"),
                    "counters": counters,
                    "gate_warning_lines": len(warnings),
                    "gate_warnings": warnings,
                    "log_bytes": daemon.log.stat().st_size,
                }
            )
    finally:
        rmem.restore()
    if opts.out:
        opts.out.write_text(json.dumps(result, indent=1))
    print(f"Machine: {machine()}\n{versions()}\n")
    print(f"pool: {result['pool']}")
    print(
        f"sent {sent['sent']} junk datagrams in {sent['send_s']} s ({sent['sent_per_s']}/s); "
        f"kernel dropped {result['kernel_drops']}; the daemon read {read} in {result['read_s']} s "
        f"({result['read_per_s']}/s, {result['daemon_us_per_datagram']} µs CPU each); "
        f"alive after the flood: {alive_after_flood}"
    )
    print(
        f"RSS MiB: idle {result['rss_idle_mib']}; "
        + "; ".join(f"{p} {v}" for p, v in result["rss_mib"].items())
    )
    print(f"valid alerts after the flood: {result['valid_sent']} sent, {result['valid_lost']} lost")
    print(f"daemon counters: {counters}")
    print(f"gate warnings in the log: {len(warnings)} lines; log {result['log_bytes']} bytes")
    for line in warnings:
        print(f"  {line[:300]}")
    ok = alive_after_flood and result["valid_lost"] == 0 and counters.get("alerts_parsed") == opts.valid
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
