"""The supervised link: TLS, credentials, backoff, guarded callbacks, loop liveness."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import MqttConfig
from appliance.mqtt.client import MqttLink
from appliance.mqtt.credentials import read_password
from tests.brokers import Broker


class Recorder:
    """A LinkHandler that records what it is told."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.sessions: list[Any] = []
        self.downs: list[int] = []
        self.messages: list[Any] = []
        self.fail_on_message = False

    def on_connected(self, session: Any) -> None:
        self.sessions.append(session)
        session.subscribe(["vision/test/#"])
        self.up.set()

    def on_disconnected(self, generation: int) -> None:
        self.downs.append(generation)
        self.up.clear()

    def on_message(self, message: Any) -> None:
        if self.fail_on_message:
            raise RuntimeError("handler bug")
        self.messages.append(message)

    def on_published(self, generation: int, mid: int, reason: Any) -> None:
        pass


def config(broker: Broker, **overrides: Any) -> MqttConfig:
    data: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "username": "appliance",
        "password_file": broker.password_file("appliance"),
        "reconnect_max_s": 1.0,
        "connect_timeout_s": 2.0,
    }
    data.update(overrides)
    return MqttConfig(**data)


@pytest.fixture
def link_for() -> Iterator[Any]:
    links: list[MqttLink] = []

    def make(cfg: MqttConfig, handler: Recorder | None = None) -> tuple[MqttLink, Recorder]:
        rec = handler or Recorder()
        link = MqttLink(cfg, f"test-{len(links)}-{time.monotonic_ns()}", rec)
        links.append(link)
        link.start()
        return link, rec

    yield make
    for link in links:
        link.stop()


def wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def test_connects_with_password_over_tls(broker, link_for):
    link, rec = link_for(config(broker, port=broker.tls_port, tls_ca=broker.certs.ca))
    assert rec.up.wait(10)
    health = link.health()
    assert health["state"] == "ok" and health["tls"] is True and health["protocol"] == "5"
    assert health["receive_maximum"] == 20  # mosquitto's default, announced in CONNACK


def test_mutual_tls_client_certificate(broker, link_for):
    certs = broker.certs
    link, rec = link_for(
        config(
            broker,
            port=broker.mtls_port,
            tls_ca=certs.ca,
            tls_cert=certs.client_cert,
            tls_key=certs.client_key,
        )
    )
    assert rec.up.wait(10)
    without, rec2 = link_for(config(broker, port=broker.mtls_port, tls_ca=certs.ca))
    wait(lambda: without.attempts >= 1 and without.last_error is not None)
    assert not rec2.up.is_set()


def test_wrong_password_is_reported_and_not_retried_in_a_tight_loop(broker, link_for, tmp_path):
    bad = tmp_path / "bad-password"
    bad.write_text("wrong\n")
    link, rec = link_for(config(broker, password_file=bad, reconnect_max_s=5.0))
    wait(lambda: link.state == "auth_failed")
    time.sleep(1.5)
    health = link.health()
    assert health["state"] == "error"
    assert "refused user appliance" in health["last_error"] and "Not authorized" in health["last_error"]
    assert health["attempts"] == 1  # the next try waits reconnect_max_s
    assert not rec.up.is_set()


def test_unreadable_password_file_is_a_clear_error(broker, link_for, tmp_path):
    link, _ = link_for(config(broker, password_file=tmp_path / "missing"))
    wait(lambda: link.state == "config_error")
    assert "cannot read the MQTT password" in link.health()["last_error"]


