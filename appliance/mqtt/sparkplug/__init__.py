"""Sparkplug B 3.0 edge node (off by default): births, deaths, DDATA per line, DCMD, STATE.

`sparkplug_b.proto` is the official Eclipse Sparkplug/Tahu payload definition, unmodified, with
its EPL-2.0 licence header (taken from the source distribution of `pysparkplug` 0.6.1 on PyPI,
which ships it as published by the Eclipse Tahu project). `sparkplug_b_pb2.py` is generated
from it by the protoc bundled with `grpcio-tools` (PyPI) and committed, so that the appliance
needs only the `protobuf` runtime; `sparkplug_b_pb2.pyi` (its types, for mypy) likewise. To
regenerate (the test `test_sparkplug_proto.py` checks that the committed files match):

    python -m grpc_tools.protoc -I appliance/mqtt/sparkplug \\
        --python_out=appliance/mqtt/sparkplug --pyi_out=appliance/mqtt/sparkplug \\
        appliance/mqtt/sparkplug/sparkplug_b.proto

The generated module checks the protobuf runtime version (same major, not older than the
protoc that made it); `pyproject.toml` pins the runtime accordingly.
"""
