"""Edge-box profiles: detection, named profiles on boxes that lack their accelerator, health."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.config import ConfigError, Settings, load_settings
from appliance.service import Service
from hardware.profiles import (
    CPU,
    CUDA,
    OPENVINO,
    PROFILES,
    TENSORRT,
    available_providers,
    cache_dir,
    detect_profile,
    resolve_profile,
)


def no_devices(_path: str) -> bool:
    return False


def nvidia_devices(path: str) -> bool:
    return path == "/dev/nvidiactl"


def test_a_gpu_wheel_without_a_gpu_stays_on_the_cpu() -> None:
    compiled = [TENSORRT, CUDA, CPU]  # what onnxruntime-gpu lists, GPU or not
    assert available_providers(compiled, no_devices) == [CPU]
    assert available_providers(compiled, nvidia_devices) == [TENSORRT, CUDA, CPU]
    assert available_providers([OPENVINO, CPU], no_devices) == [OPENVINO, CPU]


def test_detection() -> None:
    cpu = detect_profile(cameras=1, providers=[CPU], cores=4)
    assert (cpu.name, cpu.inference_workers, cpu.intra_op_threads, cpu.source) == (
        "auto-cpu4",
        4,
        1,
        "detected",
    )
    assert detect_profile(cameras=6, providers=[CPU], cores=4).inference_workers == 3  # a core for decode
    gpu = detect_profile(providers=[CUDA, CPU], cores=8)
    assert (gpu.name, gpu.inference_workers, gpu.providers) == ("auto-gpu", 1, (CUDA, CPU))
    ov = detect_profile(providers=[OPENVINO, CPU], cores=8)
    assert ov.providers[0] == OPENVINO and ov.inference_workers * ov.intra_op_threads <= 8


def test_named_profile_drops_what_the_box_lacks(caplog: pytest.LogCaptureFixture) -> None:
    profile = resolve_profile("jetson-orin", available=[CPU])
    assert profile.providers == (CPU,)
    assert profile.missing == (TENSORRT, CUDA)
    assert "lacks" in caplog.text
    assert resolve_profile("small-cpu", available=[CPU]).missing == ()
    with pytest.raises(ValueError, match="unknown edge-box profile"):
        resolve_profile("no-such")


def test_provider_options_put_caches_in_the_cache_dir(tmp_path: Path) -> None:
    trt = resolve_profile("jetson-orin", available=[TENSORRT, CUDA, CPU])
    options = trt.provider_options(tmp_path)
    assert options[TENSORRT]["trt_engine_cache_path"] == str(tmp_path / "tensorrt")
    assert (tmp_path / "tensorrt").is_dir()
    ov = PROFILES["intel-igpu"].provider_options(tmp_path)
    assert ov[OPENVINO]["device_type"] == "GPU" and ov[OPENVINO]["cache_dir"] == str(tmp_path / "openvino")
    assert PROFILES["small-cpu"].provider_options(tmp_path) == {}


def test_cache_dir_follows_systemd() -> None:
    state = Path("/var/lib/appliance")
    assert cache_dir(state, {"CACHE_DIRECTORY": "/var/cache/appliance"}) == Path(
        "/var/cache/appliance/onnxruntime"
    )
    assert cache_dir(state, {}) == state / "cache/onnxruntime"


def test_unknown_profile_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        'profile = "jetson-orinn"\n[[lines]]\nid = "l"\ntiers = [{ model = "m" }]\n'
        '[[lines.cameras]]\nid = "c"\nsource = { kind = "simulator" }\n'
    )
    with pytest.raises(ConfigError, match=r"a\.toml:1: profile: .*unknown edge-box profile"):
        load_settings(config)


def test_health_reports_the_profile_and_the_providers_in_use(make_settings: Callable[..., Settings]) -> None:
    service = Service(make_settings(profile="single-core"))
    service.start()
    try:
        profile = service.health()["profile"]
    finally:
        service.stop()
    assert profile["name"] == "single-core"
    assert profile["providers"] == [CPU]
    assert profile["missing"] == []
    assert profile["sessions"] == {"bright1": [CPU]}
