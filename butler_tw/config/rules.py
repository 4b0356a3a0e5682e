"""The checks a value's shape cannot express: each turns a value into what the daemon uses.

A rule is called as ``rule(value, path, report)`` with a value of the right
shape, records what is wrong with :meth:`Report.problem`, and returns the
value to use or :data:`~butler_tw.config.spec.INVALID`. Rules never echo a
webhook URL: it may hold a token.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import SplitResult, urlsplit

from hyperlink import EncodedURL

from butler_tw.config.model import TLS_VERSIONS, ClientCertificate, TlsSettings, TrustMode
from butler_tw.config.spec import INVALID, Report, did_you_mean, kind_of
from butler_tw.core.routing import FIELDS
from butler_tw.core.sources import Network, parse_entry

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s.+?-----END CERTIFICATE-----", re.DOTALL)
_PEM_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----\s.+?-----END \1-----", re.DOTALL
)
_DNS_NAME = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def webhook_url(url: str, path: str, report: Report) -> Any:
    """A URL the HTTP client will take: http(s), a host, a numeric port, no white space."""
    if url != url.strip() or any(c.isspace() for c in url):
        report.problem(path, "contains white space")
        return INVALID
    try:
        parts: SplitResult = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        report.problem(path, _bad_port_or_host(url))
        return INVALID
    if parts.scheme.lower() not in ("http", "https"):
        report.problem(path, f"must start with http:// or https:// (scheme is {parts.scheme[:10]!r})")
        return INVALID
    if not parts.hostname:
        report.problem(path, "has no host name")
        return INVALID
    if ":" in parts.hostname:
        report.problem(path, "IPv6 address literals are not supported by the HTTP client: use a host name")
        return INVALID
    try:
        # The conversion treq makes before every request: catch here what it would refuse.
        EncodedURL.from_text(url).to_uri()
    except ValueError:
        report.problem(
            path,
            "the host name is not valid (letters, digits and '-' only, no label starting or "
            "ending with '-'; '_' is not allowed)",
        )
        return INVALID
    return url


def _bad_port_or_host(url: str) -> str:
    hostport = url.partition("//")[2].partition("/")[0].rpartition("@")[2]
    if hostport.startswith("["):  # an IPv6 literal: the port comes after its "]"
        hostport = hostport.partition("]")[2] if "]" in hostport else ""
    port = hostport.rpartition(":")[2] if ":" in hostport else ""
    if port and not port.isdigit():
        if port == "port":
            return (
                "the port is not a number (':port' is the placeholder from Butler's template: "
                "put the receiver's port number there, or leave ':port' out for 80/443)"
            )
        return "the port is not a number"
    if port.isdigit():
        return "the port must be between 1 and 65535"
    return "not a valid URL (bad port or host)"


def tls_settings(node: dict[str, Any], path: str, report: Report) -> Any:
    """A ``cert`` block: the CA certificates and client certificate read now (start-up), not per request.

    ``enable`` switches Butler's own keys (``certCA``, ``rejectUnauthorized``):
    as in Butler, they are not read when it is false. Ours (``clientCert``,
    ``clientKey``, ``minVersion``, ``serverName``) apply either way: with
    ``enable: false`` they go with the platform's CA store.
    """
    if any(node[k] is INVALID for k in ("clientCert", "clientKey", "minVersion", "serverName")):
        return INVALID
    client = client_certificate(node["clientCert"], node["clientKey"], path, report)
    server_name = node["serverName"]
    if server_name is not None:
        server_name = server_name.strip().rstrip(".").lower()
        if not _is_host(server_name):
            report.problem(f"{path}.serverName", "must be a DNS host name or an IP address")
            return INVALID
    ours = dict(minVersion=node["minVersion"], serverName=server_name or None)
    if client is INVALID:
        return INVALID
    if node["enable"] is not True:
        return TlsSettings(clientCertificate=client, **ours)
    ca_path = node["certCA"]
    if ca_path is INVALID or node["rejectUnauthorized"] is INVALID:
        return INVALID
    if ca_path is None:
        report.problem(f"{path}.certCA", "missing")
        return INVALID
    certs = ca_bundle(ca_path, f"{path}.certCA", report)
    if certs is INVALID:
        return INVALID
    mode = TrustMode.CUSTOM_CA if node["rejectUnauthorized"] is not False else TrustMode.NO_VERIFY
    return TlsSettings(mode=mode, caCertificates=certs, caFile=ca_path, clientCertificate=client, **ours)


def webhook_entry(node: dict[str, Any], path: str, report: Report) -> Any:
    """What needs two keys of an entry: a client certificate needs https; ``proxy: env`` picks by URL."""
    from butler_tw.config.proxy import EnvProxies, proxy_for

    url, tls, setting = node["webhookURL"], node["cert"], node["proxy"]
    if url is INVALID:
        return node
    https = url.lower().startswith("https:")
    if isinstance(tls, TlsSettings) and tls.clientCertificate is not None and not https:
        report.problem(
            f"{path}.cert.clientCert",
            "is set, but webhookURL is http://: a client certificate is only sent over https",
        )
    if isinstance(setting, EnvProxies):
        chosen = proxy_for(setting, url)
        wanted = "HTTPS_PROXY" if https else "HTTP_PROXY"
        if chosen is None and (setting.https if https else setting.http) is None:
            report.warn(
                f"{path}.proxy",
                f"is env, but neither {wanted} nor {wanted.lower()} is set: this webhook is called directly",
            )
        return {**node, "proxy": chosen}
    return node


def tls_version(value: str) -> str:
    """``minVersion`` in any case, ``1.3`` or ``TLSv1.3``: the canonical spelling."""
    short = value.strip().lower().removeprefix("tlsv").removeprefix("tls")
    return {v.lower().removeprefix("tlsv"): v for v in TLS_VERSIONS}.get(short, value.strip())


def _is_host(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return _DNS_NAME.fullmatch(name) is not None


def _read(file: str, where: str, report: Report) -> bytes | None:
    try:
        return report.reader(file)
    except FileNotFoundError:
        report.problem(where, f"file not found: {file}")
    except OSError as e:
        report.problem(where, f"cannot read {file}: {e.strerror}")
    return None


def client_certificate(cert_path: str | None, key_path: str | None, path: str, report: Report) -> Any:
    """``clientCert`` and ``clientKey``: both or neither; PEM; the key unencrypted and the certificate's own.

    No message holds anything read from the key file.
    """
    if cert_path is None and key_path is None:
        return None
    if cert_path is None or key_path is None:
        given, absent = ("clientCert", "clientKey") if key_path is None else ("clientKey", "clientCert")
        report.problem(
            f"{path}.{absent}",
            f"missing: {given} is set, and mutual TLS needs both the certificate (clientCert) "
            "and its private key (clientKey)",
        )
        return INVALID
    cert_where, key_where = f"{path}.clientCert", f"{path}.clientKey"
    cert_data = _read(cert_path, cert_where, report)
    key_data = _read(key_path, key_where, report)
    if cert_data is None or key_data is None:
        return INVALID
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    pems = [m.group(0) for m in _PEM_CERT.finditer(cert_data)]
    if not pems:
        report.problem(cert_where, f"{cert_path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        return INVALID
    try:
        certs = [x509.load_pem_x509_certificate(pem) for pem in pems]
    except ValueError:
        report.problem(cert_where, f"a certificate in {cert_path} cannot be read")
        return INVALID
    found = _PEM_KEY.search(key_data)
    if found is None:
        report.problem(key_where, f"{key_path} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
        return INVALID
    if found.group(1) == b"ENCRYPTED PRIVATE KEY" or b"ENCRYPTED" in found.group(0)[:200]:
        report.problem(
            key_where,
            f"the key in {key_path} is encrypted (passphrase-protected), which is not supported: "
            f"store it unencrypted, readable by this daemon only (openssl pkey -in {key_path} -out NEW.pem)",
        )
        return INVALID
    try:
        key: Any = serialization.load_pem_private_key(found.group(0), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        report.problem(key_where, f"the private key in {key_path} cannot be read")
        return INVALID
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certs[0].public_key().public_bytes(*spki):
        report.problem(
            key_where,
            f"the key in {key_path} does not belong to the certificate in {cert_path} "
            "(their public keys differ)",
        )
        return INVALID
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ClientCertificate(
        certFile=cert_path,
        keyFile=key_path,
        certificates=tuple(pems),
        key=plain,
        subject=certs[0].subject.rfc4514_string(),
    )


def ca_bundle(ca_path: str, where: str, report: Report) -> Any:
    data = _read(ca_path, where, report)
    if data is None:
        return INVALID
    certs = tuple(m.group(0) for m in _PEM_CERT.finditer(data))
    if not certs:
        report.problem(where, f"{ca_path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        return INVALID
    from OpenSSL import crypto  # deferred: only needed when a CA file is configured

    for n, pem in enumerate(certs, 1):
        try:
            crypto.load_certificate(crypto.FILETYPE_PEM, pem)
        except crypto.Error:
            report.problem(where, f"certificate {n} in {ca_path} cannot be read")
            return INVALID
    return certs


def retry_schedule(raw: Any, path: str, report: Report) -> Any:
    """Seconds after the first try at which each attempt is made: ``[0, 5, 30, ...]``."""
    if (
        not isinstance(raw, list)
        or not raw
        or any(
            isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0
            for s in raw
        )
    ):
        report.problem(path, "expected a non-empty list of seconds (numbers >= 0)")
        return INVALID
    if list(raw) != sorted(raw):
        report.problem(path, "must be in increasing order")
        return INVALID
    if raw[0] != 0:
        report.problem(path, "must start with 0: the first attempt is made at once")
        return INVALID
    return tuple(float(s) for s in raw)


def routing_rules(raw: Any, path: str, report: Report) -> Any:
    """``match:`` or ``exclude:``: alert field -> regular expression, each compiled now."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        report.problem(path, f"expected a mapping of alert field to regular expression, got {kind_of(raw)}")
        return INVALID
    found: list[tuple[str, re.Pattern[str]]] = []
    for field, pattern in raw.items():
        where = f"{path}.{field}"
        if field not in FIELDS:
            near = did_you_mean(str(field), list(FIELDS))
            report.problem(where, f"not an alert field ({near or 'fields: ' + ', '.join(FIELDS)})")
            continue
        if not isinstance(pattern, str):
            report.problem(where, f"expected a regular expression (a string), got {kind_of(pattern)}")
            continue
        try:
            found.append((field, re.compile(pattern)))
        except re.error as e:
            report.problem(where, f"not a valid regular expression: {e}")
    if len(found) != len(raw):
        return INVALID
    return tuple(found)


