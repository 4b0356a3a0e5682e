#!/usr/bin/env python3
"""Two daemons on one PostgreSQL: sustained alerts/s, and the failover time.

Starts a throwaway PostgreSQL (tests/support/postgres.py, here with fsync and
synchronous_commit on: commits are durable, as in production), two installed
`twistd butler-webhook` daemons "a" and "b" sharing it, a receiver that records
every request (its webhook-id, which daemon sent it, when) and a player that
sends every datagram to both daemons, as Qlik's two appenders do.

- **throughput**: N alerts at an offered rate, one webhook, leases of 30 s (the default): alerts delivered,
  duplicates, the rate they arrived at the receiver, latency from the datagram
  to the receiver's 200 (p50/p99). The same offered load to one daemon on
  SQLite, in the same run, for the ratio.
- **failover**: the receiver answers 503 while 200 alerts are sent, so that
  both daemons hold pending deliveries; then daemon a is killed (-9) and the
  receiver answers 200. The failover time is from a's last request to the
  first delivery by b of an alert a had been attempting (a's lease has to run
  out first: leaseSeconds 5 here, 30 by default). Lost and duplicate counts too.

    make install     # the daemons measured are the installed ones
    .venv/bin/python bench/ha.py [--alerts 5000] [--rate 500] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import attrs

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
from common import Daemon, free_port, machine, versions, wait_quiet  # noqa: E402

from butler_tw.core.wireformat import format_datagram  # noqa: E402
from tests.support.alerts import ALERT  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


class Receiver:
    """An HTTP server on loopback: records (path webhook-id, instance, time, status) of every request."""

    def __init__(self) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.status = 200
        self.requests: list[tuple[str, str, float, int]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                status = receiver.status
                with receiver.lock:
                    receiver.requests.append(
                        (
                            f"{self.path} {self.headers.get('webhook-id', '')}",
                            self.headers.get("x-instance", ""),
                            time.time(),
                            status,
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> dict[str, list[tuple[str, float]]]:
        """ "path webhook-id" (a delivery) -> [(instance, time)] of the 200s."""
        out: dict[str, list[tuple[str, float]]] = {}
        with self.lock:
            for wid, instance, at, status in self.requests:
                if status == 200:
                    out.setdefault(wid, []).append((instance, at))
        return out

    def close(self) -> None:
        self.server.shutdown()


def config(udp: int, sink: int, store: str | None, name: str, lease: int = 30, webhooks: int = 1) -> str:
    ours = ""
    if store:
        ours = f"""
butlerWebhook:
  store: '{store}'
  instanceName: {name}
  leaseSeconds: {lease}
  delivery:
    retrySchedule: [0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30]
"""
    else:
        ours = """
butlerWebhook:
  delivery:
    retrySchedule: [0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30]
"""
    hooks = "".join(
        f"""
        - description: bench {i}
          webhookURL: http://127.0.0.1:{sink}/bench{i}
          httpMethod: POST
          concurrency: 16
          headers:
            X-Instance: {name}"""
        for i in range(webhooks)
    )
    return f"""
Butler:
  udpServerConfig:
    enable: true
    serverHost: 127.0.0.1
    portTaskFailure: {udp}
  webhookNotification:
    enable: true
    reloadTaskFailure:
      rateLimit: 0
      webhooks:{hooks}
{ours}"""


def alerts(n: int) -> list[tuple[str, bytes]]:
    out = []
    for _ in range(n):
        a = attrs.evolve(ALERT, executionId=str(uuid.uuid4()), taskId=str(uuid.uuid4()))
        out.append((a.alertId, format_datagram(a)))
    return out


def play(
    batch: list[tuple[str, bytes]], ports: list[int], rate: float, webhooks: int = 1
) -> dict[str, float]:
    """Send each datagram to every port, ``rate`` alerts a second; delivery ("path webhook-id") -> when sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent: dict[str, float] = {}
    start = time.time()
    for i, (aid, data) in enumerate(batch):
        due = start + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        at = time.time()
        for i in range(webhooks):
            sent[f"/bench{i} {aid}"] = at
        for port in ports:
            sock.sendto(data, ("127.0.0.1", port))
    sock.close()
    return sent


