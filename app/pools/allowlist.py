"""``DBPOOL_ALLOWED_HOSTS``: may a connection go to this host, and to which address?

Rules are networks (``10.0.0.0/8``, ``127.0.0.1``) and names (``db.internal``,
``*.example.com`` for any subdomain). An IP host must lie in an allowed network. A name is
allowed when it is listed; otherwise, if there are network rules, it is resolved and every
address must lie in an allowed network.

The check runs at registration (a clear 403 early) and again on every new connection
(``checked_address``, called by the engine factory): a name that resolves somewhere else
later (DNS rebinding), a tightened allowlist or a re-activated registration is caught
where the connection is made, and the driver is handed the address that was checked
rather than the name it would resolve again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

from app.errors import HostNotAllowed
from app.settings import HostRule

__all__ = ["IpAddress", "Resolve", "checked_address", "ensure_host_allowed", "system_resolve"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str], Awaitable[list[IpAddress]]]
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


async def system_resolve(name: str) -> list[IpAddress]:
    """The addresses the system resolver gives for ``name``, in its order, no duplicates."""
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
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return list(dict.fromkeys(found))


def _refuse(host: str) -> HostNotAllowed:
    return HostNotAllowed(
        "host is not in DBPOOL_ALLOWED_HOSTS: add it (or its network) there, or register "
        "another host",
        details={"host": host},
    )


async def checked_address(
    host: str, rules: Sequence[HostRule], resolve: Resolve = system_resolve
) -> str:
    """What the driver should connect to for ``host``: the host itself when no rule needs an
    address (no rules, an IP, a listed name), else the first of its addresses once every one
    of them is checked. Raises ``HostNotAllowed``."""
    if not rules:
        return host
    networks = [rule for rule in rules if not isinstance(rule, str)]
    names = [rule for rule in rules if isinstance(rule, str)]
    try:
        literal: IpAddress | None = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        literal = None
    if literal is not None:
        if not _in_networks(literal, networks):
            raise _refuse(host)
        return host
    name = host.lower().rstrip(".")
    if _name_listed(name, names):
        return host
    if not networks:
        raise _refuse(host)
    addresses = await resolve(name)
    if not addresses or not all(_in_networks(a, networks) for a in addresses):
        raise _refuse(host)
    return str(addresses[0])


async def ensure_host_allowed(
    host: str, rules: Sequence[HostRule], resolve: Resolve = system_resolve
) -> None:
    """Raise ``HostNotAllowed`` unless ``host`` passes ``rules`` (no rules: any host)."""
    await checked_address(host, rules, resolve)
