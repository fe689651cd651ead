"""systemd/install.sh into a staging root: the tree, idempotence, upgrade, rollback, uninstall.

The release virtualenvs reuse this interpreter's packages (`--reuse-site-packages`), so nothing
is downloaded; the package itself is built and installed non-editable, as on a box. Health checks
run the installed release for a second (`--health-cmd`), since a staging root has no systemd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.systemd.harness import write_config

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "systemd" / "install.sh"
RUN_RELEASE = 'cd / && "$APPLIANCE_RELEASE/venv/bin/python" -m appliance run --duration 1'

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site_packages() -> str:
    try:
        import setuptools
    except ImportError:
        pytest.skip("building the package needs setuptools in this environment (tests/run.sh installs it)")
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1) and shutil.which("wheel") is None:
        pytest.skip("setuptools < 70.1 without wheel cannot build wheels (tests/run.sh upgrades it)")
    return sysconfig.get_paths()["purelib"]


def install(root: Path, site: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run install.sh with the staging root and this interpreter's packages."""
    command = ["bash", str(INSTALL), *args, "--prefix", str(root)]
    if args and args[0] in ("install", "upgrade"):
        command += ["--python", sys.executable, "--reuse-site-packages", site]
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def staged_config(root: Path) -> Path:
    """The plant's config, there before the first install: no models_dir, so the default (the
    release's models/, found from a non-editable install) is what the service uses."""
    (root / "etc/appliance").mkdir(parents=True)
    config = write_config(root / "etc/appliance/appliance.toml", Path("x"), Path("x"), "bright1")
    text = "\n".join(
        line for line in config.read_text().splitlines() if not line.startswith(("models_dir", "state_dir"))
    )
    config.write_text(text + "\n")
    return config


