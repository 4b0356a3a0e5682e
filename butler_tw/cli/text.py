"""How the ``butler-tw`` commands say things: tables, TLS modes, addresses, durations. Pure.

One wording for each, shared by the commands (``[host]:port`` itself is
:func:`butler_tw.daemon.startup.hostport`, which the daemon's lines use too).
"""

from __future__ import annotations

import re
import socket
from typing import Sequence

from butler_tw.config import TrustMode, Webhook
from butler_tw.core.words import count


def format_table(rows: Sequence[Sequence[str]], cut: int | None = None) -> str:
    """Rows as left-aligned columns two spaces apart.

    :param cut: the widest a cell may be, longer ones are cut; never in the
        first column (an id, which the admin pastes into another command).
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if cut is not None:
        widths[1:] = [min(cut, w) for w in widths[1:]]
    return "".join(
        "  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows
    )


def host_name() -> str:
    """This machine's name, as a datagram's or a test alert's hostName (no odd characters)."""
    return re.sub(r"[^A-Za-z0-9.\-_]", "-", socket.gethostname()) or "localhost"


def reachable(host: str) -> str:
    """Where a client on this machine reaches a server that listens on ``host``: loopback for a wildcard."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - describing, not binding


def duration(seconds: float) -> str:
    """``300`` as ``5 min``, ``7200`` as ``2 h``; odd values in seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def tls_mode(webhook: Webhook) -> TrustMode | None:
    """How the webhook's server certificate is checked; None for an http URL (no TLS)."""
    return webhook.tls.mode if webhook.usesTls else None


def tls_words(webhook: Webhook, summary: bool = False) -> str:
    """The webhook's TLS mode in words: short, for a table column; or, as a ``summary``, what it trusts."""
    tls = webhook.tls
    mode = tls_mode(webhook)
    if mode is None:
        unused = summary and tls.mode is not TrustMode.PLATFORM
        return "none (http)" + (" (its cert block is not used: the URL is http)" if unused else "")
    if mode is TrustMode.NO_VERIFY:
        return (
            "NO verification (cert.rejectUnauthorized: false)"
            if summary
            else "no verification (NOT verified)"
        )
    if not summary:
        return str(mode.value)
    if mode is TrustMode.CUSTOM_CA:
        certificates = count(len(tls.caCertificates), "certificate", "certificates")
        return f"custom CA: only the {certificates} in {tls.caFile}"
    return "platform: the system's CA store"
