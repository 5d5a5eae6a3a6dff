"""Throwaway TLS database servers for the TLS tests: a PostgreSQL and a MariaDB, each with its
own data directory and port, a CA and a server certificate made here (the certificate names
``localhost`` only), started as the ``postgres`` / ``mysql`` user and stopped afterwards."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pymysql
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.server import free_port

__all__ = ["TlsServer", "ca_pem", "tls_mariadb", "tls_postgres"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_START_SECONDS = 30


@dataclass(frozen=True)
class TlsServer:
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


def _owned_dir(prefix: str, owner: pwd.struct_passwd) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chown(root, owner.pw_uid, owner.pw_gid)
    return root


def _write_certs(where: Path, owner: pwd.struct_passwd, cert_pem: bytes, key_pem: bytes) -> None:
    for name, content in (("server.crt", cert_pem), ("server.key", key_pem)):
        path = where / name
        path.write_bytes(content)
        os.chown(path, owner.pw_uid, owner.pw_gid)
        path.chmod(0o600)


@contextmanager
def tls_postgres() -> Iterator[TlsServer]:
    """Start the TLS PostgreSQL (user ``postgres``, trust); stop it and remove its files."""
    ca_key, ca = _make_ca("dbpool test CA")
    cert_pem, key_pem = _server_cert(ca_key, ca)
    postgres = pwd.getpwnam("postgres")
    root = _owned_dir("dbpool-tls-pg-", postgres)
    data = root / "data"
    port = free_port()
    try:
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                     "--auth=trust", "--no-sync")
        _write_certs(data, postgres, cert_pem, key_pem)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\nssl = on\n"
                       f"unix_socket_directories = '{root}'\nfsync = off\n"
                       "max_connections = 20\nshared_buffers = 16MB\n")
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                     "-w", "-t", "30", "start")
        try:
            yield TlsServer(port=port, ca_pem=_pem(ca), other_ca_pem=ca_pem("dbpool other CA"))
        finally:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                         "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_mariadb(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mariadbd exited:\n{log.read_text()[-2000:]}")
        try:
            pymysql.connect(host="127.0.0.1", port=port, user="root", password="",
                            connect_timeout=1).close()
            return
        except pymysql.err.OperationalError:
            time.sleep(0.1)
    raise RuntimeError(f"mariadbd did not start:\n{log.read_text()[-2000:]}")


@contextmanager
def tls_mariadb() -> Iterator[TlsServer]:
    """Start the TLS MariaDB (``root``, empty password); stop it and remove its files."""
    ca_key, ca = _make_ca("dbpool test CA")
    cert_pem, key_pem = _server_cert(ca_key, ca)
    mysql = pwd.getpwnam("mysql")
    root = _owned_dir("dbpool-tls-mariadb-", mysql)
    data = root / "data"
    port = free_port()
    try:
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=mysql",
                        f"--datadir={data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db"], check=True, capture_output=True, timeout=60)
        _write_certs(root, mysql, cert_pem, key_pem)
        log = root / "log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}",
                 f"--port={port}", "--bind-address=127.0.0.1", f"--socket={root / 'sock'}",
                 f"--ssl-cert={root / 'server.crt'}", f"--ssl-key={root / 'server.key'}",
                 "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--max-connections=20"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_mariadb(port, server, log)
            yield TlsServer(port=port, ca_pem=_pem(ca), other_ca_pem=ca_pem("dbpool other CA"))
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
    finally:
        shutil.rmtree(root, ignore_errors=True)
