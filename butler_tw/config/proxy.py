"""A webhook's ``proxy`` key: an HTTP proxy URL, or ``env`` for the usual environment variables.

``proxy: http://[user:password@]host:port`` sends this webhook's calls
through that proxy. ``proxy: env`` reads, once at config load,
``HTTPS_PROXY`` (for an https webhook URL) or ``HTTP_PROXY`` (for http), in
lower or upper case, lower case first as curl does, and ``NO_PROXY``: a
comma-separated list of host names (an entry matches the host and every name
under it; a leading ``.`` is ignored), IP addresses or CIDR ranges, or
``*`` for every host. A value without a scheme is taken as ``http://``, as
curl does.

Nothing here echoes a proxy URL: its user info is a secret. Messages name
the key path, and the environment variable when the value came from one.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

import attrs

from butler_tw.config.model import Proxy
from butler_tw.config.spec import INVALID, Report, kind_of

ENV = "env"


@attrs.frozen
class EnvProxies:
    """What ``proxy: env`` found in the environment at config load."""

    https: Proxy | None = None
    http: Proxy | None = None
    noProxy: tuple[str, ...] = ()


def parse_proxy_url(text: str, source: str = "proxy", *, defaultScheme: bool = False) -> Proxy:
    """``http://[user:password@]host[:port]`` as a :class:`Proxy` (port 80 when none).

    :param defaultScheme: a value without ``scheme://`` is taken as http (the
        environment variables' convention).
    :raises ValueError: with a message that holds no part of ``text``.
    """
    text = text.strip()
    if defaultScheme and "://" not in text:
        text = "http://" + text
    if any(c.isspace() for c in text):
        raise ValueError("contains white space")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("not a valid proxy URL (bad port or host)") from None
    scheme = parts.scheme.lower()
    if scheme == "https":
        raise ValueError("https:// proxies (TLS to the proxy itself) are not supported: use http://host:port")
    if scheme != "http":
        raise ValueError("must be http://host:port (or env, to use HTTPS_PROXY / HTTP_PROXY / NO_PROXY)")
    if not parts.hostname:
        raise ValueError("has no host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be http://host:port, with nothing after the port")
    credentials = None
    if parts.username is not None:
        userpass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        credentials = b"Basic " + base64.b64encode(userpass.encode("utf-8"))
    return Proxy(host=parts.hostname, port=port or 80, credentials=credentials, source=source)


def _first(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The value of ``name`` in lower case, else upper case, when set and not empty."""
    for variable in (name.lower(), name.upper()):
        value = environ.get(variable, "").strip()
        if value:
            return variable, value
    return None


def read_environment(environ: Mapping[str, str], path: str, report: Report) -> Any:
    """``proxy: env``: the proxies and exceptions the environment gives, or INVALID."""
    found: dict[str, Proxy | None] = {}
    ok = True
    for name in ("https_proxy", "http_proxy"):
        given = _first(environ, name)
        found[name] = None
        if given is None:
            continue
        variable, value = given
        try:
            found[name] = parse_proxy_url(value, variable, defaultScheme=True)
        except ValueError as e:
            report.problem(path, f"is env, and {variable} (from the environment) {e}")
            ok = False
    exceptions = _first(environ, "no_proxy")
    entries = () if exceptions is None else parse_no_proxy(exceptions[1])
    if not ok:
        return INVALID
    return EnvProxies(https=found["https_proxy"], http=found["http_proxy"], noProxy=entries)


def parse_no_proxy(value: str) -> tuple[str, ...]:
    """``NO_PROXY`` as a tuple of lower-case entries, leading and trailing dots gone."""
    entries = []
    for raw in value.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if entry.startswith("[") and "]" in entry:  # [::1] or [::1]:8080
            entry = entry[1 : entry.index("]")]
        elif entry.count(":") == 1:  # host:port: the port is not compared, as in curl
            entry = entry.partition(":")[0]
        entry = entry.strip(".")
        if entry:
            entries.append(entry)
    return tuple(entries)


def bypasses(host: str, noProxy: tuple[str, ...]) -> bool:
    """Whether ``host`` goes direct under ``NO_PROXY`` (curl's matching)."""
    host = host.lower().strip(".").strip("[]")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in noProxy:
        if entry == "*" or entry == host:
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
        elif host.endswith("." + entry):
            return True
    return False


def proxy_setting(value: Any, path: str, report: Report) -> Any:
    """A ``proxy`` key: a :class:`Proxy`, :class:`EnvProxies` for ``env``, or None for ``""``."""
    if not isinstance(value, str):
        report.problem(path, f"expected a proxy URL (http://host:port) or env, got {kind_of(value)}")
        return INVALID
    if value.strip() == "":
        return None
    if value.strip().lower() == ENV:
        return read_environment(report.environ, path, report)
    try:
        return parse_proxy_url(value)
    except ValueError as e:
        report.problem(path, str(e))
        return INVALID


def proxy_for(setting: Proxy | EnvProxies | None, url: str) -> Proxy | None:
    """The proxy a call to ``url`` goes through under ``setting``; None: direct."""
    if setting is None or isinstance(setting, Proxy):
        return setting
    parts = urlsplit(url)
    if bypasses(parts.hostname or "", setting.noProxy):
        return None
    return setting.https if parts.scheme.lower() == "https" else setting.http
