#!/usr/bin/env python3
"""Benchmark butler-tw with the shared harness (../shared/tools/udp_webhook_bench.py).

Starts the installed `twistd -n butler-webhook` with a generated config (1 or
3 webhooks: POST, GET and PUT to the harness's sink, rate limit off so every
datagram is an alert), runs one harness scenario per line of SCENARIOS, and
prints a Markdown table. Each scenario gets a fresh daemon; its idle RSS is
read 2 s after start-up, its counters from the line it logs when stopped. The
"treq loop" rows run bench/treq_loop.py against the same sink: the ceiling
that treq itself reaches on this machine.

    make install    # the daemon measured is the installed one
    .venv/bin/python bench/run.py [--quick] [--only TEXT] [--rmem-max BYTES] [--out FILE] [--profile DIR]

--rmem-max (root) sets net.core.rmem_max for the run, and puts the original
value back at the end; rows that say "rmem_max 4 MiB" are run only then.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    HARNESS,
    Daemon,
    Rmem,
    config_text,
    cpu_s,
    free_port,
    machine,
    mib,
    thread_cpu_s,
    versions,
    wait_quiet,
)
from profile_summary import summarise  # noqa: E402

BENCH = Path(__file__).resolve().parent
MIB4 = 4 * 1024 * 1024


def scenario(label, args, webhooks, outbox="sqlite", rmem=None, templated=False, udp_extra="", ours=""):  # type: ignore[no-untyped-def]
    """outbox: "sqlite", "memory", or "treq loop" (args are then bench/treq_loop.py's).

    templated: the webhooks are POSTs with a ``body:`` template (bench/common.py TEMPLATED_BODY).
    """
    return {
        "label": label,
        "args": args,
        "webhooks": webhooks,
        "outbox": outbox,
        "rmem": rmem,
        "templated": templated,
        "udp_extra": udp_extra,
        "ours": ours,
    }


BURST2000 = ["--n", "2000", "--rate", "0"]
STEADY200 = ["--n", "3000", "--rate", "200"]
STEADY500 = ["--n", "15000", "--rate", "500", "--max-wait-s", "120"]
STEADY2000 = ["--n", "60000", "--rate", "2000", "--max-wait-s", "180"]
BURST10000 = ["--n", "10000", "--rate", "0", "--max-wait-s", "300"]
STOCK_BUFFER = "\n    receiveBufferBytes: 212992"
STORE_PROCESS = "butlerWebhook:\n  storeProcess: true\n"

SCENARIOS = [
    scenario("burst 2000", BURST2000, 3),
    scenario("burst 2000", BURST2000, 3, "memory"),
    scenario("burst 2000", BURST2000, 1),
    scenario("burst 2000", BURST2000, 1, "memory"),
    scenario("steady 200/s, 15 s", STEADY200, 3),
    scenario("steady 200/s, 15 s", STEADY200, 3, "memory"),
    scenario("steady 500/s, 30 s", STEADY500, 3),
    scenario("steady 500/s, 30 s, store process", STEADY500, 3, ours=STORE_PROCESS),
    scenario("steady 500/s, 30 s", STEADY500, 3, "memory"),
    scenario(
        "steady 500/s, 30 s", ["--n", "15000", "--rate", "500", "--methods", "POST,GET,PUT"], 3, "treq loop"
    ),
    scenario("steady 500/s, 30 s, templated", STEADY500, 3, templated=True),
    scenario("steady 2000/s, 30 s", STEADY2000, 1),
    scenario("steady 2000/s, 30 s, store process", STEADY2000, 1, ours=STORE_PROCESS),
    scenario("steady 2000/s, 30 s", STEADY2000, 1, "memory"),
    scenario("steady 2000/s, 30 s", ["--n", "60000", "--rate", "2000", "--methods", "POST"], 1, "treq loop"),
    # Offered faster than either can go, slowly enough that the kernel keeps every datagram.
    scenario("20000 offered at 4000/s", ["--n", "20000", "--rate", "4000"], 1),
    scenario("20000 offered at 4000/s", ["--n", "20000", "--rate", "4000"], 1, "memory"),
    scenario(
        "20000 offered at 4000/s", ["--n", "20000", "--rate", "4000", "--methods", "POST"], 1, "treq loop"
    ),
    scenario("burst 10000", BURST10000, 3),
    scenario("burst 10000, `rmem_max` 4 MiB", BURST10000, 3, rmem=MIB4),
    # What a daemon without CAP_NET_ADMIN gets at the distribution's default rmem_max (212992):
    # the buffer is asked for at that size, so the rows mean the same as root or not.
    scenario("burst 10000, buffer 212992, intake process", BURST10000, 1, udp_extra=STOCK_BUFFER),
    scenario(
        "burst 10000, buffer 212992, read in-process",
        BURST10000,
        1,
        udp_extra=STOCK_BUFFER,
        ours="butlerWebhook:\n  intakeProcess: false\n",
    ),
    scenario(
        "receiver answers in 2 s, 300 at 100/s",
        ["--n", "300", "--rate", "100", "--sink-delay-ms", "2000"],
        3,
    ),
]
QUICK = [SCENARIOS[0], SCENARIOS[4]]


def run_daemon(s: dict, harness: Path, workdir: Path, profile: Path | None = None) -> dict:
    udp, sink = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    daemon = Daemon(
        workdir,
        config_text(udp, sink, s["webhooks"], s["udp_extra"], templated=s["templated"], ours=s["ours"]),
        s["outbox"],
        name=f"daemon-{udp}",
    )
    daemon.start()
    spy = None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^a-z0-9]+", "-", f"{s['label']} {s['webhooks']} {s['outbox']}".lower()).strip("-")
        out_file = profile / f"{name}.txt"
        pyspy = Path(sys.executable).parent / "py-spy"
        spy = subprocess.Popen(
            [
                str(pyspy),
                "record",
                "-p",
                str(daemon.pid),
                "-f",
                "raw",
                "--nolineno",
                "--subprocesses",
                "-t",
                "-o",
                str(out_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    threads0 = thread_cpu_s(daemon.pid)
    children0 = {pid: cpu_s(pid) or 0.0 for pid in children(daemon.pid)}
    try:
        cmd = [
            sys.executable,
            str(harness),
            "throughput",
            *s["args"],
            "--udp-port",
            str(udp),
            "--sink-port",
            str(sink),
            "--pid",
            str(daemon.pid),
            "--expect-per-msg",
            str(s["webhooks"]),
            "--label",
            s["label"],
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        threads1 = thread_cpu_s(daemon.pid)
        children1 = {pid: cpu_s(pid) or 0.0 for pid in children(daemon.pid)}
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        counters = daemon.stop()
    if spy is not None:
        result["profile"] = str(out_file)
        print(summarise(out_file, 15), file=sys.stderr)
    used = {tid: round(cpu - threads0.get(tid, 0.0), 2) for tid, cpu in threads1.items()}
    result["daemon_thread_cpu_s"] = {
        "reactor": used.pop(daemon.pid, 0.0),
        "busiest other": max(used.values(), default=0.0),
        "all others": round(sum(used.values()), 2),
    }
    # Its child processes (the intake process; the outbox process with storeProcess): the second core.
    result["children_cpu_s"] = round(sum(cpu - children0.get(pid, 0.0) for pid, cpu in children1.items()), 2)
    result["daemon_counters"] = counters
    result["daemon_idle_rss_kb"] = daemon.idle_rss_kb
    result["daemon_receive_buffer_kib"] = daemon.receive_buffer_kib
    return result


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run_treq(s: dict, harness: Path) -> dict:
    cmd = [sys.executable, str(BENCH / "treq_loop.py"), *s["args"], "--harness", str(harness)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two short scenarios only")
    ap.add_argument("--only", action="append", help="only scenarios whose label or outbox contains this")
    ap.add_argument("--rmem-max", type=int, help="set net.core.rmem_max to this for the run (root)")
    ap.add_argument(
        "--no-wait-quiet",
        dest="wait_quiet",
        action="store_false",
        help="start each row at once, even while other programs keep the CPUs busy",
    )
    ap.add_argument("--harness", type=Path, default=HARNESS)
    ap.add_argument("--out", type=Path, help="also write the raw JSON results here")
    ap.add_argument(
        "--profile", type=Path, help="py-spy every daemon row into this folder (pip install py-spy)"
    )
    opts = ap.parse_args()
    chosen = QUICK if opts.quick else SCENARIOS
    if opts.only:
        chosen = [s for s in chosen if any(o in s["label"] or o in s["outbox"] for o in opts.only)]
    rmem = Rmem()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for s in chosen:
                if s["rmem"] is not None and opts.rmem_max is None:
                    print(f"skipped (needs --rmem-max): {s['label']}", file=sys.stderr)
                    continue
                if opts.rmem_max is not None:
                    rmem.set(s["rmem"] or opts.rmem_max)
                busy = wait_quiet() if opts.wait_quiet else None
                print(f"running: {s['label']}, {s['webhooks']} webhook(s), {s['outbox']}", file=sys.stderr)
                if s["outbox"] == "treq loop":
                    r = run_treq(s, opts.harness)
                else:
                    r = run_daemon(s, opts.harness, Path(tmp), opts.profile)
                r.update(
                    _label=s["label"],
                    _webhooks=s["webhooks"],
                    _outbox=s["outbox"],
                    _rmem=Rmem.get(),
                    _busy_before=busy,
                )
                results.append(r)
                print("  " + " | ".join(str(x) for x in summary(r)), file=sys.stderr)
    finally:
        rmem.restore()
    if opts.out:
        opts.out.write_text(json.dumps(results, indent=1))
    print(f"Machine: {machine()}\n{versions()}\n")
    print(
        "| scenario | webhooks | outbox | sent | lost | kernel drops | daemon: received / accepted / "
        "delivered | alerts/s delivered | first request p50 / p99 ms | every request p99 ms "
        "| RSS idle / max MiB | CPU s (daemon + its children) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print("| " + " | ".join(str(x) for x in summary(r)) + " |")
    return 0


def summary(r: dict) -> list:
    first = r.get("latency_first_request", {})
    every = r.get("latency_all_requests", {})
    if r["_outbox"] == "treq loop":
        loop = r["loop"]
        drops, counters = "-", "-"
        rss = f"- / {mib(loop['rss_kb_max'])}"
        cpu = loop["cpu_s"]
    else:
        daemon = r.get("daemon") or {}
        kernel = r.get("udp_kernel_delta", {})
        c = r.get("daemon_counters", {})
        drops = kernel.get("socket_drops", kernel.get("RcvbufErrors", "-"))
        counters = (
            f"{c.get('datagrams_received', '?')} / {c.get('alerts_accepted', '?')} / "
            f"{c.get('deliveries_delivered', '?')}"
        )
        peak = max(daemon.get("rss_kb_max") or 0, daemon.get("vmhwm_kb_end") or 0)
        rss = f"{mib(r.get('daemon_idle_rss_kb'))} / {mib(peak)}"
        cpu = f"{daemon.get('cpu_s', '-')} + {r.get('children_cpu_s', '-')}"
    return [
        r["_label"],
        r["_webhooks"],
        r["_outbox"],
        r.get("sent"),
        r.get("lost_msgs"),
        drops,
        counters,
        r.get("msgs_completed_per_s"),
        f"{first.get('p50_ms', '-')} / {first.get('p99_ms', '-')}",
        every.get("p99_ms", "-"),
        rss,
        cpu,
    ]


if __name__ == "__main__":
    raise SystemExit(main())