def tree(root: Path) -> set[str]:
    """Every path under root outside the virtualenvs, relative."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if "/venv/" not in f"/{p.relative_to(root)}/" or p.name == "venv"
    }


def test_install_tree_and_idempotence(tmp_path: Path, models_dir: Path, site_packages: str) -> None:
    root = tmp_path / "root"
    config = staged_config(root)
    before = config.read_text()
    install(root, site_packages, "install", "--version", "1.0.0", "--models", str(models_dir))
    opt = root / "opt/appliance"
    assert os.readlink(opt / "current") == "releases/1.0.0"  # relative: the root can move
    release = opt / "releases/1.0.0"
    expected = {
        "opt/appliance/releases/1.0.0/.complete",
        "opt/appliance/releases/1.0.0/VERSION",
        "opt/appliance/releases/1.0.0/venv",
        "opt/appliance/releases/1.0.0/models/bright1/manifest.json",
        "opt/appliance/releases/1.0.0/share/systemd/appliance.service",
        "opt/appliance/releases/1.0.0/share/docs/install.md",
        "etc/appliance/appliance.toml",
        "etc/appliance/appliance.toml.example",
        "etc/systemd/system/appliance.service",
        "etc/sysusers.d/appliance.conf",
        "usr/local/bin/appliance",
    }
    assert expected <= tree(root), expected - tree(root)
    assert config.read_text() == before, "an existing config was overwritten"
    unit = (REPO / "systemd/appliance.service").read_text()
    pinned = unit.replace("/opt/appliance/current/venv/", "/opt/appliance/releases/1.0.0/venv/")
    assert pinned != unit
    assert (root / "etc/systemd/system/appliance.service").read_text() == pinned
    assert os.access(root / "usr/local/bin/appliance", os.X_OK)
    # The package is installed (not editable) in the release, and finds the release's models.
    python = release / "venv/bin/python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import appliance.config as c; print(c.__file__); print(c.load_settings().models_dir)",
        ],
        cwd="/",
        capture_output=True,
        text=True,
        env={"APPLIANCE_CONFIG": str(config)},
        check=True,
    )
    module, models = probe.stdout.splitlines()
    assert module.startswith(str(release / "venv/lib/")), module
    assert models == str(release / "models")
    run = subprocess.run(
        [str(python), "-m", "appliance", "run", "--duration", "1"],
        cwd="/",
        capture_output=True,
        text=True,
        env={"APPLIANCE_CONFIG": str(config), "APPLIANCE_STATE_DIR": str(tmp_path / "state")},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "parts judged, last seq" in run.stderr

    # Twice: nothing rebuilt, nothing switched, the config untouched.
    first = tree(root)
    config.write_text(before + "# edited by the plant\n")
    stamp = (release / ".complete").stat().st_mtime_ns
    again = install(root, site_packages, "install", "--version", "1.0.0", "--models", str(models_dir))
    assert "already built" in again.stderr and "nothing to switch" in again.stderr
    assert tree(root) == first
    assert (release / ".complete").stat().st_mtime_ns == stamp
    assert config.read_text().endswith("# edited by the plant\n")
    assert not (opt / "previous").exists()


def test_upgrade_failed_upgrade_and_rollback(tmp_path: Path, models_dir: Path, site_packages: str) -> None:
    root = tmp_path / "root"
    staged_config(root)
    opt = root / "opt/appliance"
    state = root / "var/lib/appliance"
    common = ["--models", str(models_dir), "--health-cmd", RUN_RELEASE]
    install(root, site_packages, "install", "--version", "1.0.0", *common)
    assert (state / "appliance.db").exists()  # the health check ran the release against the state
    (state / "kept").write_text("plant data")

    install(root, site_packages, "upgrade", "--version", "2.0.0", *common)
    assert os.readlink(opt / "current") == "releases/2.0.0"
    assert os.readlink(opt / "previous") == "releases/1.0.0"
    assert (state / "kept").read_text() == "plant data"

    # 3.0.0 ships a corrupted model: it cannot start, so the upgrade is undone.
    broken = tmp_path / "broken-models"
    shutil.copytree(models_dir, broken)
    with (broken / "bright1/model.onnx").open("ab") as f:
        f.write(b"\0")
    failed = install(
        root,
        site_packages,
        "upgrade",
        "--version",
        "3.0.0",
        "--models",
        str(broken),
        "--health-cmd",
        RUN_RELEASE,
        check=False,
    )
    assert failed.returncode != 0
    assert "rolling back to 2.0.0" in failed.stderr
    assert os.readlink(opt / "current") == "releases/2.0.0"
    assert os.readlink(opt / "previous") == "releases/1.0.0"
    assert not (opt / "releases/3.0.0").exists()

    install(root, site_packages, "rollback")
    assert os.readlink(opt / "current") == "releases/1.0.0"
    assert os.readlink(opt / "previous") == "releases/2.0.0"
    unit = (root / "etc/systemd/system/appliance.service").read_text()
    assert "ExecStart=/opt/appliance/releases/1.0.0/venv/bin/python -m appliance run" in unit
    install(root, site_packages, "rollback")  # and forward again
    assert os.readlink(opt / "current") == "releases/2.0.0"
    assert (state / "kept").read_text() == "plant data"


def test_uninstall_keeps_config_and_state_unless_purged(
    tmp_path: Path, models_dir: Path, site_packages: str
) -> None:
    root = tmp_path / "root"
    config = staged_config(root)
    install(root, site_packages, "install", "--version", "1.0.0", "--models", str(models_dir))
    (root / "var/lib/appliance").mkdir(parents=True)
    (root / "var/lib/appliance/appliance.db").write_text("outbox")
    install(root, site_packages, "uninstall")
    assert not (root / "opt/appliance").exists()
    assert not (root / "etc/systemd/system/appliance.service").exists()
    assert not (root / "usr/local/bin/appliance").exists()
    assert config.exists() and (root / "var/lib/appliance/appliance.db").exists()
    install(root, site_packages, "uninstall", "--purge")
    assert not (root / "etc/appliance").exists()
    assert not (root / "var/lib/appliance").exists()
    assert not (root / "etc/sysusers.d/appliance.conf").exists()


def test_refuses_without_root_or_prefix() -> None:
    command = ["bash", str(INSTALL), "install"]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv not found: install Debian's util-linux package")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd="/")
    assert result.returncode != 0 and "run as root" in result.stderr


def test_rejects_unknown_options(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(INSTALL), "install", "--prefix", str(tmp_path), "--bogus"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "unknown argument: --bogus" in result.stderr