def source_entry(item: Any, path: str, report: Report) -> Any:
    """One ``allowedSources`` entry: an address, a CIDR range or a host name."""
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str):
        report.problem(path, f"expected an address, CIDR range or host name, got {kind_of(item)}")
        return INVALID
    try:
        entry: Network | str = parse_entry(item)
    except ValueError as e:
        report.problem(path, str(e))
        return INVALID
    return entry


def endpoint(listen: Any, path: str, report: Report) -> Any:
    """A Twisted server endpoint description, parsed (not listened on)."""
    if listen == "":
        return None
    if not isinstance(listen, str):
        report.problem(
            path,
            "expected a Twisted endpoint description such as 'tcp:9090:interface=127.0.0.1', "
            f"got {kind_of(listen)}",
        )
        return INVALID
    from twisted.internet.endpoints import serverFromString

    try:
        # An endpoint only keeps the reactor it is given, so a stand-in keeps
        # this module from importing (and so installing) the global reactor.
        serverFromString(object(), listen)
    except Exception as e:  # a missing key file raises OSError, a bad port ValueError, ...
        report.problem(path, f"not a valid endpoint description ({e}); e.g. 'tcp:9090:interface=127.0.0.1'")
        return INVALID
    return listen


def log_level(level: str) -> str:
    level = level.strip().lower()
    return {"warning": "warn", "verbose": "debug", "silly": "debug"}.get(level, level)


