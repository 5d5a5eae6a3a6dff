"""TLS to the external databases: one ``ssl.SSLContext`` per registration and mode.

=============  ==============================================================================
disable        no TLS
prefer         PostgreSQL: TLS when the server offers it, no check (asyncpg's own). MySQL and
               MariaDB: no TLS
require        TLS, the certificate is not checked (encrypts, does not authenticate)
verify-ca      TLS, the chain must lead to a trusted CA: the system store, or ``caCert``
verify-full    verify-ca, and the certificate must name the registered host
=============  ==============================================================================

The drivers are handed the address the allowlist checked, not the name: the context is
pinned to the registered host name (``_PinnedNameContext``), so SNI and the name check use
the name whatever the driver passes. asyncpg never looks for ``~/.postgresql/root.crt``
because it is given a context, never a mode word, for the verifying modes.
"""

from __future__ import annotations

import ssl
from typing import Any

from app.domain import ConnectionConfig, ca_cert, ssl_mode

__all__ = ["mysql_ssl", "pg_ssl"]


class _PinnedNameContext(ssl.SSLContext):
    """An ``SSLContext`` that always speaks to (and checks) ``server_name``."""

    server_name: str

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)

    def wrap_socket(self, sock: Any, server_side: bool = False,
                    do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True,
                    server_hostname: str | bytes | None = None,
                    session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
        return super().wrap_socket(sock, server_side, do_handshake_on_connect,
                                   suppress_ragged_eofs, self.server_name, session)


def _context(config: ConnectionConfig, *, verify: bool, check_name: bool) -> ssl.SSLContext:
    context = _PinnedNameContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = config.host
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    pem = ca_cert(config.options)
    if pem is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.load_verify_locations(cadata=pem)
    context.check_hostname = check_name
    return context


def _encrypting(config: ConnectionConfig, mode: str) -> ssl.SSLContext:
    """The context of a mode that encrypts: ``require`` checks nothing, ``verify-ca`` the
    chain, ``verify-full`` the chain and the registered host name."""
    verify = mode in ("verify-ca", "verify-full")
    return _context(config, verify=verify, check_name=mode == "verify-full")


def pg_ssl(config: ConnectionConfig) -> ssl.SSLContext | str:
    """asyncpg's ``ssl`` argument: its own words for the modes that check nothing."""
    mode = ssl_mode(config.options, config.db_type)
    return mode if mode in ("disable", "prefer") else _encrypting(config, mode)


def mysql_ssl(config: ConnectionConfig) -> ssl.SSLContext | None:
    """aiomysql/asyncmy's ``ssl`` argument; ``prefer`` means no TLS there."""
    mode = ssl_mode(config.options, config.db_type)
    return None if mode in ("disable", "prefer") else _encrypting(config, mode)
