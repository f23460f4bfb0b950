"""PKI for the local control plane: a CA, the apiserver's serving cert, client certs, and the
service-account signing key. Everything is generated fresh per control plane (test-only keys).

Opt-in for a real node (``devenv.realnode``): extra IP SANs on the apiserver's serving cert
(the pod bridge gateway), the apiserver's kubelet client cert, and ``issue_cert`` for the
kubelet's serving cert from the same CA. Without them the PKI is exactly as before.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = dt.timedelta(days=7)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path  # private, PEM (signing)
    sa_pub: Path  # public, PEM (verification; also what OpenBao's jwt auth trusts)
    # Only with make_pki(kubelet_client=True): the apiserver's identity towards kubelets.
    kubelet_client_cert: Path | None = None
    kubelet_client_key: Path | None = None


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _issue(
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    subject: x509.Name,
    server: bool,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(
    directory: Path, *, extra_ips: Sequence[str] = (), kubelet_client: bool = False
) -> Pki:
    """A fresh PKI in ``directory``; ``extra_ips`` are added to the apiserver's SANs and
    ``kubelet_client`` adds the apiserver's client cert for kubelets (real node only)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("openbao-backup-local-ca")
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .sign(ca_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
    ]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips]
    srv_key, srv = _issue(
        ca_key=ca_key, ca_name=ca_name, subject=_name("kube-apiserver"), server=True, sans=sans
    )
    adm_key, adm = _issue(
        ca_key=ca_key, ca_name=ca_name, subject=_name("admin", "system:masters"), server=False
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    kubelet_paths: dict[str, Path] = {}
    if kubelet_client:
        kc_key, kc = _issue(
            ca_key=ca_key,
            ca_name=ca_name,
            subject=_name("kube-apiserver-kubelet-client", "system:masters"),
            server=False,
        )
        kubelet_paths = {
            "kubelet_client_cert": directory / "apiserver-kubelet-client.crt",
            "kubelet_client_key": directory / "apiserver-kubelet-client.key",
        }
        kubelet_paths["kubelet_client_cert"].write_bytes(_cert_pem(kc))
        kubelet_paths["kubelet_client_key"].write_bytes(_key_pem(kc_key))
        kubelet_paths["kubelet_client_key"].chmod(0o600)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
        **kubelet_paths,
    )
    pki.ca_cert.write_bytes(_cert_pem(ca))
    pki.ca_key.write_bytes(_key_pem(ca_key))
    pki.serving_cert.write_bytes(_cert_pem(srv))
    pki.serving_key.write_bytes(_key_pem(srv_key))
    pki.admin_cert.write_bytes(_cert_pem(adm))
    pki.admin_key.write_bytes(_key_pem(adm_key))
    pki.sa_key.write_bytes(_key_pem(sa_key))
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for p in (pki.ca_key, pki.serving_key, pki.admin_key, pki.sa_key):
        p.chmod(0o600)
    return pki


def issue_cert(
    pki: Pki,
    directory: Path,
    name: str,
    *,
    server: bool,
    ips: Sequence[str] = (),
    dns: Sequence[str] = (),
    org: str | None = None,
) -> tuple[Path, Path]:
    """A cert (and key) signed by the PKI's CA, written as ``<directory>/<name>.crt|.key``."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    sans += [x509.DNSName(d) for d in dns]
    key, cert = _issue(
        ca_key=ca_key,
        ca_name=ca.subject,
        subject=_name(name, org),
        server=server,
        sans=sans or None,
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(_cert_pem(cert))
    key_path.write_bytes(_key_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path