def port(value: Any, path: str, report: Report) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        report.problem(path, f"expected a port number 1-65535, got {kind_of(value)}")
        return INVALID
    return value


def body_template(tree: Any, path: str, report: Report) -> Any:
    """A ``body:`` tree, its templates compiled and tried with a sample alert of each kind."""
    from butler_tw.channels.templates import TemplateProblem, compile_body

    if not isinstance(tree, (dict, list)):
        report.problem(path, f"expected a mapping or a list (the JSON body), got {kind_of(tree)}")
        return INVALID
    try:
        return compile_body(tree, path)
    except TemplateProblem as e:
        report.problem(e.path, e.message)
        return INVALID


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*;.*)?$")


def content_type(value: Any, path: str, report: Report) -> Any:
    """A media type such as ``application/json; charset=utf-8``."""
    if not isinstance(value, str) or not _TOKEN.match(value.strip()) or "\n" in value or "\r" in value:
        report.problem(path, "expected a media type such as 'application/json'")
        return INVALID
    return value.strip()


def secret_text(value: Any, path: str, report: Report) -> Any:
    """A secret string (a token): checked without ever echoing it."""
    if not isinstance(value, str) or not value.strip():
        report.problem(path, "expected a non-empty string (the value is not shown: it is a secret)")
        return INVALID
    return value.strip()


def instance_name(value: Any, path: str, report: Report) -> Any:
    """``butlerWebhook.instanceName``: a short printable name, unique among the daemons of one store."""
    if not isinstance(value, str) or not value.strip():
        report.problem(path, "expected a name for this daemon, e.g. its host name")
        return INVALID
    name = value.strip()
    if len(name) > 100 or not name.isprintable():
        report.problem(path, "expected a name of at most 100 printable characters")
        return INVALID
    return name
