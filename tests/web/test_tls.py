"""HTTPS with a given certificate: cookies become Secure (and __Host-), HSTS is sent."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest

from appliance.auth import add_user, run_in_transaction
from appliance.store.db import open_store
from tests.web.support import start_console

x509 = pytest.importorskip("cryptography.x509", reason="cryptography (pulled in by the dev extra)")


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_https_console(tmp_path: Path, models_dir: Path) -> None:
    cert, key = self_signed(tmp_path)
    service, _ = start_console(tmp_path, models_dir, tls_cert=str(cert), tls_key=str(key))
    try:
        conn = open_store(service.settings.db_path)
        run_in_transaction(conn, lambda c: add_user(c, "ann", "viewer", "a long password"))
        conn.close()
        port = service.components["web"].port  # type: ignore[attr-defined]
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as client:
            page = client.get("/login")
            assert page.status_code == 200
            assert "strict-transport-security" in page.headers
            assert "secure" in page.headers["set-cookie"].lower()
            answer = client.post(
                "/login",
                data={
                    "username": "ann",
                    "password": "a long password",
                    "csrf_token": client.cookies["appliance_login_csrf"],
                },
            )
            assert answer.status_code == 303
            session = answer.headers["set-cookie"]
            assert session.startswith("__Host-appliance_session=")
            assert all(
                flag in session.lower() for flag in ("secure", "httponly", "samesite=strict", "path=/")
            )
            assert client.get("/api/me").json()["name"] == "ann"
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
    finally:
        service.stop()
