"""What the link needs to log in: the password (file or systemd credential) and the TLS context."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from appliance.config import MqttConfig

# The shipped unit loads `appliance.mqtt-password` (LoadCredentialEncrypted=); the short name is
# what a hand-written `LoadCredential=mqtt-password:...` gives. The unit's name wins.
CREDENTIAL_NAMES = ("appliance.mqtt-password", "mqtt-password")


def read_password(config: MqttConfig, environ: dict[str, str] | None = None) -> str | None:
    """The broker password: `password_file`, else the systemd credential (`CREDENTIAL_NAMES`)."""
    env = os.environ if environ is None else environ
    path = config.password_file
    if path is None and env.get("CREDENTIALS_DIRECTORY"):
        directory = Path(env["CREDENTIALS_DIRECTORY"])
        path = next((directory / n for n in CREDENTIAL_NAMES if (directory / n).exists()), None)
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise LinkConfigError(f"cannot read the MQTT password from {path}: {exc.strerror or exc}") from exc


class LinkConfigError(Exception):
    """Settings the link cannot use (unreadable password or certificate): fix and it retries."""


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """A verifying TLS context from the configured CA (and client certificate), or None."""
    if config.tls_ca is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(config.tls_ca))
        if config.tls_cert is not None and config.tls_key is not None:
            context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    except (OSError, ssl.SSLError) as exc:
        raise LinkConfigError(f"TLS files unusable: {exc}") from exc
    return context
