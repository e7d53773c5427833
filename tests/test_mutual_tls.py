"""Mutual TLS on the gateway-connector link: a real TLS server that requires a client certificate from the
federation's CA, in front of a real connector app, and the gateway's own TLS context
(`gateway.app.connector_tls`). The gateway's certificate gets a signed, verified schema through; no
certificate, or one from another CA, gets no connection at all."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from connector_fixture import Department, make_department
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.config import load_config
from connectors.process import free_port
from connectors.protocol import load_private_key
from connectors.service import build_service, create_app
from gateway.app import connector_tls
from gateway.federation import ConnectorLink, ConnectorUnreachable
from gateway.settings import GatewaySettings


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    key_path, cert_path = path.with_suffix(".key"), path.with_suffix(".crt")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _issue(
    cn: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, *, server: bool = False
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer[1].subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())


class _Pki:
    def __init__(self, directory: Path) -> None:
        ca = _issue("fedgate federation CA", None)
        self.ca_cert = directory / "ca.crt"
        self.ca_cert.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
        self.server = _write(directory / "connector", *_issue("tax connector", ca, server=True))
        self.gateway = _write(directory / "gateway", *_issue("fedgate-gateway", ca))
        rogue_ca = _issue("someone else's CA", None)
        self.rogue = _write(directory / "rogue", *_issue("fedgate-gateway", rogue_ca))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Department, _Pki, str]]:
    directory = tmp_path_factory.mktemp("mtls")
    dept = make_department(directory / "tax", "sqlite")
    pki = _Pki(directory)
    app = create_app(build_service(load_config(dept.config_path)))
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ssl_certfile=str(pki.server[0]),
        ssl_keyfile=str(pki.server[1]),
        ssl_ca_certs=str(pki.ca_cert),
        ssl_cert_reqs=ssl.CERT_REQUIRED,  # what the connector's TLS proxy does (ssl_verify_client on)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield dept, pki, f"https://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _link(dept: Department, url: str, verify: ssl.SSLContext) -> ConnectorLink:
    connector_key = load_private_key((dept.directory / "connector.key").read_bytes()).public_key()
    return ConnectorLink(
        url, connector=dept.name, gateway_key=dept.gateway_key, connector_key=connector_key, verify=verify
    )


def _context(tmp_path: Path, pki: _Pki, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    settings = GatewaySettings(
        state_dir=tmp_path,
        tls_client_ca_file=pki.ca_cert,
        tls_cert_file=cert[0] if cert else None,
        tls_key_file=cert[1] if cert else None,
    )
    context = connector_tls(settings)
    assert context is not None
    return context


def test_the_gateway_presents_its_client_certificate_and_gets_a_verified_answer(
    served: tuple[Department, _Pki, str], tmp_path: Path
) -> None:
    dept, pki, url = served
    with _link(dept, url, _context(tmp_path, pki, pki.gateway)) as link:
        schema = link.schema()  # signed request, signed answer, over the mutual-TLS connection
    assert schema.connector == dept.name and schema.datasets[0].name == "wages"


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_without_the_federation_s_client_certificate_there_is_no_connection(
    served: tuple[Department, _Pki, str], tmp_path: Path, who: str
) -> None:
    dept, pki, url = served
    cert = None if who == "no certificate" else pki.rogue
    with _link(dept, url, _context(tmp_path, pki, cert)) as link:
        with pytest.raises(ConnectorUnreachable):
            link.schema()
        assert link.health(timeout=5) is None
