"""``butler-tw``: the admin command line.

    butler-tw deliveries [-c F] [--state pending|dead] [--limit N]
    butler-tw replay [-c F] (ID ... | --all-dead) [--to NAME]
    butler-tw check-config [-c F] [--reload]
    butler-tw send-test [-c F] [--event failed|aborted] [--webhook NAME]
    butler-tw emit [HOST:PORT | -c F] [--event failed|aborted] [--task-id ID] [--count N]
    butler-tw receive [--port P] [--host H] [--tls] [--cert-dir D] [--status CODE]

Every command that reads the config takes it as ``-c/--config F``, by
default :data:`~butler_tw.startup.DEFAULT_CONFIG` (``check-config F`` and
``send-test F`` still work too). A config problem exits
:data:`~butler_tw.startup.EX_CONFIG` (78), as the daemon does.

``deliveries`` and ``replay`` open the daemon's SQLite outbox directly (WAL
lets them read and write while the daemon runs). A replayed delivery starts
its retry schedule afresh when the daemon takes it up: a running one within
a few seconds, a stopped one at its start. ``replay`` re-queues only what the
daemon will send (see :mod:`butler_tw.replay`) and says why not for the rest.

``check-config`` runs the daemon's start-up checks
(:func:`butler_tw.startup.check`) and summarises the file. ``send-test``, ``emit`` and ``receive`` (in
:mod:`butler_tw.tryout`) try webhooks and the daemon out. Nothing prints a
webhook URL whole: only :func:`~butler_tw.redact.redact_url` of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Sequence, TextIO
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater, react
from twisted.python.failure import Failure

from butler_tw.cli import tryout
from butler_tw.config import Config, ConfigError, TrustMode, Webhook, load_config
from butler_tw.core.alert import EventKind
from butler_tw.core.delivery import Delivery, describe_key
from butler_tw.core.sources import SourceFilter
from butler_tw.core.words import admin_command, count
from butler_tw.daemon.startup import DEFAULT_CONFIG, EX_CONFIG, StartupError, check, hostport
from butler_tw.delivery.replay import plan_replay
from butler_tw.delivery.stores.sqlite import (
    SELECT_DELIVERIES,
    StoreError,
    connect,
    db_path,
    iter_rows,
    replay_dead,
)

_EVENTS = {"failed": EventKind.FAILED, "aborted": EventKind.ABORTED}
#: Commands that run on the reactor (through :func:`run_on_reactor`).
_REACTOR_COMMANDS = ("send-test", "receive")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="butler-tw",
        description="Check the config, test the webhooks, try the daemon out, inspect and replay deliveries.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("deliveries", help="list pending or dead deliveries")
    _config_option(show)
    show.add_argument("--state", choices=("pending", "dead"), help="only this state (default: both)")
    show.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")

    replay = sub.add_parser(
        "replay",
        help="re-queue dead deliveries",
        description="Re-queue dead deliveries to their webhook, or one that sends where it sent (the same "
        "method and URL), or the --to webhook. What the daemon would only make a dead letter again is "
        "not re-queued: one line says why. Exit 0, 1 if some were not re-queued, 2 on a config, outbox "
        "or --to problem.",
    )
    _config_option(replay)
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], help="delivery ids, or alert ids (all of that alert's)")
    which.add_argument("--all-dead", action="store_true", help="every dead delivery")
    replay.add_argument(
        "--to",
        metavar="NAME",
        help="send them to this webhook (its name, description or key, e.g. reloadTaskFailure.webhooks[0]) "
        "instead: for the dead letters of a removed webhook",
    )

    check = sub.add_parser(
        "check-config",
        help="run the daemon's start-up checks on a config file, and summarise it",
        description="Run exactly the checks the daemon runs at start-up (the file and its CA files, "
        "serverHost and allowedSources resolve, the UDP port and http.listen can be bound, stateDir "
        "can be written; nothing is changed) and print what the file configures. Exit 0, or "
        f"{EX_CONFIG} with every problem on stderr, as the daemon would print it.",
    )
    _config_argument(check)
    check.add_argument(
        "--reload",
        action="store_true",
        help="check as for a SIGHUP reload of the running daemon: not the ports or stateDir, which it "
        "holds (changing them needs a restart)",
    )

    test = sub.add_parser(
        "send-test",
        help="send a test alert to the configured webhooks now",
        description="Send a clearly marked synthetic alert now to every webhook of one kind (or only the "
        "named one), bypassing rate limits and the outbox, and print the result of each call. "
        f"Exit 0 if every webhook answered 2xx, 1 otherwise ({EX_CONFIG} for a config problem, 2 if no "
        "webhook matched).",
    )
    _config_argument(test)
    test.add_argument(
        "--event",
        choices=tuple(_EVENTS),
        help="which webhooks: reloadTaskFailure (failed, the default) or reloadTaskAborted (aborted)",
    )
    test.add_argument(
        "--webhook",
        metavar="NAME",
        help="only the webhook whose description or key (e.g. reloadTaskFailure.webhooks[0]) is NAME",
    )

    emit = sub.add_parser(
        "emit",
        help="send sample Qlik scheduler datagrams to a daemon",
        description="Send sample Qlik Sense scheduler datagrams (as its UDP log appender does), each "
        "with a fresh executionId, to HOST:PORT or else to where the config's daemon listens.",
    )
    emit.add_argument(
        "target",
        nargs="?",
        metavar="HOST:PORT",
        help="where the daemon listens, e.g. 127.0.0.1:9998 or [::1]:9998 (default: serverHost and "
        "portTaskFailure of the config)",
    )
    _config_option(emit)
    emit.add_argument("--event", choices=tuple(_EVENTS), default="failed", help="failed (default) or aborted")
    emit.add_argument("--task-id", default=tryout.SAMPLE_TASK_ID, help="the taskId (a GUID) of the datagrams")
    emit.add_argument("--count", type=int, default=1, help="how many datagrams (default 1)")

    receive = sub.add_parser(
        "receive",
        help="a local webhook receiver that prints every request",
        description="A local webhook receiver: prints every request readably and answers 200 (or "
        "--status). Runs until Ctrl-C.",
    )
    receive.add_argument(
        "--port", type=int, default=18080, help="TCP port (default 18080, as config/butler.example.yaml)"
    )
    receive.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; :: for all)"
    )
    receive.add_argument(
        "--tls", action="store_true", help="HTTPS, with a throwaway certificate made at start"
    )
    receive.add_argument(
        "--cert-dir", help="with --tls: where to write ca.pem (default: a new temporary directory)"
    )
    receive.add_argument(
        "--status", type=int, default=200, help="the HTTP status to answer (default 200; try 503 for retries)"
    )
    return parser


def _config_option(parser: argparse.ArgumentParser, dest: str = "config") -> None:
    """``-c/--config F``, the same for every command (and the daemon)."""
    parser.add_argument(
        "--config",
        "-c",
        dest=dest,
        metavar="F",
        default=DEFAULT_CONFIG if dest == "config" else None,
        help=f"the daemon's config file (default {DEFAULT_CONFIG})",
    )


def _config_argument(parser: argparse.ArgumentParser) -> None:
    """``-c/--config F``, or ``F`` alone (as earlier versions took it)."""
    parser.add_argument("config", nargs="?", metavar="F", help="the same as -c F")
    _config_option(parser, dest="configOption")


def _config_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    if args.config and args.configOption and args.config != args.configOption:
        parser.error(f"{args.command}: two config files given ({args.config} and {args.configOption})")
    return str(args.config or args.configOption or DEFAULT_CONFIG)


def _config_problem(e: ConfigError, err: TextIO) -> int:
    err.write(f"butler-tw: {e}\n")
    return EX_CONFIG


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO | None = None) -> int:
    err = sys.stderr if err is None else err
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("check-config", "send-test"):
        args.config = _config_path(parser, args)
    if args.command in _REACTOR_COMMANDS:
        return _react(lambda reactor: run_on_reactor(args, reactor, out, err), args.command, err)
    if args.command == "check-config":
        return check_config(args.config, out, err, reload=args.reload)
    if args.command == "emit":
        target = args.target
        if target is None:
            try:
                target = emit_target(load_config(args.config))
            except ConfigError as e:
                return _config_problem(e, err)
        return tryout.emit(target, _EVENTS[args.event], args.task_id, args.count, out, err)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        return _config_problem(e, err)
    try:
        conn = connect(config.stateDir, create=False)
    except StoreError as e:
        print(f"butler-tw: {e}", file=err)
        return 2
    if args.command == "deliveries":
        return list_deliveries(conn, config, args.state, args.limit, out)
    if not args.all_dead and not args.ids:
        parser.error("replay needs delivery ids or --all-dead")
    return replay_deliveries(conn, config, args.ids, args.all_dead, args.to, out, err, args.config)


def main_on_reactor(argv: Sequence[str], reactor: Any, out: TextIO, err: TextIO) -> Deferred[int]:
    """Parse ``argv`` for ``send-test`` or ``receive`` and run it on a running ``reactor``.

    What :func:`main` does under ``react()``, for callers (tests) that have a
    reactor running already. ``receive``'s Deferred fires only if it cannot listen.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in _REACTOR_COMMANDS:
        raise ValueError(f"{args.command} does not run on the reactor")
    if args.command == "send-test":
        args.config = _config_path(parser, args)
    return run_on_reactor(args, reactor, out, err)


