"""``DBPOOL_ALLOWED_HOSTS``: may a registration point at this host?

Rules are networks (``10.0.0.0/8``, ``127.0.0.1``) and names (``db.internal``,
``*.example.com`` for any subdomain). An IP host must lie in an allowed network. A name is
allowed when it is listed; otherwise, if there are network rules, it is resolved and every
address must lie in an allowed network. The check runs at registration time: it keeps
honest mistakes and casual misuse out, it is not a defence against a DNS server that later
answers differently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

from app.errors import HostNotAllowed
from app.settings import HostRule

__all__ = ["ensure_host_allowed"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_SECONDS = 5.0


def _name_listed(name: str, names: Sequence[str]) -> bool:
    for rule in names:
        if rule.startswith("*.") and name.endswith(rule[1:]):
            return True
        if name == rule:
            return True
    return False


def _in_networks(address: IpAddress, networks: Sequence[IpNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


async def _resolve(name: str) -> set[IpAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, TimeoutError) as exc:
        raise HostNotAllowed(
            "host is not in DBPOOL_ALLOWED_HOSTS and could not be resolved to check it",
            details={"host": name},
        ) from exc
    # The scope id ("%eth0") is not part of the address the network rules talk about.
    return {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}


def _refuse(host: str) -> HostNotAllowed:
    return HostNotAllowed("host is not in DBPOOL_ALLOWED_HOSTS", details={"host": host})


async def ensure_host_allowed(host: str, rules: Sequence[HostRule]) -> None:
    """Raise ``HostNotAllowed`` unless ``host`` passes ``rules`` (no rules: any host)."""
    if not rules:
        return
    networks = [rule for rule in rules if not isinstance(rule, str)]
    names = [rule for rule in rules if isinstance(rule, str)]
    try:
        literal: IpAddress | None = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        literal = None
    if literal is not None:
        if not _in_networks(literal, networks):
            raise _refuse(host)
        return
    name = host.lower().rstrip(".")
    if _name_listed(name, names):
        return
    if not networks:
        raise _refuse(host)
    addresses = await _resolve(name)
    if not addresses or not all(_in_networks(a, networks) for a in addresses):
        raise _refuse(host)
