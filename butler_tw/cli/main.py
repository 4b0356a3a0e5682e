"""``butler-tw``: the admin command line.

    butler-tw deliveries [-c F] [--state pending|dead] [--limit N]
    butler-tw replay [-c F] (ID ... | --all-dead) [--to NAME]
    butler-tw store init|status [-c F]
    butler-tw check-config [-c F] [--reload]
    butler-tw send-test [-c F] [--event failed|aborted] [--webhook NAME]
    butler-tw render [-c F] --webhook NAME [--kind failed|aborted] [--datagram LINE]
    butler-tw emit [HOST:PORT | -c F] [--event failed|aborted] [--task-id ID] [--count N]
    butler-tw receive [--port P] [--host H] [--tls] [--cert-dir D] [--status CODE]

Every command that reads the config takes it as ``-c/--config F``, by
default :data:`~butler_tw.startup.DEFAULT_CONFIG` (``check-config F`` and
``send-test F`` still work too). A config problem exits
:data:`~butler_tw.startup.EX_CONFIG` (78), as the daemon does.

This module is the parser and the dispatch; each command is a module of
its own: :mod:`~butler_tw.cli.checkconfig`, :mod:`~butler_tw.cli.deliveries`
(``deliveries`` and ``replay``, on the configured outbox: SQLite, or the
PostgreSQL one a cluster shares, reached through :mod:`~butler_tw.cli.store`),
:mod:`~butler_tw.cli.storecommand` (``store init`` and ``store status``),
:mod:`~butler_tw.cli.sendtest`, :mod:`~butler_tw.cli.emit` and
:mod:`~butler_tw.cli.receive`, with their shared wording in
:mod:`~butler_tw.cli.text`. Nothing prints a webhook URL whole: only
:func:`~butler_tw.core.redact.redact_url` of it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence, TextIO

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater, react
from twisted.python.failure import Failure

from butler_tw.cli import emit, receive, render, sendtest
from butler_tw.cli.checkconfig import check_config
from butler_tw.cli.deliveries import list_deliveries, replay_deliveries
from butler_tw.cli.store import EX_STORE, StoreUnavailable, open_outbox
from butler_tw.cli.storecommand import store_init, store_status
from butler_tw.config import ConfigError, load_config
from butler_tw.core.alert import EventKind
from butler_tw.daemon.startup import DEFAULT_CONFIG, EX_CONFIG

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
        "or --to problem. On a shared (PostgreSQL) store, a re-queued delivery is taken by whichever "
        "daemon polls first.",
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

    storing = sub.add_parser(
        "store",
        help="set up the outbox store, or show the cluster sharing it",
        description="The outbox store butlerWebhook.store names: SQLite in stateDir (the default), or a "
        f"PostgreSQL database shared by two or more daemons. Exit 0, {EX_STORE} if the store cannot be used.",
    )
    actions = storing.add_subparsers(dest="action", required=True)
    init = actions.add_parser(
        "init",
        help="create the outbox, or bring its schema up to date",
        description="Create the configured outbox or migrate its schema to this version's, as a daemon "
        "does at its start (safe while daemons run): for a shared store, before the first daemon starts "
        "or to use deliveries and replay before one has. With SQLite, creates the database in stateDir.",
    )
    _config_option(init)
    status = actions.add_parser(
        "status",
        help="the daemons sharing the store, what each holds, how deep the outbox is",
        description="With a shared (PostgreSQL) store: every instance that has used it, whether it is up, "
        "silent (not renewing its leases) or stopped, the pending deliveries it holds; and the pending, "
        "unclaimed and dead deliveries of the cluster. Creates nothing.",
    )
    _config_option(status)

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

    rendering = sub.add_parser(
        "render",
        help="print the exact request a webhook would get, without sending it",
        description="Build the request the daemon would send to the named webhook (its format or body: "
        "template, headers, auth, signature) for a sample alert or for --datagram, and print it: the URL "
        "redacted, header values masked but the harmless ones, the body as sent. Exit 0, 1 if its "
        "template fails for the alert, 2 if no webhook matched.",
    )
    _config_argument(rendering)
    rendering.add_argument("--webhook", metavar="NAME", required=True, help="its name, description or key")
    rendering.add_argument(
        "--kind",
        choices=tuple(_EVENTS),
        help="a sample failed or aborted alert (default: the webhook's kind)",
    )
    rendering.add_argument(
        "--datagram", metavar="LINE", help="a datagram as Qlik sends it: /scheduler-task-failed/;host;..."
    )

    emitting = sub.add_parser(
        "emit",
        help="send sample Qlik scheduler datagrams to a daemon",
        description="Send sample Qlik Sense scheduler datagrams (as its UDP log appender does), each "
        "with a fresh executionId, to HOST:PORT or else to where the config's daemon listens.",
    )
    emitting.add_argument(
        "target",
        nargs="?",
        metavar="HOST:PORT",
        help="where the daemon listens, e.g. 127.0.0.1:9998 or [::1]:9998 (default: serverHost and "
        "portTaskFailure of the config)",
    )
    _config_option(emitting)
    emitting.add_argument(
        "--event", choices=tuple(_EVENTS), default="failed", help="failed (default) or aborted"
    )
    emitting.add_argument(
        "--task-id", default=emit.SAMPLE_TASK_ID, help="the taskId (a GUID) of the datagrams"
    )
    emitting.add_argument("--count", type=int, default=1, help="how many datagrams (default 1)")

    receiving = sub.add_parser(
        "receive",
        help="a local webhook receiver that prints every request",
        description="A local webhook receiver: prints every request readably and answers 200 (or "
        "--status). Runs until Ctrl-C.",
    )
    receiving.add_argument(
        "--port", type=int, default=18080, help="TCP port (default 18080, as config/butler.example.yaml)"
    )
    receiving.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; :: for all)"
    )
    receiving.add_argument(
        "--tls", action="store_true", help="HTTPS, with a throwaway certificate made at start"
    )
    receiving.add_argument(
        "--cert-dir", help="with --tls: where to write ca.pem (default: a new temporary directory)"
    )
    receiving.add_argument(
        "--verify-secret",
        metavar="SECRET",
        help="check every request's Standard Webhooks signature with this whsec_... secret, and say "
        "which fail",
    )
    receiving.add_argument(
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
    if args.command in ("check-config", "send-test", "render"):
        args.config = _config_path(parser, args)
    if args.command in _REACTOR_COMMANDS:
        return _react(lambda reactor: run_on_reactor(args, reactor, out, err), args.command, err)
    if args.command == "check-config":
        return check_config(args.config, out, err, reload=args.reload)
    if args.command == "render":
        try:
            config = load_config(args.config)
        except ConfigError as e:
            return _config_problem(e, err)
        kind = _EVENTS[args.kind] if args.kind else None
        return render.render(config, args.webhook, kind, args.datagram, out, err)
    if args.command == "emit":
        target = args.target
        if target is None:
            try:
                target = emit.emit_target(load_config(args.config))
            except ConfigError as e:
                return _config_problem(e, err)
        return emit.emit(target, _EVENTS[args.event], args.task_id, args.count, out, err)
    if args.command == "replay" and not args.all_dead and not args.ids:
        parser.error("replay needs delivery ids or --all-dead")
    try:
        config = load_config(args.config)
    except ConfigError as e:
        return _config_problem(e, err)
    if args.command == "store":
        if args.action == "init":
            return store_init(config, out, err)
        return store_status(config, out, err, args.config)
    try:
        outbox = open_outbox(config, args.config)
        try:
            if args.command == "deliveries":
                return list_deliveries(outbox, config, args.state, args.limit, out)
            return replay_deliveries(outbox, config, args.ids, args.all_dead, args.to, out, err, args.config)
        finally:
            outbox.close()
    except StoreUnavailable as e:
        err.write(f"butler-tw: {e}\n")
        return EX_STORE


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
        return receive.receive(
            reactor, out, err, args.host, args.port, args.tls, args.cert_dir, args.status, args.verify_secret
        )
    try:
        config = load_config(args.config)
    except ConfigError as e:
        return succeed(_config_problem(e, err))
    kind = _EVENTS[args.event] if args.event else None
    return sendtest.send_test(reactor, config, kind, args.webhook, out, err)


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


if __name__ == "__main__":
    raise SystemExit(main())
