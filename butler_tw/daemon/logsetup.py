"""``butlerWebhook.log``: the log format (text or JSON lines) and the lowest level logged.

twistd sets up logging itself, from its ``--logger`` option: a name of a
factory it imports and calls with no arguments. When the config asks for
something else than twistd's default (text, every level),
:func:`configure` points that option at :func:`observer`, which builds the
observer from what ``configure`` was told. An explicit ``--logger`` or
``--syslog`` on the command line wins. ``--logfile`` is honoured either way.

JSON lines are one object per event and line, with no record separator (log
shippers split on new lines), holding the formatted message and the plain
fields the event was logged with (strings, numbers, booleans): never an
object whose text could carry a URL.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from datetime import datetime, timezone
from typing import IO, Any, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python import logfile
from zope.interface import implementer

#: Events logged with this field set to True pass any level filter: the
#: lines that say the daemon is up and that it stopped (with its counters).
LIFECYCLE = "butler_tw_lifecycle"

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}
# Twisted's own keys and legacy-log keys: not fields of ours.
_INTERNAL = {"format", "message", "isError", "system", "time", "why", "failure", "printed"}


class _Settings:
    format = "text"
    level = "info"
    logfile: str | None = None
    nodaemon = True


_settings = _Settings()


def configure(options: dict[str, Any], format: str, level: str) -> None:
    """Make twistd log in ``format`` at ``level`` and above, unless told otherwise on the command line.

    :param options: twistd's ``ServerOptions`` (our options' ``parent``).
    """
    if format == "text" and level == "debug":
        return  # twistd's own default (every level; info would let debug lines through)
    if options.get("logger") or options.get("syslog"):
        return
    _settings.format = format
    _settings.level = level
    _settings.logfile = options.get("logfile")
    _settings.nodaemon = bool(options.get("nodaemon"))
    options["logger"] = f"{__name__}.observer"


def observer() -> ILogObserver:
    """The observer twistd installs (its ``--logger`` factory): our format, our level."""
    out = _open(_settings.logfile, _settings.nodaemon)
    base = json_lines_observer(out) if _settings.format == "json" else text_observer(out)
    return filtered(base, _settings.level)


def _open(name: str | None, nodaemon: bool) -> IO[str]:
    if name == "-" or (nodaemon and not name):
        return sys.stdout
    logFile = logfile.LogFile.fromFullPath(name or "twistd.log")
    # As twistd's own --logfile observer does: SIGUSR1 rotates (logrotate's postrotate),
    # instead of its default action, which ends the process.
    if signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL:
        from twisted.internet import reactor

        signal.signal(
            signal.SIGUSR1,
            lambda *_: reactor.callFromThread(logFile.rotate),  # type: ignore[attr-defined]
        )
    return cast(IO[str], logFile)


@implementer(ILogFilterPredicate)
class _LevelOrLifecycle:
    def __init__(self, level: str) -> None:
        self._levels = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])

    def __call__(self, event: LogEvent) -> PredicateResult:
        if event.get(LIFECYCLE):
            return cast(PredicateResult, PredicateResult.yes)
        return cast(PredicateResult, self._levels(event))


def filtered(observer: ILogObserver, level: str) -> ILogObserver:
    """``observer`` behind a filter passing ``level`` and above, and the lifecycle lines."""
    return FilteringLogObserver(observer, [_LevelOrLifecycle(level)])


_SKIP = object()


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` if it is plain data (flat lists and mappings of it too), else ``_SKIP``."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return str(value)  # a subclass (an enum, say) as its plain text
    if isinstance(value, int):
        return int(value)
    if depth == 0 and isinstance(value, (list, tuple)):
        items = [_plain(v, 1) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    if depth == 0 and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        pairs = {k: _plain(v, 1) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in pairs.values()) else pairs
    return _SKIP


def event_as_dict(event: LogEvent) -> dict[str, Any]:
    """The JSON object of one event: time, level, namespace, message, plain fields, error."""
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(
            timespec="milliseconds"
        ),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": message(event),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in _INTERNAL or key in record or key == LIFECYCLE:
            continue
        plain = _plain(value)
        if plain is not _SKIP:
            record[key] = plain
    failure = event.get("log_failure")
    if failure is not None:
        record["error"] = getattr(failure.type, "__name__", str(failure.type))
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:  # a failure that cannot even describe itself
            record["traceback"] = repr(failure.value)
    return record


def message(event: LogEvent) -> str:
    """The event's text, as :func:`twisted.logger.formatEvent` makes it, in a fifth of the time.

    Our formats are plain :meth:`str.format` fields (``{name}``, ``{name!r}``, ``{a.b}``),
    which :meth:`str.format_map` fills in C; Twisted's own formatter (a Python
    ``string.Formatter`` that also calls ``{name()}``) is for the rest, and for every event
    that ``format_map`` cannot fill, so the text is the same either way.
    """
    fmt = event.get("log_format")
    if type(fmt) is str and "log_flattened" not in event:
        try:
            return fmt.format_map(event)
        except Exception:  # a call, a missing field: Twisted's formatter says what it can
            return formatEvent(event)
    return formatEvent(event)


class _Stamp:
    """Twisted's time stamp (``2026-12-03T18:25:25+0000``), made once per second, not per line."""

    def __init__(self) -> None:
        self._second: int | None = None
        self._text = "-"

    def __call__(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when // 1)
        if second != self._second:
            self._second, self._text = second, formatTime(second)
        return self._text


def text_line(event: LogEvent, stamp: _Stamp) -> str | None:
    """``event`` as twistd writes it (``{time} [{namespace}#{level}] {text}``), or None if it has no text.

    The same line as :func:`twisted.logger.formatEventAsClassicLogText` (which is used for
    events with a traceback), at a third of its cost: the attempt line of every delivery
    goes through here, so at 2,000 deliveries/s it was a tenth of the daemon's CPU.
    """
    if "log_failure" in event:
        return formatEventAsClassicLogText(event, formatTime=stamp)
    text = message(event)
    if not text:
        return None
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        system = f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    line = f"{stamp(event.get('log_time'))} [{system}] {text}"
    return line.replace("\n", "\n\t") + "\n"


def text_observer(out: IO[str]) -> ILogObserver:
    """twistd's text lines on ``out``, flushed after each; what ``textFileLogObserver`` writes."""
    stamp = _Stamp()

    @implementer(ILogObserver)
    def write(event: LogEvent) -> None:
        line = text_line(event, stamp)
        if line:
            out.write(line)
            out.flush()

    return cast(ILogObserver, write)


def json_lines_observer(out: IO[str]) -> ILogObserver:
    """One JSON object per line on ``out``, flushed after each (log shippers tail the file)."""

    @implementer(ILogObserver)
    def write(event: LogEvent) -> None:
        try:
            line = json.dumps(event_as_dict(event), ensure_ascii=False)
        except Exception:  # never let one event break logging
            line = json.dumps({"level": "error", "message": "(an event that could not be written as JSON)"})
        out.write(line + "\n")
        out.flush()

    return cast(ILogObserver, write)