def run_on_reactor(args: argparse.Namespace, reactor: Any, out: TextIO, err: TextIO) -> Deferred[int]:
    if args.command == "receive":
        return tryout.receive(reactor, out, err, args.host, args.port, args.tls, args.cert_dir, args.status)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        return succeed(_config_problem(e, err))
    kind = _EVENTS[args.event] if args.event else None
    return tryout.send_test(reactor, config, kind, args.webhook, out, err)


def _react(run: Callable[[Any], Deferred[int]], command: str, err: TextIO) -> int:
    """Run ``run(reactor)`` under ``react()``; its result is the exit status (130 if interrupted)."""
    results: list[int] = []

    def crashed(failure: Failure) -> int:
        err.write(f"butler-tw {command}: unexpected error: {failure.getErrorMessage()}\n")
        failure.printTraceback(err)
        return 1

    def start(reactor: Any) -> Deferred[None]:
        # Once the reactor runs, so that its start-up does not count as latency.
        d: Deferred[int] = deferLater(reactor, 0, run, reactor)  # type: ignore[arg-type]
        return d.addErrback(crashed).addCallback(results.append)

    try:
        react(start)
    except SystemExit:
        pass
    if results:
        return results[0]
    return 0 if command == "receive" else 130


# --------------------------------------------------------------------------
# check-config


