"""Fixtures for the MQTT tests: real mosquitto brokers, listeners, a running service."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Settings
from appliance.service import Service
from appliance.wiring import add_components
from tests.brokers import MOSQUITTO_MISSING, Broker, Listener, mosquitto_binary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/mqtt is marked `broker` (select or deselect with -m)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.broker)


def _broker(directory: Path) -> Broker:
    if mosquitto_binary() is None:
        pytest.skip(MOSQUITTO_MISSING)
    broker = Broker(directory)
    broker.start()
    return broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session: password file, ACL, TLS listeners, persistence off."""
    b = _broker(tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


@pytest.fixture
def outage_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, to kill and restart."""
    b = _broker(tmp_path / "outage-broker")
    yield b
    b.kill()


@pytest.fixture
def mqtt_settings(make_settings: Callable[..., Settings], broker: Broker) -> Callable[..., Settings]:
    """Settings with MQTT pointed at a broker (user `appliance`); keyword overrides go to [mqtt]."""

    def build(*, to: Broker | None = None, source: dict[str, Any] | None = None, **mqtt: Any) -> Settings:
        b = to or broker
        section: dict[str, Any] = {
            "host": b.host,
            "port": b.port,
            "username": "appliance",
            "password_file": b.password_file("appliance"),
            "reconnect_max_s": 1.0,
            "health_interval_s": 1.0,
        }
        section.update(mqtt)
        return make_settings(
            source=source or {"kind": "simulator", "fps": 40}, mqtt=section, web={"enabled": False}
        )

    return build


@pytest.fixture
def listen(broker: Broker) -> Iterator[Callable[..., Listener]]:
    """Listener factory (closed at teardown)."""
    made: list[Listener] = []

    def make(topics: list[str], *, to: Broker | None = None, user: str = "tester") -> Listener:
        listener = Listener(to or broker, topics, user=user)
        made.append(listener)
        return listener

    yield make
    for listener in made:
        listener.close()


@contextmanager
def running(settings: Settings) -> Iterator[Service]:
    """A started service with its components; stopped on exit."""
    service = Service(settings)
    add_components(service)
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def run_service() -> Callable[[Settings], Any]:
    """`with run_service(settings) as service:` a started service."""
    return running