def test_password_from_systemd_credentials(broker, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret\n")
    cfg = MqttConfig(username="appliance")
    assert read_password(cfg, {"CREDENTIALS_DIRECTORY": str(creds)}) == "s3cret"
    assert read_password(cfg, {}) is None
    # the name the shipped unit loads (LoadCredentialEncrypted=appliance.mqtt-password) wins
    (creds / "appliance.mqtt-password").write_text("from-the-unit\n")
    assert read_password(cfg, {"CREDENTIALS_DIRECTORY": str(creds)}) == "from-the-unit"


def test_password_credential_name_matches_the_shipped_unit(tmp_path):
    """Every LoadCredential name for MQTT in systemd/appliance.service is one read_password reads."""
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "appliance.service").read_text()
    names = [
        line.split("=", 1)[1].split(":", 1)[0].strip()
        for line in unit.splitlines()
        if line.startswith(("LoadCredential=", "LoadCredentialEncrypted=")) and "mqtt" in line
    ]
    assert names
    for name in names:
        creds = tmp_path / name
        creds.mkdir()
        (creds / name).write_text("pw\n")
        assert read_password(MqttConfig(), {"CREDENTIALS_DIRECTORY": str(creds)}) == "pw", name


def test_no_broker_degraded_with_capped_backoff(link_for):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link, _ = link_for(MqttConfig(host="127.0.0.1", port=port, reconnect_max_s=1.0))
    time.sleep(3.2)
    health = link.health()
    assert health["state"] == "degraded" and health["connection"] == "unreachable"
    assert "cannot connect" in health["last_error"]
    # 0.5 s, then about 1 s each (cap 1 s): a handful of attempts, not hundreds
    assert 2 <= health["attempts"] <= 6


def test_callback_exception_is_contained(broker, link_for, listen, caplog):
    link, rec = link_for(config(broker))
    assert rec.up.wait(10)
    publisher = listen([])
    # `up` is set when SUBSCRIBE is sent, not acknowledged: probe until messages arrive.
    deadline = time.monotonic() + 10
    while not rec.messages:
        assert time.monotonic() < deadline, "subscription never became effective"
        publisher.publish("vision/test/probe", b"0")
        time.sleep(0.1)
    time.sleep(0.3)  # late probes
    rec.messages.clear()
    rec.fail_on_message = True
    publisher.publish("vision/test/a", b"1")
    wait(lambda: link.callback_errors == 1)
    rec.fail_on_message = False
    publisher.publish("vision/test/b", b"2")
    wait(lambda: [m.topic for m in rec.messages] == ["vision/test/b"])
    assert link.health()["loop_alive"] is True
    caplog.clear()  # the guarded exception was logged on purpose


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # killed on purpose
def test_dead_network_loop_is_detected_and_replaced(broker, link_for, listen):
    link, rec = link_for(config(broker))
    assert rec.up.wait(10)
    first = link.session
    assert first is not None
    client = first.client
    client.suppress_exceptions = False

    def boom(*_args: Any) -> None:  # an unguarded callback: what kills paho's loop thread
        raise RuntimeError("unguarded")

    client.message_callback_add("vision/test/kill", boom)
    listen([]).publish("vision/test/kill", b"x")
    wait(lambda: link.loop_deaths == 1)
    wait(lambda: link.session is not None and link.session is not first and link.connected)
    assert first.generation in rec.downs
    wait(lambda: link.health()["state"] == "ok")  # state follows `up` by a moment


def test_falls_back_to_mqtt_311_when_the_broker_refuses_5(link_for):
    """A broker that only speaks 3.1.1 answers CONNECT v5 with return code 1."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    versions: list[int] = []

    def serve() -> None:
        for _ in range(2):
            conn, _addr = server.accept()
            with conn:
                data = conn.recv(1024)
                versions.append(data[8])  # protocol level byte: 5 or 4
                conn.sendall(b"\x20\x02\x00\x01" if data[8] == 5 else b"\x20\x02\x00\x00")
                if data[8] == 4:
                    time.sleep(1.0)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    link, rec = link_for(MqttConfig(host="127.0.0.1", port=server.getsockname()[1], reconnect_max_s=1.0))
    try:
        assert rec.up.wait(10)
        assert versions == [5, 4]
        assert link.health()["protocol"] == "3.1.1"
    finally:
        server.close()
