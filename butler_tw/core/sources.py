"""Which source addresses may send datagrams: ``Butler.udpServerConfig.allowedSources``.

An entry is an IPv4 or IPv6 address, a CIDR range, or a host name. Names are
resolved at start-up and again every few minutes, off the reactor thread, by
:mod:`butler_tw.intake.resolve`; a name that stops resolving keeps its last
known addresses, so a DNS hiccup neither opens nor closes the gate. This
module is the pure part: parsing the entries, and the decision, which is
cheap.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, Mapping, Union

import attrs

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def parse_entry(entry: str) -> Network | str:
    """An address or CIDR range as a network, or a host name (lower case).

    :raises ValueError: with a message fit for a config error.
    """
    text = entry.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    else:
        mapped = ipaddress.IPv6Network("::ffff:0:0/96")
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(mapped):
            # As a dual-stack socket reports IPv4 senders: match them as IPv4.
            first = network.network_address.ipv4_mapped
            assert first is not None
            return ipaddress.ip_network(f"{first}/{max(0, network.prefixlen - 96)}", strict=False)
        return network
    if "/" in text or ":" in text or re.fullmatch(r"[\d.]+", text):
        raise ValueError(f"{text[:60]!r} is not a valid IP address or CIDR range")
    if len(text) > 253 or not _HOSTNAME.fullmatch(text):
        raise ValueError(f"{text[:60]!r} is neither an IP address, a CIDR range nor a host name")
    return text.lower().rstrip(".")


def source_address(text: str) -> Address | None:
    """The address a datagram came from; IPv4-mapped IPv6 addresses as IPv4."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def unusable(failed: Mapping[str, str]) -> str:
    """The config problem when source validation is on and no entry is usable (we fail closed)."""
    reasons = "; ".join(f"{name}: {why}" for name, why in sorted(failed.items()))
    return (
        "Butler.udpServerConfig.allowedSources: no entry is usable, so every datagram would be "
        f"refused ({reasons}). Fix the names or list addresses"
    )


@attrs.define
class SourceFilter:
    """Decides whether a datagram's source address may send.

    :param networks: the literal addresses and CIDR ranges.
    :param names: host name -> the addresses it resolved to last.
    """

    networks: tuple[Network, ...]
    names: dict[str, frozenset[Address]] = attrs.field(factory=dict)

    @classmethod
    def from_entries(
        cls, entries: Iterable[Network | str], previous: SourceFilter | None = None
    ) -> SourceFilter:
        """A filter for ``entries``; names ``previous`` knew start with its addresses.

        At a configuration reload that keeps a name, a DNS hiccup then
        neither opens nor closes the gate, just as between two refreshes.
        """
        entries = list(entries)
        networks = tuple(e for e in entries if not isinstance(e, str))
        known = previous.names if previous is not None else {}
        names = {e: known.get(e, frozenset[Address]()) for e in entries if isinstance(e, str)}
        return cls(networks, names)

    def allows(self, source: str) -> bool:
        address = source_address(source)
        if address is None:
            return False
        if any(address in network for network in self.networks):
            return True
        return any(address in addresses for addresses in self.names.values())

    def usable(self) -> bool:
        """Whether anything at all may send (fail closed: nothing usable refuses to start)."""
        return bool(self.networks) or any(self.names.values())

    def unresolved(self) -> list[str]:
        return sorted(name for name, addresses in self.names.items() if not addresses)

    def update(self, resolved: Mapping[str, Iterable[str]]) -> dict[str, frozenset[Address]]:
        """Take fresh resolutions; names missing from ``resolved`` keep their last addresses.

        :returns: name -> its new addresses, for each name that resolved
            before and now resolves to other addresses (for the log).
        """
        moved: dict[str, frozenset[Address]] = {}
        for name, texts in resolved.items():
            if name not in self.names:
                continue
            addresses = frozenset(a for a in (source_address(t) for t in texts) if a is not None)
            if not addresses:
                continue
            if addresses != self.names[name]:
                if self.names[name]:
                    moved[name] = addresses
                self.names[name] = addresses
        return moved
