"""The server home's certificate authority: vehicles' TLS client certificates and the server's.

Vehicles authenticate by mutual TLS (DESIGN §6): each gets a client certificate whose subject
CN is its VIN, issued by this CA at provisioning; ``ota serve`` trusts only this CA for client
certificates. For the embedded default the CA is created on first use under
``state/ca/`` and also issues the server's own certificate, so ``ota serve`` speaks TLS with
nothing to set up. The CA key is encrypted with the keys' passphrase unless the home uses
``--dev`` keys. Keys are ECDSA P-256, which every TLS stack accepts.

``issue`` is pure (keys, names and time in; a certificate out); ``CertificateAuthority`` holds
the files. A deployment with its own PKI points ``[serve]`` at its own files instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ota_client.atomic import write_atomic
from ota_client.strict import FormatError, printable, read_bounded
from ota_server.errors import KeyStoreError
from ota_server.keys.store import PassphraseSource

MAX_PEM = 64 << 10
CA_YEARS = 20
CLIENT_YEARS = 15  # a vehicle's life on the road; revocation is by the inventory, not a CRL
SERVER_DAYS = 825


@dataclass(frozen=True)
class Issued:
    certificate: bytes  # PEM
    key: bytes  # PEM, PKCS#8, unencrypted: written only into a vehicle's provisioning folder

    @property
    def serial(self) -> str:
        return format(x509.load_pem_x509_certificate(self.certificate).serial_number, "x")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    now: datetime,
    lifetime: timedelta,
    server_names: tuple[str, ...] = (),
) -> Issued:
    """A leaf certificate: a client one (CN = VIN), or a server one for ``server_names``."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server_names:
        alt: list[x509.GeneralName] = []
        for host in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class CertificateAuthority:
    """``state/ca/ca.pem`` and ``ca.key`` of one server home."""

    def __init__(self, directory: Path, passphrase: PassphraseSource, *, encrypted: bool) -> None:
        self.directory = directory
        self._passphrase = passphrase
        self._encrypted = encrypted
        self._loaded: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    def exists(self) -> bool:
        return self.cert_path.is_file()

    def create(self, now: datetime, name: str = "OTA fleet CA") -> None:
        if self.exists():
            raise KeyStoreError(f"{printable(str(self.directory))} already holds a CA")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase(True))
            if self._encrypted
            else serialization.NoEncryption()
        )
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        write_atomic(self.key_path, pem, mode=0o600)
        write_atomic(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))
        self._loaded = (cert, key)

    def certificate(self) -> x509.Certificate:
        try:
            data = read_bounded(self.cert_path, MAX_PEM, printable(str(self.cert_path)))
            return x509.load_pem_x509_certificate(data)
        except FileNotFoundError:
            raise KeyStoreError("no certificate authority yet: provision a vehicle first") from None
        except (FormatError, ValueError) as e:
            raise KeyStoreError(f"damaged CA certificate: {printable(str(e), 100)}") from None

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self._loaded is None:
            cert = self.certificate()
            try:
                pem = read_bounded(self.key_path, MAX_PEM, printable(str(self.key_path)))
            except (FileNotFoundError, FormatError) as e:
                raise KeyStoreError(f"cannot read the CA key: {printable(str(e), 100)}") from None
            try:
                try:
                    key = serialization.load_pem_private_key(pem, password=None)
                except TypeError:  # encrypted
                    key = serialization.load_pem_private_key(pem, self._passphrase(False))
            except (ValueError, TypeError):
                raise KeyStoreError("cannot decrypt the CA key: wrong passphrase?") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise KeyStoreError("the CA key is not an ECDSA key")
            self._loaded = (cert, key)
        return self._loaded

    def issue(
        self, common_name: str, *, now: datetime, server_names: tuple[str, ...] = ()
    ) -> Issued:
        cert, key = self._load()
        lifetime = timedelta(days=SERVER_DAYS if server_names else 365 * CLIENT_YEARS)
        return issue(cert, key, common_name, now=now, lifetime=lifetime, server_names=server_names)


def server_files(
    ca: CertificateAuthority, names: tuple[str, ...], now: datetime
) -> tuple[Path, Path]:
    """The server's own certificate and key from the home's CA (``state/ca/server.*``), made
    (with the CA, the first time) when missing, expiring within 30 days, or not for ``names``."""
    cert_path, key_path = ca.directory / "server.pem", ca.directory / "server.key"
    try:
        cert = x509.load_pem_x509_certificate(read_bounded(cert_path, MAX_PEM, "server.pem"))
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(n) for n in alt.get_values_for_type(x509.DNSName)}
        have |= {str(n) for n in alt.get_values_for_type(x509.IPAddress)}
        fresh = cert.not_valid_after_utc - now > timedelta(days=30)
        if fresh and set(names) <= have and key_path.is_file():
            return cert_path, key_path
    except (FileNotFoundError, FormatError, ValueError, x509.ExtensionNotFound):
        pass
    if not ca.exists():
        ca.create(now)
    issued = ca.issue(names[0], now=now, server_names=names)
    write_atomic(key_path, issued.key, mode=0o600)
    write_atomic(cert_path, issued.certificate)
    return cert_path, key_path
