"""A throwaway PostgreSQL with TLS on, for the TLS tests: its own data directory and port,
a CA and a server certificate made here (the certificate names ``localhost`` only), started
with ``pg_ctl`` as the ``postgres`` user and stopped afterwards."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.server import free_port

__all__ = ["TlsPostgres", "ca_pem", "tls_postgres"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class TlsPostgres:
    port: int
    ca_pem: str  # the CA that signed the server's certificate
    other_ca_pem: str  # a CA that signed nothing here


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _make_ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                 ) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def ca_pem(common: str) -> str:
    """A fresh CA certificate (PEM) that signed nothing."""
    return _pem(_make_ca(common)[1])


def _as_postgres(*args: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                   capture_output=True, timeout=60)


@contextmanager
def tls_postgres() -> Iterator[TlsPostgres]:
    """Start the TLS PostgreSQL; stop it and remove its files on exit."""
    ca_key, ca = _make_ca("dbpool test CA")
    cert_pem, key_pem = _server_cert(ca_key, ca)
    postgres = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="dbpool-tls-pg-"))
    os.chown(root, postgres.pw_uid, postgres.pw_gid)
    data = root / "data"
    port = free_port()
    try:
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                     "--auth=trust", "--no-sync")
        for name, content in (("server.crt", cert_pem), ("server.key", key_pem)):
            path = data / name
            path.write_bytes(content)
            os.chown(path, postgres.pw_uid, postgres.pw_gid)
            path.chmod(0o600)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nssl = on\n"
                       f"unix_socket_directories = '{root}'\nfsync = off\n"
                       "max_connections = 20\nshared_buffers = 16MB\n")
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                     "-w", "-t", "30", "start")
        try:
            yield TlsPostgres(port=port, ca_pem=_pem(ca), other_ca_pem=ca_pem("dbpool other CA"))
        finally:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                         "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