def wait_for(receiver: Receiver, ids: set[str], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not ids <= receiver.delivered().keys():
        time.sleep(0.2)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def measure(receiver: Receiver, sent: dict[str, float]) -> dict[str, float]:
    got = receiver.delivered()
    firsts = {aid: min(at for _, at in got[aid]) for aid in sent if aid in got}
    latencies = [(firsts[aid] - sent[aid]) * 1000 for aid in firsts]
    span = max(firsts.values()) - min(sent.values()) if firsts else float("nan")
    return {
        "alerts": len(sent),
        "lost": len(sent) - len(firsts),
        "duplicates": sum(len(got[aid]) - 1 for aid in firsts),
        "rate": len(firsts) / span if span else float("nan"),
        "p50": pct(latencies, 50),
        "p99": pct(latencies, 99),
        "a": sum(1 for aid in firsts for who, _ in got[aid] if who == "a"),
        "b": sum(1 for aid in firsts for who, _ in got[aid] if who == "b"),
    }


def throughput(work: Path, dsn: str, n: int, rate: float, lease: int = 30, webhooks: int = 1) -> list[str]:
    rows = []
    for label, store in (("two daemons, PostgreSQL", dsn), ("one daemon, SQLite", None)):
        wait_quiet()
        receiver = Receiver()
        ports = (
            [free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)]
            if store
            else [free_port(socket.SOCK_DGRAM)]
        )
        names = ["a", "b"] if store else ["single"]
        daemons = [
            Daemon(
                work, config(port, receiver.port, store, name, lease, webhooks), name=f"{label[:3]}-{name}"
            ).start()
            for port, name in zip(ports, names, strict=True)
        ]
        try:
            sent = play(alerts(n), ports, rate, webhooks)
            wait_for(receiver, set(sent), 300)
            m = measure(receiver, sent)
        finally:
            for d in daemons:
                d.stop()
            receiver.close()
        split = f" (a {m['a']}, b {m['b']})" if store else ""
        rows.append(
            f"| {label} | {n} at {rate:g}/s × {webhooks} | {len(sent) - m['lost']:.0f}{split} | {m['lost']:.0f} | {m['duplicates']:.0f} "
            f"| {m['rate']:.0f} | {m['p50']:.0f} ms | {m['p99']:.0f} ms |"
        )
        print(rows[-1], flush=True)
    return rows


def failover(work: Path, dsn: str) -> str:
    wait_quiet()
    receiver = Receiver()
    receiver.status = 503
    ports = [free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)]
    a, b = (
        Daemon(work, config(port, receiver.port, dsn, name, lease=5), name=f"failover-{name}").start()
        for port, name in zip(ports, "ab", strict=True)
    )
    try:
        sent = play(alerts(200), ports, 200)
        time.sleep(1.5)  # every alert attempted at least once, by its owner
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait()
        killedAt = time.time()
        receiver.status = 200
        wait_for(receiver, set(sent), 60)
        m = measure(receiver, sent)
    finally:
        b.stop()
        receiver.close()
    with receiver.lock:
        requests = list(receiver.requests)
    triedByA = {wid for wid, who, _, _ in requests if who == "a"}
    lastFromA = max(at for _, who, at, _ in requests if who == "a")
    takenOver = [at for wid, who, at, status in requests if who == "b" and status == 200 and wid in triedByA]
    first = min(takenOver) if takenOver else float("nan")
    row = (
        f"| kill -9 of a, lease 5 s | 200 | {len(triedByA)} | {len(takenOver)} | {m['lost']:.0f} "
        f"| {m['duplicates']:.0f} | {first - lastFromA:.1f} s | {first - killedAt:.1f} s |"
    )
    print(row, flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--lease", type=int, default=30, help="leaseSeconds of the throughput rows")
    parser.add_argument("--webhooks", type=int, default=1, help="POST webhooks of the throughput rows")
    parser.add_argument("--no-failover", action="store_true", help="the throughput rows only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    server = PostgresServer(settings=DURABLE)
    reason = server.skip_reason()
    if reason:
        print(f"cannot start PostgreSQL: {reason}", file=sys.stderr)
        return 1
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"butler-tw-ha-bench-{os.getpid()}"
    lines = [
        f"Machine: {machine()}",
        f"Versions: {versions()}; PostgreSQL from {server.bindir} (fsync, synchronous_commit on)",
        "",
        "| setup | offered | delivered | lost | duplicates | delivered/s | p50 | p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    try:
        lines += throughput(
            work, server.create_database("throughput"), args.alerts, args.rate, args.lease, args.webhooks
        )
        lines += (
            []
            if args.no_failover
            else [
                "",
                "| failover | alerts | held by a | taken over by b | lost | duplicates "
                "| a's last request -> first taken over | kill -> first taken over |",
                "|---|---|---|---|---|---|---|---|",
                failover(work, server.create_database("failover")),
            ]
        )
    finally:
        server.cleanup()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
