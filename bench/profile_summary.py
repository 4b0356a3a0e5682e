#!/usr/bin/env python3
"""Summarise a py-spy raw profile (`py-spy record -f raw`): where the daemon's CPU goes.

Prints the share of samples per thread, the functions with the most samples
on top of the stack (self), and the ones with the most samples anywhere in
the stack (inclusive), plus a rough split by area (HTTP client, outbox,
parsing, reactor, logging).

    .venv/bin/python bench/profile_summary.py PROFILE.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

#: (area, pattern on "function (file)"), first match wins, tried from the top of the stack down.
AREAS = [
    ("SQLite outbox", r"sqlitestore|outbox\.py|sqlite3"),
    ("parse / rate limit / dedup", r"wireformat|ratelimit|dedup\.py|gate\.py|admission\.py \(|udp\.py"),
    ("logging", r"twisted/logger|logger/"),
    (
        "HTTP client (treq, twisted.web client, hyperlink)",
        r"treq/|web/client|web/_newclient|hyperlink|idna|http_headers|butler_tw/http\.py|payload\.py",
    ),
    ("dispatch / retry bookkeeping", r"dispatch\.py|retry\.py|service\.py"),
    ("Deferred machinery", r"internet/defer\.py"),
    (
        "TCP / reactor",
        r"internet/tcp|internet/abstract|epollreactor|internet/base|posixbase|internet/udp|log\.py",
    ),
]


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in AREAS:
            if re.search(pattern, frame):
                return name
    return "other"


def summarise(path: Path, top: int = 25) -> str:
    stacks = parse(path)
    total = sum(n for _, n in stacks) or 1
    threads: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    for frames, n in stacks:
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "-"
        threads[thread] += n
        body = [f for f in frames if not f.startswith(("thread", "process"))]
        if body:
            self_[body[-1]] += n
        for f in set(body):
            incl[f] += n
        areas[area(body)] += n
    out = [f"{path}: {total} samples"]
    out.append("threads: " + ", ".join(f"{t} {100 * n / total:.0f} %" for t, n in threads.most_common()))
    out.append("by area (innermost matching frame):")
    out += [f"  {100 * n / total:5.1f} %  {a}" for a, n in areas.most_common()]
    out.append(f"top {top} self:")
    out += [f"  {100 * n / total:5.1f} %  {f}" for f, n in self_.most_common(top)]
    out.append(f"top {top} inclusive:")
    out += [f"  {100 * n / total:5.1f} %  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=25)
    opts = ap.parse_args()
    print(summarise(opts.profile, opts.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