def check_config(path: str, out: TextIO, err: TextIO, reload: bool = False) -> int:
    """Run the daemon's start-up checks on ``path`` and print a summary, or every problem.

    :param reload: leave out what a reload does not change (ports, stateDir).
    """
    try:
        checked = check(path, listen=not reload, stateDir=not reload)
    except StartupError as e:
        for problem in e.problems:
            err.write(f"butler-tw: {problem}\n")
        return EX_CONFIG
    out.write(describe_config(path, checked.config, checked.udpAddress, checked.sources, checked=not reload))
    return 0


def emit_target(config: Config) -> str:
    """Where ``emit`` sends without HOST:PORT: the config's UDP address (loopback for a wildcard)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.udpHost, config.udpHost)  # noqa: S104
    return hostport(host, config.udpPort)


def _duration(seconds: float) -> str:
    """``300`` as ``5 min``, ``7200`` as ``2 h``; odd values in seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _udp_line(config: Config, address: str) -> str:
    line = hostport(config.udpHost, config.udpPort)
    if address != config.udpHost:
        line += f" (resolves to {address})"
    if address == "0.0.0.0":  # noqa: S104 - describing, not binding
        line += " (every IPv4 address)"
    elif address == "::":
        line += " (every IPv4 and IPv6 address)"
    return line


