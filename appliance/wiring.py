"""Which consumers a service gets from its settings (web console, MQTT, sync)."""

from __future__ import annotations

from appliance.service import Service


def add_components(service: Service) -> None:
    """Attach the consumers the settings enable."""
    settings = service.settings
    if settings.web.enabled:
        from appliance.web.app import create_app
        from appliance.web.server import WebServer

        service.add_component("web", WebServer(create_app(service), settings.web))
    if settings.mqtt.enabled:
        from appliance.control import Controller
        from appliance.mqtt.component import MqttComponent

        controller = Controller(service)  # one for every command channel: one model switch at a time
        service.add_component("mqtt", MqttComponent(service, controller))
        if settings.mqtt.sparkplug.enabled:
            from appliance.mqtt.sparkplug.node import SparkplugComponent

            service.add_component("sparkplug", SparkplugComponent(service, controller))
    # Image retention and hard cases always (unless retain = none); cloud sync with a target.
    from appliance.sync import attach

    attach(service)
