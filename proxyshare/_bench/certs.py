"""Throwaway certificates for the bench's TLS scenario, made at run time.

A private CA and a server certificate for ``localhost``/``127.0.0.1``,
both ECDSA P-256 and valid for a day, in a private directory (key files
0600).  Made with the ``cryptography`` package when it is importable (pip
and many tools bring it), else with the ``openssl`` command; with neither
the scenario is skipped with that reason.  proxyshare depends on neither.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchCerts", "CertificatesUnavailable", "make_certificates"]


class CertificatesUnavailable(RuntimeError):
    """No way to make certificates here; the message says why, in one line."""


@dataclass(frozen=True)
class BenchCerts:
    ca: Path
    cert: Path
    key: Path
    made_with: str  # "cryptography" or "openssl"


def make_certificates(directory: Path, prefer: str | None = None) -> BenchCerts:
    """Write a CA and a server certificate into ``directory`` (0700); ``prefer`` forces a way."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    if prefer in (None, "cryptography"):
        try:
            import cryptography  # noqa: F401  (only to know whether it is there)
        except ImportError:
            if prefer is not None:
                raise CertificatesUnavailable("the cryptography package is not installed") from None
        else:
            return _with_cryptography(directory)
    if shutil.which("openssl") is None:
        raise CertificatesUnavailable(
            "cannot make certificates: neither the cryptography package nor the openssl "
            "command is available (pip install cryptography)"
        )
    return _with_openssl(directory)


def _private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _with_cryptography(directory: Path) -> BenchCerts:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)

    def usage(*, sign_certs: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=sign_certs,
            crl_sign=sign_certs,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxyshare bench CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign_certs=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = BenchCerts(directory / "ca.pem", directory / "server.pem", directory / "server.key", "")
    paths.ca.write_bytes(ca.public_bytes(pem))
    paths.cert.write_bytes(cert.public_bytes(pem))
    _private(
        paths.key,
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return BenchCerts(paths.ca, paths.cert, paths.key, "cryptography")


def _with_openssl(directory: Path) -> BenchCerts:
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, request = (
        directory / "server.pem",
        directory / "server.key",
        directory / "server.csr",
    )
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_subject = ["-subj", "/CN=proxyshare bench CA"]
    ca_extensions = [
        *("-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"),
    ]
    signing = ["-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-extfile", extensions]
    ca_files = ["-keyout", ca_key, "-out", ca, "-days", "1"]
    commands = [
        ["req", "-x509", *new_key, *ca_files, *ca_subject, *ca_extensions],
        ["req", *new_key, "-keyout", key, "-out", request, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", request, *signing, "-out", cert, "-days", "1"],
    ]
    old_umask = os.umask(0o077)  # the keys are born private
    try:
        for args in commands:
            done = subprocess.run(
                ["openssl", *map(str, args)], capture_output=True, text=True, timeout=60
            )
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise CertificatesUnavailable(f"openssl {args[0]} failed: {last}")
    finally:
        os.umask(old_umask)
    for private in (key, ca_key):
        private.chmod(0o600)
    return BenchCerts(ca, cert, key, "openssl")