def _hidden(url: str) -> str:
    parts = urlsplit(url)
    hidden = [
        what for what, there in (("query string", parts.query), ("user info", "@" in parts.netloc)) if there
    ]
    return f"  ({' and '.join(hidden)} not shown)" if hidden else ""


def _tls_line(webhook: Webhook) -> str:
    if not webhook.url.lower().startswith("https:"):
        unused = (
            " (its cert block is not used: the URL is http)"
            if webhook.tls.mode is not TrustMode.PLATFORM
            else ""
        )
        return "none (http)" + unused
    tls = webhook.tls
    if tls.mode is TrustMode.CUSTOM_CA:
        certificates = count(len(tls.caCertificates), "certificate", "certificates")
        return f"custom CA: only the {certificates} in {tls.caFile}"
    if tls.mode is TrustMode.NO_VERIFY:
        return "NO verification (cert.rejectUnauthorized: false)"
    return "platform: the system's CA store"


def _sources_line(config: Config, sources: SourceFilter | None) -> str:
    if sources is None:
        return "any address (enableSourceValidation is off)"
    entries = []
    for entry in config.allowedSources:
        if isinstance(entry, str):
            found = sorted(map(str, sources.names.get(entry, ())))
            entries.append(f"{entry} ({', '.join(found) if found else 'does NOT resolve now'})")
        else:
            entries.append(str(entry) if entry.num_addresses > 1 else str(entry.network_address))
    return "only " + ", ".join(entries) + "; names resolved again every 5 min"


def describe_config(
    path: str, config: Config, address: str, sources: SourceFilter | None = None, checked: bool = True
) -> str:
    """The summary ``check-config`` prints. Holds no URL query, user info or header value.

    :param checked: whether the ports and ``stateDir`` were checked (not for ``--reload``).
    """
    stateDir = config.stateDir
    where = "" if os.path.isabs(stateDir) else ", relative to the working directory"
    if not checked:
        stateState = "not checked: --reload"
    elif os.path.isdir(stateDir):
        stateState = "writable"
    else:
        stateState = "created at start"
    dedup = (
        f"a repeated datagram (same kind and executionId) within {_duration(config.dedupTtl)} is dropped"
        if config.dedupTtl > 0
        else "off"
    )
    lines = [
        f"{path}: valid" + ("" if checked else " for a reload (ports and stateDir not checked)"),
        "",
        f"UDP             {_udp_line(config, address)}",
        f"sources         {_sources_line(config, sources)}",
        "per source      "
        + (
            f"at most {config.sourceRateLimit} datagrams a minute"
            if config.sourceRateLimit
            else "no limit (rateLimit.enable is false)"
        ),
        f"datagrams       up to {config.maxMessageSize} bytes; larger ones are dropped",
        f"memory bound    {config.maxBufferedAlerts} alerts waiting for the outbox; then new ones are shed",
        f"de-duplication  {dedup}",
        f"stateDir        {stateDir} (outbox {db_path(stateDir)}{where}; {stateState})",
        f"dead letters    kept {_duration(config.deadLetterRetention)}",
        f"shutdown        calls in flight get {_duration(config.shutdownGrace)} on SIGTERM",
        f"webhook calls   {'enabled' if config.notificationsEnabled else 'DISABLED'}",
    ]
    warnings = config.warnings()
    for kind, route in config.routes.items():
        limit = (
            f"rate limit: at most one alert per task per {_duration(route.rateLimit)}"
            if route.rateLimit > 0
            else "no rate limit"
        )
        lines += ["", f"{kind.value}: {count(len(route.webhooks), 'webhook', 'webhooks')}, {limit}"]
        if not route.webhooks:
            lines.append("  (none: alerts of this kind are received and counted only)")
        for w in route.webhooks:
            schedule = ", ".join(_duration(s) for s in w.retry.schedule)
            lines += [
                f"  {w.key}: {w.description or '(no description)'}"
                + (f" [name: {w.label}]" if w.label else ""),
                f"    {w.method} {w.loggableUrl}{_hidden(w.url)}",
                f"    TLS {_tls_line(w)}",
                f"    timeout {_duration(w.timeout)}, concurrency {w.concurrency}",
                f"    attempts at {schedule} after the alert; given up after {_duration(w.retry.maxAge)}",
            ]
    lines += ["", "ignored sections: " + (", ".join(config.ignored) if config.ignored else "none")]
    lines += [f"WARNING: {text}" for text in warnings]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# deliveries and replay


