"""The committed sparkplug_b_pb2.py (and .pyi) is what protoc makes of the committed official proto."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[2] / "appliance" / "mqtt" / "sparkplug"


def test_proto_keeps_its_licence_header():
    head = (HERE / "sparkplug_b.proto").read_text().splitlines()[:8]
    assert any("SPDX-License-Identifier: EPL-2.0" in line for line in head)
    assert any("Eclipse Public License 2.0" in line for line in head)


def test_generated_module_matches_the_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="protoc comes with grpcio-tools: pip install -e '.[dev]'")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            "sparkplug_b.proto",
        ],
        check=True,
        capture_output=True,
    )

    def descriptor(text: str) -> str:  # the compiled schema; the protoc version lines may differ
        return next(line for line in text.splitlines() if "AddSerializedFile" in line)

    fresh = descriptor((tmp_path / "sparkplug_b_pb2.py").read_text())
    committed = descriptor((HERE / "sparkplug_b_pb2.py").read_text())
    assert fresh == committed, (
        "sparkplug_b_pb2.py is stale: regenerate it (see appliance/mqtt/sparkplug/__init__.py)"
    )

    # The stub declares the same messages, enums and fields (type spellings may vary by protoc).
    def declared(text: str) -> list[str]:
        return re.findall(r"^[ \t]*(?:class \w+|\w+(?=:))", text, flags=re.MULTILINE)

    fresh_stub = declared((tmp_path / "sparkplug_b_pb2.pyi").read_text())
    committed_stub = declared((HERE / "sparkplug_b_pb2.pyi").read_text())
    assert fresh_stub, "protoc wrote an empty stub"
    assert fresh_stub == committed_stub, (
        "sparkplug_b_pb2.pyi is stale: regenerate it (see appliance/mqtt/sparkplug/__init__.py)"
    )
