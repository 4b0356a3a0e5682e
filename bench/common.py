"""What the benchmark scripts share: a daemon to start and stop, its config, /proc readings.

The daemon is the *installed* one (`.venv/bin/twistd butler-webhook`, run from
a scratch directory so that the working tree is not on its path): run
`make install` after changing the code.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT.parent / "shared" / "tools" / "udp_webhook_bench.py"
RMEM_MAX = Path("/proc/sys/net/core/rmem_max")


def free_port(kind: int) -> int:
    """A port nobody listens on now (the kernel picks it), so concurrent runs never collide."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: A ``body:`` template of every field, as a chat or ticketing message would use them.
TEMPLATED_BODY = """
          body:
            taskId: "{{ taskId }}"
            title: "{{ event }}: {{ taskName }}"
            text: "{{ logMessage }}"
            facts:
              - {name: Host, value: "{{ hostName }}"}
              - {name: User, value: "{{ user }}"}
              - {name: App, value: "{{ appName }} ({{ appId }})"}
              - {name: Time, value: "{{ logTimeStamp }}"}
              - {name: Execution, value: "{{ executionId }} ({{ kind }})"}"""


def config_text(
    udp: int, sink: int, webhooks: int, udp_extra: str = "", templated: bool = False, ours: str = ""
) -> str:
    """A config with 1-3 webhooks (POST, GET with a token in its URL, PUT) to the sink, no rate limit.

    ``templated``: 1-3 POST webhooks, each with :data:`TEMPLATED_BODY` (the
    harness finds its ``taskId`` in the JSON body).
    """
    methods = ["POST"] * webhooks if templated else ["POST", "GET", "PUT"][:webhooks]
    hooks = "".join(
        f"""
        - description: bench {m} {i}
          webhookURL: http://127.0.0.1:{sink}/bench/{m.lower()}{i}{"?token=bench" if m == "GET" else ""}
          httpMethod: {m}
          concurrency: 16{TEMPLATED_BODY if templated else ""}"""
        for i, m in enumerate(methods)
    )
    return f"""
Butler:
  udpServerConfig:
    enable: true
    serverHost: 127.0.0.1
    portTaskFailure: {udp}{udp_extra}
  webhookNotification:
    enable: true
    reloadTaskFailure:
      rateLimit: 0
      webhooks:{hooks}
    reloadTaskAborted:
      rateLimit: 0
      webhooks:{hooks}
{ours}"""


def rss_kb(pid: int) -> int | None:
    """The process's resident set (VmRSS), in KiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used by the process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds used so far by each thread of the process, by thread id (the main thread's is ``pid``)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            parts = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        out[int(task.name)] = (int(parts[11]) + int(parts[12])) / tick
    return out


def mib(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb else None


class Daemon:
    """`twistd -n butler-webhook` with a generated config, in ``workdir``.

    ``start()`` returns once the daemon listens and has been idle for
    ``settle`` seconds, and records its idle RSS; ``stop()`` sends SIGTERM and
    returns the counters it logs on the way out.
    """

    def __init__(self, workdir: Path, config: str, outbox: str = "sqlite", name: str = "daemon") -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = self.workdir / "butler.yaml"
        self.config.write_text(config)
        self.log = self.workdir / "daemon.log"
        self.outbox = outbox
        self.proc: subprocess.Popen[bytes] | None = None
        self.idle_rss_kb: int | None = None
        self.receive_buffer_kib: int | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, settle: float = 2.0) -> Daemon:
        twistd = Path(sys.executable).parent / "twistd"
        extra = ["--in-memory-outbox"] if self.outbox == "memory" else []
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(twistd), "-n", "--pidfile=", "butler-webhook", "--config", str(self.config), *extra],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + 30
        while b"Listening for Qlik Sense" not in self.log.read_bytes():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"daemon did not start: see {self.log}\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        m = re.search(r"receive buffer (\d+) KiB", self.log.read_text())
        self.receive_buffer_kib = int(m.group(1)) if m else None
        time.sleep(settle)
        self.idle_rss_kb = rss_kb(self.pid)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60) -> dict[str, int]:
        """SIGTERM, wait, and the counters from its last log line ("Stopped. Counters: {...}")."""
        if self.proc is None:
            return {}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.counters()

    def counters(self) -> dict[str, int]:
        found = re.findall(r"Stopped\. Counters: (\{.*\})", self.log.read_text(errors="replace"))
        return ast.literal_eval(found[-1]) if found else {}

    def log_lines(self, pattern: str) -> list[str]:
        return [
            line for line in self.log.read_text(errors="replace").splitlines() if re.search(pattern, line)
        ]


def busy_pct(interval: float = 1.0) -> float:
    """How busy all CPUs were over ``interval`` seconds, in % of the machine."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values), idle

    total0, idle0 = read()
    time.sleep(interval)
    total1, idle1 = read()
    return round(100 * (1 - (idle1 - idle0) / max(1, total1 - total0)), 1)


def wait_quiet(limit: float = 15.0, patience: float = 300.0) -> float:
    """Wait until the machine is nearly idle (others' test runs share its 2 cores); the busy % seen.

    Gives up after ``patience`` seconds and returns the last reading, so a busy
    machine slows a run down but never stalls it.
    """
    deadline = time.time() + patience
    busy = busy_pct()
    while busy > limit and time.time() < deadline:
        print(f"  machine {busy:.0f} % busy: waiting for it to quieten", file=sys.stderr)
        time.sleep(4)
        busy = busy_pct()
    return busy


class Rmem:
    """Sets net.core.rmem_max (root only) and puts the original value back."""

    def __init__(self) -> None:
        self.original = self.get()

    @staticmethod
    def get() -> int:
        return int(RMEM_MAX.read_text())

    def set(self, value: int) -> None:
        if self.get() != value:
            subprocess.run(["sysctl", "-q", "-w", f"net.core.rmem_max={value}"], check=True)

    def restore(self) -> None:
        self.set(self.original)


def load_harness(path: Path = HARNESS) -> ModuleType:
    """The shared harness as a module (for its HTTP sink and its percentile helpers)."""
    spec = importlib.util.spec_from_file_location("udp_webhook_bench", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the harness from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def versions() -> str:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    rev = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"butler-tw {version('butler-tw')} (installed from {rev or 'unknown'}), Twisted {version('Twisted')}, "
        f"treq {version('treq')}, SQLite {sqlite3.sqlite_version}, net.core.rmem_max {Rmem.get()}"
    )
