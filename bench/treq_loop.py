#!/usr/bin/env python3
"""The ceiling: a plain Twisted + treq loop making the requests butler-tw makes, with nothing else.

It sends ``--n`` alerts, each to every method in ``--methods`` (POST, GET, PUT:
the bench config's three webhooks), with the daemon's payload shape (the 11
fields as a compact JSON body, or as a query string appended to
``?token=bench`` for GET) and headers, at ``--rate`` alerts/s (0: all at once,
as fast as it can), at most ``--concurrency`` requests in flight per method over
a keep-alive pool per method, as butler-tw's dispatchers do. No parsing, no
outbox, no retries, no logging.

The receiver is the shared harness's HTTP sink (the same one `bench/run.py`
measures the daemon against), started on a free port in a child process; a
request's latency runs from the moment the loop takes its alert in (what the
datagram's send time is for the daemon) to its arrival at the sink.

    .venv/bin/python bench/treq_loop.py --n 60000 --rate 2000 --methods POST
    .venv/bin/python bench/treq_loop.py --n 20000 --rate 0 --methods POST,GET,PUT

The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time
import uuid
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HARNESS, cpu_s, free_port, load_harness, rss_kb  # noqa: E402


def fields(seq: int) -> dict[str, str]:
    """The 11 fields butler-tw sends for a failed reload, in its order."""
    return {
        "event": "Qlik Sense reload failed",
        "hostName": "qs-node-1",
        "user": "LAB\\joe.doe",
        "taskName": f"Reload of Sales dashboard {seq}",
        "taskId": str(uuid.uuid4()),
        "appName": "Sales dashboard",
        "appId": str(uuid.uuid4()),
        "logTimeStamp": datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3],
        "logLevel": "INFO",
        "executionId": str(uuid.uuid4()),
        "logMessage": "Max retries reached",
    }


class Loop:
    """Paced intake, a FIFO queue and a concurrency cap per method: the shape of butler-tw's dispatch."""

    def __init__(self, reactor: Any, base: str, methods: list[str], n: int, rate: float, concurrency: int):
        from treq.client import HTTPClient
        from twisted.internet.defer import Deferred
        from twisted.web.client import Agent, HTTPConnectionPool

        self.reactor = reactor
        self.methods = methods
        self.n, self.rate, self.concurrency = n, rate, concurrency
        self.urls = {m: f"{base}/bench/{m.lower()}{'?token=bench' if m == 'GET' else ''}" for m in methods}
        self.clients = {}
        for m in methods:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = concurrency
            pool.cachedConnectionTimeout = 4.0
            self.clients[m] = HTTPClient(Agent(reactor, connectTimeout=10, pool=pool))
        self.queues: dict[str, deque[int]] = {m: deque() for m in methods}
        self.inflight = dict.fromkeys(methods, 0)
        self.alerts: list[dict[str, str]] = []
        self.taken_ns: list[int] = []
        self.done = 0
        self.errors = 0
        self.client_ms: list[float] = []
        self.finished: Deferred[None] = Deferred()
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.tick()

    def tick(self) -> None:
        i = len(self.alerts)
        due = self.n if self.rate <= 0 else min(self.n, int((time.monotonic() - self.t0) * self.rate) + 1)
        while i < due:
            self.take(i)
            i += 1
        if i < self.n:
            self.reactor.callLater(max(0.0, self.t0 + i / self.rate - time.monotonic()), self.tick)

    def take(self, i: int) -> None:
        self.alerts.append(fields(i))
        self.taken_ns.append(time.monotonic_ns())
        for m in self.methods:
            self.queues[m].append(i)
            self.pump(m)

    def pump(self, method: str) -> None:
        import treq

        queue = self.queues[method]
        while queue and self.inflight[method] < self.concurrency:
            i = queue.popleft()
            alert = self.alerts[i]
            headers = {
                "User-Agent": "butler-tw/0.1.0",
                "webhook-id": f"msg_{alert['executionId'].replace('-', '')}",
                "webhook-timestamp": str(int(time.time())),
            }
            url, body = self.urls[method], None
            if method == "GET":
                url = f"{url}&{urlencode(alert)}"
            else:
                headers["Content-Type"] = "application/json"
                body = json.dumps(alert, ensure_ascii=False, separators=(",", ":")).encode()
            self.inflight[method] += 1
            started = time.monotonic_ns()
            d = self.clients[method].request(method, url, headers=headers, data=body, allow_redirects=False)
            d.addCallback(treq.content)
            d.addBoth(self.answered, method, started)

    def answered(self, result: object, method: str, started: int) -> None:
        from twisted.python.failure import Failure

        self.inflight[method] -= 1
        self.done += 1
        if isinstance(result, Failure):
            self.errors += 1
        else:
            self.client_ms.append((time.monotonic_ns() - started) / 1e6)
        self.pump(method)
        if self.done == self.n * len(self.methods) and not self.finished.called:
            self.finished.callback(None)