def list_deliveries(conn, config: Config, state: str | None, limit: int, out: TextIO) -> int:  # type: ignore[no-untyped-def]
    where = "WHERE d.state = ? " if state else ""
    rows = iter_rows(
        conn,
        SELECT_DELIVERIES + where + "ORDER BY d.state, d.due_at LIMIT ?",
        ([state] if state else []) + [limit],
    )
    names = {w.key: w.name for w in config.webhooks}
    table: list[tuple[str, ...]] = [
        ("DELIVERY ID", "STATE", "EVENT", "TASK", "WEBHOOK", "ATTEMPTS", "LAST OUTCOME", "NEXT ATTEMPT")
    ]
    table += [_row(d, names) for d in rows]
    # Ids are never cut (they are what `replay` takes); long free text is.
    widths = [
        max(len(r[i]) for r in table) if i == 0 else min(60, max(len(r[i]) for r in table))
        for i in range(len(table[0]))
    ]
    for r in table:
        out.write("  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    if not rows:
        out.write(f"(no {state or 'pending or dead'} deliveries)\n")
    return 0


def _row(d: Delivery, names: dict[str, str]) -> tuple[str, ...]:
    due = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.dueAt)) if d.state.value == "pending" else "-"
    return (
        d.id,
        d.state.value,
        d.alert.kind.value,
        f"{d.alert.taskName} ({d.alert.taskId})",
        describe_key(d.webhookKey, names),
        str(d.attempts),
        d.lastOutcome or "-",
        due,
    )


def replay_deliveries(  # type: ignore[no-untyped-def]
    conn,
    config: Config,
    ids: Sequence[str],
    allDead: bool,
    to: str | None,
    out: TextIO,
    err: TextIO,
    configPath: str = DEFAULT_CONFIG,
) -> int:
    """Re-queue the dead deliveries ``ids`` (or all), to ``to`` if given; one line per outcome."""
    target = None
    if to is not None:
        chosen, problem = tryout.select_webhooks(config, None, to)
        if problem is not None:
            err.write(f"butler-tw replay: --to: {problem}\n")
            return 2
        if len(chosen) > 1:
            several = ", ".join(f"{w.name} ({w.key})" for _, w in chosen)
            err.write(
                f"butler-tw replay: --to {to!r} names {len(chosen)} webhooks: {several}; give its key\n"
            )
            return 2
        target = chosen[0][1]
    decisions = replay_dead(
        conn,
        ids,
        allDead,
        lambda dead, bound, existing: plan_replay(dead, config.webhooks, bound, existing, target),
        time.time(),
    )
    names = {w.key: w.name for w in config.webhooks}
    # One line per (webhook, where to, why not), in the order first met.
    groups: dict[tuple[str, str, str], int] = {}
    for d in decisions:
        group = (d.source, names.get(d.target, ""), d.refusal)
        groups[group] = groups.get(group, 0) + 1
    for (source, dest, refusal), n in groups.items():
        what = count(n, "dead delivery", "dead deliveries")
        if refusal:
            out.write(f"not re-queued: {what} of {source}: {refusal}\n")
        elif source == dest:
            out.write(f"re-queued {what} to {dest}\n")
        else:
            out.write(f"re-queued {what} of {source} to {dest}\n")
    found = {d.delivery.id for d in decisions} | {d.delivery.alert.alertId for d in decisions}
    unknown = [i for i in ids if i not in found]
    listCommand = admin_command(configPath, "deliveries", "--state", "dead")
    for i in unknown:
        out.write(f"not re-queued: no dead delivery has the id {i} (see `{listCommand}`)\n")
    if allDead and not decisions:
        out.write("no dead deliveries to re-queue\n")
    return 1 if unknown or any(d.refusal for d in decisions) else 0


if __name__ == "__main__":
    raise SystemExit(main())
