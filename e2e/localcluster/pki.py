"""Generate the throw-away PKI a local control plane needs.

kube-apiserver refuses to serve without TLS and needs a key to sign service-account tokens, and
kube-controller-manager needs the CA (published to pods as ``ca.crt``), the service-account private key
(to mint token secrets) and a CA key pair (for its CSR signing controller). Everything is generated fresh
per cluster so no secret material lives in the repository. The CA and serving certificates come from the
same code that makes the webhook server's self-signed certificates (ECDSA P-256, milliseconds to
generate); the service-account key is RSA because that is what Kubernetes documents and every client
verifies. With a node, kube-apiserver also needs a client certificate for the kubelet's API (``kubectl
logs``/``exec``), which the kubelet authenticates against the same CA.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhooks.certs import KeyPair, generate_ca, issue_serving_cert

VALIDITY = datetime.timedelta(days=7)
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
KUBELET_CLIENT_GROUP = "system:masters"

_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    controller_manager_cert: Path
    controller_manager_key: Path
    service_account_key: Path
    service_account_pub: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path


def _write_key(path: Path, key: _PrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def issue_client_cert(ca: KeyPair, user: str, groups: Sequence[str]) -> KeyPair:
    """A TLS client certificate for ``user`` in ``groups`` (Kubernetes reads CN and O), signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + VALIDITY, ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def generate_pki(directory: Path, *, service_ip: str, node_ip: str | None = None) -> Pki:
    """Write a CA, serving certificates and the service-account key pair into ``directory``.

    ``service_ip`` is the first address of the service CIDR: in-cluster clients reach the apiserver there.
    ``node_ip`` is the node's address when the cluster has a node: the control plane listens there too.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = generate_ca("kserve-py-localcluster-ca", valid_for=VALIDITY)
    node_ips = [node_ip] if node_ip else []
    apiserver = issue_serving_cert(
        ca,
        [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
        ["127.0.0.1", "::1", service_ip, *node_ips],
        valid_for=VALIDITY,
    )
    kcm = issue_serving_cert(ca, ["localhost"], ["127.0.0.1", *node_ips], valid_for=VALIDITY)
    kubelet_client = issue_client_cert(ca, KUBELET_CLIENT_USER, [KUBELET_CLIENT_GROUP])
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        apiserver_cert=directory / "apiserver.crt",
        apiserver_key=directory / "apiserver.key",
        controller_manager_cert=directory / "controller-manager.crt",
        controller_manager_key=directory / "controller-manager.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
        kubelet_client_cert=directory / "apiserver-kubelet-client.crt",
        kubelet_client_key=directory / "apiserver-kubelet-client.key",
    )
    for cert_path, key_path, pair in (
        (pki.ca_cert, pki.ca_key, ca),
        (pki.apiserver_cert, pki.apiserver_key, apiserver),
        (pki.controller_manager_cert, pki.controller_manager_key, kcm),
        (pki.kubelet_client_cert, pki.kubelet_client_key, kubelet_client),
    ):
        _write_cert(cert_path, pair.cert)
        _write_key(key_path, pair.key)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
