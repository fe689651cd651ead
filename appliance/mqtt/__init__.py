"""MQTT for OT systems: durable results, availability, health, state, events, commands.

`component.MqttComponent` is what the service registers; `sparkplug` is the optional Sparkplug B
edge node. The contract (topics, payloads, QoS, retain) is in docs/mqtt.md.
"""
