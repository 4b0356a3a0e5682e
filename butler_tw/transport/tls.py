"""One TLS policy (``IPolicyForHTTPS``) per webhook, built once at start-up.

Three modes, from the webhook's Butler ``cert`` block:

- no block, or ``cert.enable: false``: the platform's CA store, host name
  verified (service-identity);
- ``enable: true, rejectUnauthorized: true``: trust exactly the certificates
  in ``certCA`` (this *replaces* the platform store), host name verified;
- ``enable: true, rejectUnauthorized: false``: no verification at all, but
  SNI still sent so that virtual hosts pick the right certificate.

TLS 1.2 is the minimum in every mode (``cert.minVersion: TLSv1.3`` raises
it). In every mode a client certificate (``cert.clientCert``/``clientKey``)
is offered when the server asks for one, and ``cert.serverName`` replaces
the URL's host as the name verified and sent as SNI. Connection creators are
cached per host name, so the OpenSSL context is built once, not per
connection. The same policy serves a connection through a proxy's CONNECT
tunnel (:mod:`butler_tw.transport.proxy`): TLS is end to end with the real host.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from butler_tw.config import ClientCertificate, TlsSettings, TrustMode

MINIMUM_TLS = ssl.TLSVersion.TLSv1_2
#: ``cert.minVersion`` to the protocol floor.
VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def trust_root(settings: TlsSettings) -> IOpenSSLTrustRoot:
    """The trust root for a verifying mode: platform store or the CA bundle."""
    if settings.mode is TrustMode.CUSTOM_CA:
        root: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(
            [ssl.Certificate.loadPEM(pem) for pem in settings.caCertificates]
        )
        return root
    platform: IOpenSSLTrustRoot = ssl.platformTrust()
    return platform


def policy_for(settings: TlsSettings) -> IPolicyForHTTPS:
    """The policy for one webhook's ``cert`` settings."""
    minimum = VERSIONS[settings.minVersion]
    serverName = settings.serverName.encode("ascii") if settings.serverName else None
    client = settings.clientCertificate
    if settings.mode is TrustMode.NO_VERIFY:
        return NoVerificationPolicy(minimum, client, serverName)
    return VerifyingPolicy(trust_root(settings), minimum, client, serverName)


def _client_options(client: ClientCertificate | None) -> dict[str, Any]:
    """``CertificateOptions`` keywords that offer ``client`` (and its intermediates)."""
    if client is None:
        return {}
    leaf, *chain = client.certificates
    return {
        "privateKey": crypto.load_privatekey(crypto.FILETYPE_PEM, client.key),
        "certificate": crypto.load_certificate(crypto.FILETYPE_PEM, leaf),
        "extraCertChain": [crypto.load_certificate(crypto.FILETYPE_PEM, pem) for pem in chain],
    }


@implementer(IPolicyForHTTPS)
class VerifyingPolicy:
    """Verify the chain against ``trustRoot``, the host name (or ``serverName``) against the certificate."""

    def __init__(
        self,
        trustRoot: IOpenSSLTrustRoot,
        minimum: ssl.TLSVersion = MINIMUM_TLS,
        client: ClientCertificate | None = None,
        serverName: bytes | None = None,
    ) -> None:
        self._trustRoot = trustRoot
        self._options: dict[str, Any] = {"raiseMinimumTo": minimum, **_client_options(client)}
        self._serverName = serverName
        self._creators: dict[bytes, IOpenSSLClientConnectionCreator] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        creator = self._creators.get(hostname)
        if creator is None:
            creator = ssl.optionsForClientTLS(
                (self._serverName or hostname).decode("ascii"),
                trustRoot=self._trustRoot,
                extraCertificateOptions=dict(self._options),
            )
            self._creators[hostname] = creator
        return creator


@implementer(IPolicyForHTTPS)
class NoVerificationPolicy:
    """``rejectUnauthorized: false``: accept any certificate, still send SNI.

    Returning a bare ``CertificateOptions`` from ``creatorForNetloc`` would
    drop SNI, so this wraps one context in a creator that sets the name.
    """

    def __init__(
        self,
        minimum: ssl.TLSVersion = MINIMUM_TLS,
        client: ClientCertificate | None = None,
        serverName: bytes | None = None,
    ) -> None:
        options = ssl.CertificateOptions(verify=False, raiseMinimumTo=minimum, **_client_options(client))
        self._context = options.getContext()
        self._serverName = serverName

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _SNIOnlyCreator(self._context, self._serverName or hostname)


@implementer(IOpenSSLClientConnectionCreator)
class _SNIOnlyCreator:
    def __init__(self, context: SSL.Context, hostname: bytes) -> None:
        self._context = context
        name = hostname.decode("ascii")
        # SNI carries DNS names only, never an IP address literal.
        self._sni = None if isIPAddress(name) or isIPv6Address(name) else hostname

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        connection.set_connect_state()
        return connection
