"""Building and reading Sparkplug B payloads (metrics with names, datatypes and values)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from appliance.mqtt.sparkplug import sparkplug_b_pb2 as pb

Payload = pb.Payload
Metric = pb.Payload.Metric

# DataType values of the specification (enum DataType in sparkplug_b.proto).
INT64 = pb.Int64
UINT32 = pb.UInt32
UINT64 = pb.UInt64
DOUBLE = pb.Double
BOOLEAN = pb.Boolean
STRING = pb.String

_FIELD: dict[int, str] = {  # keyed by DataType, an int
    pb.Int8: "int_value",
    pb.Int16: "int_value",
    pb.Int32: "int_value",
    pb.UInt8: "int_value",
    pb.UInt16: "int_value",
    pb.UInt32: "int_value",
    pb.Int64: "long_value",
    pb.UInt64: "long_value",
    pb.DateTime: "long_value",
    pb.Float: "float_value",
    pb.Double: "double_value",
    pb.Boolean: "boolean_value",
    pb.String: "string_value",
    pb.Text: "string_value",
    pb.UUID: "string_value",
}


def add_metric(
    payload: pb.Payload,
    name: str,
    datatype: int,
    value: Any,
    *,
    timestamp: int | None = None,
    historical: bool = False,
) -> pb.Payload.Metric:
    """Append a metric; `None` is sent as `is_null` (never a made-up value)."""
    metric = payload.metrics.add()
    metric.name = name
    metric.datatype = datatype
    if timestamp is not None:
        metric.timestamp = timestamp
    if historical:
        metric.is_historical = True
    if value is None:
        metric.is_null = True
    else:
        field = _FIELD[datatype]
        if datatype == pb.Int64 and value < 0:
            value += 1 << 64  # Int64 travels as two's complement in uint64
        setattr(metric, field, value)
    return metric


def metric_value(metric: pb.Payload.Metric) -> Any:
    """The value of a received metric (None when null or of a type we do not read)."""
    if metric.is_null:
        return None
    field = metric.WhichOneof("value")
    return getattr(metric, field) if field else None


def build(timestamp: int, seq: int | None) -> pb.Payload:
    """An empty payload with its timestamp and (except NDEATH) its seq."""
    payload = pb.Payload()
    payload.timestamp = timestamp
    if seq is not None:
        payload.seq = seq
    return payload


def decode(data: bytes) -> pb.Payload:
    """Parse a payload; raises ValueError for bytes that are not one."""
    try:
        return pb.Payload.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a Sparkplug B payload: {exc}") from exc