def run(opts: argparse.Namespace) -> dict[str, Any]:
    harness = load_harness(opts.harness)
    port = opts.sink_port or free_port(socket.SOCK_STREAM)
    # The sink forks before the reactor exists.
    sink = harness.SinkProcess("127.0.0.1", port, 0, 200)
    try:
        from twisted.internet import reactor

        methods = [m.strip().upper() for m in opts.methods.split(",") if m.strip()]
        loop = Loop(reactor, f"http://127.0.0.1:{port}", methods, opts.n, opts.rate, opts.concurrency)
        outcome: dict[str, Any] = {"timed_out": False}

        def give_up() -> None:
            outcome["timed_out"] = True
            if not loop.finished.called:
                loop.finished.callback(None)

        timer = reactor.callLater(opts.max_wait_s, give_up)
        loop.finished.addCallback(lambda _: timer.cancel() if timer.active() else None)
        loop.finished.addCallback(lambda _: reactor.stop())
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        rss_max = [rss_kb(os.getpid()) or 0]

        def sample() -> None:
            rss_max[0] = max(rss_max[0], rss_kb(os.getpid()) or 0)
            if not loop.finished.called:
                reactor.callLater(0.25, sample)

        reactor.callWhenRunning(loop.start)
        reactor.callWhenRunning(sample)
        t_start = time.monotonic_ns()
        reactor.run()
        t_end = time.monotonic_ns()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(0.5)
        sink_cpu = cpu_s(sink.proc.pid)
        records = sink.records()["records"]
    finally:
        sink.stop()

    taken = {a["taskId"]: t for a, t in zip(loop.alerts, loop.taken_ns, strict=True)}
    per: dict[str, list[int]] = {}
    for r in records:
        tid = harness.req_task_id(r)
        if tid in taken:
            per.setdefault(tid, []).append(r["t_ns"])
    lat_all, lat_first, lat_last = [], [], []
    for tid, arrivals in per.items():
        arrivals.sort()
        lat_all += [(t - taken[tid]) / 1e6 for t in arrivals]
        lat_first.append((arrivals[0] - taken[tid]) / 1e6)
        if len(arrivals) >= len(methods):
            lat_last.append((arrivals[-1] - taken[tid]) / 1e6)
    arrivals_all = [r["t_ns"] for r in records]
    span = (max(arrivals_all) - t_start) / 1e9 if arrivals_all else None
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    wall = (t_end - t_start) / 1e9
    complete = sum(1 for v in per.values() if len(v) >= len(methods))
    return {
        "bench": "treq_loop",
        "methods": methods,
        "target_rate": opts.rate,
        "concurrency": opts.concurrency,
        "sent": opts.n,
        "requests_expected": opts.n * len(methods),
        "requests": len(records),
        "delivered_msgs": complete,
        "lost_msgs": opts.n - complete,
        "errors": loop.errors,
        "timed_out": outcome["timed_out"],
        "offered_dgram_per_s": round(opts.n / ((loop.taken_ns[-1] - loop.taken_ns[0]) / 1e9), 1)
        if len(loop.taken_ns) > 1 and loop.taken_ns[-1] > loop.taken_ns[0]
        else None,
        "deliveries_per_s": round(len(records) / span, 1) if span else None,
        "msgs_completed_per_s": round(complete / span, 1) if span else None,
        "deliver_span_s": round(span, 3) if span else None,
        "latency_all_requests": harness.lat_summary(lat_all),
        "latency_first_request": harness.lat_summary(lat_first),
        "latency_last_request_of_complete_msgs": harness.lat_summary(lat_last),
        "latency_client_response": harness.lat_summary(loop.client_ms),
        "loop": {
            "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2),
            "cpu_pct_avg": round(cpu / wall * 100, 1) if wall else None,
            "rss_kb_max": rss_max[0],
        },
        "harness_sink_cpu_s": round(sink_cpu, 2) if sink_cpu is not None else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="alerts to send (each to every method)")
    ap.add_argument("--rate", type=float, default=0, help="alerts/s; 0 = all at once, as fast as possible")
    ap.add_argument("--methods", default="POST", help="comma-separated: POST, GET, PUT (one 'webhook' each)")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight per method")
    ap.add_argument("--sink-port", type=int, default=0, help="port for the harness's sink (0: a free one)")
    ap.add_argument("--max-wait-s", type=float, default=300)
    ap.add_argument("--harness", type=Path, default=HARNESS)
    opts = ap.parse_args()
    result = run(opts)
    lat = result["latency_all_requests"]
    print(
        f"sent={result['sent']} requests={result['requests']}/{result['requests_expected']} "
        f"lost={result['lost_msgs']} errors={result['errors']} "
        f"alerts/s={result['msgs_completed_per_s']} requests/s={result['deliveries_per_s']} "
        f"p50/p99={lat.get('p50_ms')}/{lat.get('p99_ms')} ms cpu={result['loop']['cpu_s']} s",
        file=sys.stderr,
    )
    print(json.dumps(result, separators=(",", ":")))
    return 0 if result["lost_msgs"] == 0 and not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
