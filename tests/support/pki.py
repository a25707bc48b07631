"""A private test CA and a TLS server certificate for the real-client tests (python `cryptography`).

`make_pki(directory)` writes, all PEM:
    ca.crt, ca.key                 the test CA (EC P-256)
    server.crt, server.key         a server certificate signed by it: SANs localhost, 127.0.0.1 and, when the machine
                                   has one, its first non-loopback IPv4 address (moby verifies TLS only there)
    server-chain.crt               server.crt followed by ca.crt (what nginx serves)
    certdir/ca.crt                 the flat directory skopeo and podman take as --*-cert-dir
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SIOCGIFADDR = 0x8915


def non_loopback_ipv4() -> str | None:
    """The first IPv4 address of a non-loopback interface that is up, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # no IPv4 address on this interface
                continue
            address = ipaddress.ip_address(packed[20:24])
            if not address.is_loopback and not address.is_link_local and not address.is_unspecified:
                return str(address)
    return None


@dataclass(frozen=True)
class TestPki:
    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    server_chain: Path
    cert_dir: Path
    dns_names: tuple[str, ...] = field(default=())
    ip_addresses: tuple[str, ...] = field(default=())

    __test__ = False  # not a pytest test class


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_pki(directory: Path, common_name: str = "connected-registry test CA") -> TestPki:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    until = now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    dns_names = ("localhost",)
    ip_addresses = ("127.0.0.1",) + tuple(a for a in [non_loopback_ipv4()] if a)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(until)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(name) for name in dns_names]
            + [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    server_pem = server.public_bytes(serialization.Encoding.PEM)
    pki = TestPki(
        directory=directory,
        ca_cert=directory / "ca.crt", ca_key=directory / "ca.key",
        server_cert=directory / "server.crt", server_key=directory / "server.key",
        server_chain=directory / "server-chain.crt", cert_dir=directory / "certdir",
        dns_names=dns_names, ip_addresses=ip_addresses,
    )
    _write_key(ca_key, pki.ca_key)
    _write_key(server_key, pki.server_key)
    pki.ca_cert.write_bytes(ca_pem)
    pki.server_cert.write_bytes(server_pem)
    pki.server_chain.write_bytes(server_pem + ca_pem)
    pki.cert_dir.mkdir(exist_ok=True)
    (pki.cert_dir / "ca.crt").write_bytes(ca_pem)
    return pki
