"""One TLS policy (``IPolicyForHTTPS``) per webhook, built once at start-up.

Three modes, from the webhook's Butler ``cert`` block:

- no block, or ``cert.enable: false``: the platform's CA store, host name
  verified (service-identity);
- ``enable: true, rejectUnauthorized: true``: trust exactly the certificates
  in ``certCA`` (this *replaces* the platform store), host name verified;
- ``enable: true, rejectUnauthorized: false``: no verification at all, but
  SNI still sent so that virtual hosts pick the right certificate.

TLS 1.2 is the minimum in every mode. Connection creators are cached per
host name, so the OpenSSL context is built once, not per connection.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from butler_tw.config import TlsSettings, TrustMode

MINIMUM_TLS = ssl.TLSVersion.TLSv1_2


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
    if settings.mode is TrustMode.NO_VERIFY:
        return NoVerificationPolicy()
    return VerifyingPolicy(trust_root(settings))


@implementer(IPolicyForHTTPS)
class VerifyingPolicy:
    """Verify the chain against ``trustRoot`` and the host name against the certificate."""

    def __init__(self, trustRoot: IOpenSSLTrustRoot) -> None:
        self._trustRoot = trustRoot
        self._creators: dict[bytes, IOpenSSLClientConnectionCreator] = {}

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        creator = self._creators.get(hostname)
        if creator is None:
            creator = ssl.optionsForClientTLS(
                hostname.decode("ascii"),
                trustRoot=self._trustRoot,
                extraCertificateOptions={"raiseMinimumTo": MINIMUM_TLS},
            )
            self._creators[hostname] = creator
        return creator


@implementer(IPolicyForHTTPS)
class NoVerificationPolicy:
    """``rejectUnauthorized: false``: accept any certificate, still send SNI.

    Returning a bare ``CertificateOptions`` from ``creatorForNetloc`` would
    drop SNI, so this wraps one context in a creator that sets the name.
    """

    def __init__(self) -> None:
        options = ssl.CertificateOptions(verify=False, raiseMinimumTo=MINIMUM_TLS)
        self._context = options.getContext()

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _SNIOnlyCreator(self._context, hostname)


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
