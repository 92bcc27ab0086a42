"""Egress policy of the ``http`` tool: which addresses a playbook's request may connect to.

The check runs on the addresses a host name resolves to (not on its spelling), so decimal,
octal or hexadecimal IPs, ``[::1]`` and IPv4 addresses carried inside IPv6 ones
(``::ffff:169.254.169.254``, NAT64, 6to4) are judged by where they lead. The tool then
connects to an address it checked, never resolving the name a second time, so a name
that answers differently on the next lookup (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Refused unless the operator allows them: each range with what it is.
DEFAULT_DENIED: tuple[tuple[str, str], ...] = (
    ("169.254.0.0/16", "link-local, cloud metadata"),
    ("fe80::/10", "link-local"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("100.100.100.200/32", "cloud metadata"),
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class EgressRefused(PermissionError):
    """The egress policy refused a request before anything was sent."""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (a bare address is one host); ValueError naming a bad entry."""
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a CIDR range ({exc})") from None
    return tuple(networks)


def parse_hosts(text: str) -> tuple[str, ...]:
    """Comma-separated host names or ``fnmatch`` patterns (``*.example.com``), lower-cased."""
    return tuple(part.strip().lower().rstrip(".") for part in text.split(",") if part.strip())


def host_matches(host: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether ``host`` (no port) matches one of ``patterns`` (case-insensitive ``fnmatch``)."""
    name = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(name, str(pattern).lower().rstrip(".")) for pattern in patterns)


def _views(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address it carries (the one a packet would reach)."""
    views: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            views.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            views.append(address.sixtofour)
        if address in _NAT64:
            views.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return views


@dataclass(frozen=True)
class EgressPolicy:
    """Denied ranges (with a label each), ranges allowed despite them, and allowed host names.

    An address is refused when one of its views lies in a denied range and not in an
    allowed one; a host matching ``allowed_hosts`` is not checked at all.
    """

    denied: tuple[tuple[IPNetwork, str], ...] = tuple(
        (ipaddress.ip_network(cidr), label) for cidr, label in DEFAULT_DENIED
    )
    allowed: tuple[IPNetwork, ...] = ()
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def configured(
        cls,
        *,
        deny: tuple[IPNetwork, ...] = (),
        allow: tuple[IPNetwork, ...] = (),
        hosts: tuple[str, ...] = (),
    ) -> EgressPolicy:
        """The default denied ranges plus an operator's extra ``deny``, and ``allow`` / ``hosts``."""
        extra = tuple((network, "denied by WORKER_HTTP_DENY_CIDRS") for network in deny)
        return cls(denied=cls().denied + extra, allowed=allow, allowed_hosts=hosts)

    def refusal(self, address: IPAddress) -> tuple[IPAddress, IPNetwork, str] | None:
        """The view of ``address`` that is refused, with its denied range and label; None when allowed."""
        for view in _views(address):
            if any(view.version == n.version and view in n for n in self.allowed):
                continue
            for network, label in self.denied:
                if view.version == network.version and view in network:
                    return view, network, label
        return None

    def check(self, host: str, addresses: list[IPAddress]) -> None:
        """Raise :class:`EgressRefused` naming host, address and setting if any address is denied."""
        if host_matches(host, self.allowed_hosts):
            return
        for address in addresses:
            found = self.refusal(address)
            if found is None:
                continue
            view, network, label = found
            raise EgressRefused(
                f"http tool: refused a request to {host!r}: it leads to {view}, in {network} ({label});"
                " the worker allows that only when its WORKER_HTTP_ALLOW_CIDRS covers the address"
                " or its WORKER_HTTP_ALLOW_HOSTS names the host"
            )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to for TCP (an IP literal is itself), in resolver order."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ConnectionError(f"http tool: cannot resolve {host!r}: {exc.strerror or exc}") from None
    found: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # an IPv6 sockaddr may carry a zone ("fe80::1%eth0"): judge the address without it
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise ConnectionError(f"http tool: {host!r} resolves to no IP address")
    return found
