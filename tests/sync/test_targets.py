"""S3 and directory targets: idempotent puts, conflicts, listing, credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appliance.config import SyncConfig
from appliance.sync.s3 import S3Target, read_credentials
from appliance.sync.targets import FileTarget, KeyConflict, TargetError, make_target
from appliance.sync.throttle import ThrottledBody, TokenBucket


def s3(bucket: Any, store_id: str = "store-a", **config: Any) -> S3Target:
    settings = SyncConfig(target=f"s3://{bucket.name}/pre/fix", endpoint_url=bucket.endpoint, **config)
    return S3Target(settings, store_id, TokenBucket(0))


def test_s3_put_get_list_under_the_prefix(bucket: Any) -> None:
    target = s3(bucket)
    assert target.put("a/1.bin", b"one", content_type="application/octet-stream")
    assert target.put("a/2.bin", b"two", content_type="application/octet-stream")
    assert target.put("b/3.bin", b"three", content_type="application/octet-stream")
    assert bucket.list_keys() == ["pre/fix/a/1.bin", "pre/fix/a/2.bin", "pre/fix/b/3.bin"]
    assert [o.key for o in target.list("a/")] == ["a/1.bin", "a/2.bin"]
    assert [o.key for o in target.list("a/", start_after="a/1.bin")] == ["a/2.bin"]
    assert target.get("b/3.bin") == b"three"
    head = bucket.client.head_object(Bucket=bucket.name, Key="pre/fix/a/1.bin")
    assert head["Metadata"]["store-id"] == "store-a"


@pytest.mark.parametrize("conditional", [True, False], ids=["if-none-match", "head-first"])
@pytest.mark.parametrize("retry", [False, True], ids=["first-attempt", "retry"])
def test_s3_second_identical_put_is_skipped(bucket: Any, conditional: bool, retry: bool) -> None:
    target = s3(bucket, conditional_put=conditional)
    assert target.put("k", b"same bytes", content_type="text/plain") is True
    assert target.put("k", b"same bytes", content_type="text/plain", retry=retry) is False
    assert bucket.get("pre/fix/k") == b"same bytes"


def test_s3_own_object_with_other_bytes_is_replaced_foreign_one_is_a_conflict(bucket: Any) -> None:
    mine = s3(bucket, store_id="store-a")
    mine.put("k", b"first attempt", content_type="text/plain")
    assert mine.put("k", b"second attempt", content_type="text/plain") is True
    assert bucket.get("pre/fix/k") == b"second attempt"
    other = s3(bucket, store_id="store-b")
    with pytest.raises(KeyConflict, match="node id used by another appliance"):
        other.put("k", b"someone else", content_type="text/plain")
    assert bucket.get("pre/fix/k") == b"second attempt"
    bucket.client.put_object(Bucket=bucket.name, Key="pre/fix/foreign", Body=b"no metadata")
    with pytest.raises(KeyConflict):
        mine.put("foreign", b"ours", content_type="text/plain")


def test_s3_mutable_put_overwrites(bucket: Any) -> None:
    target = s3(bucket)
    target.put("case.json", b"v1", content_type="application/json", immutable=False)
    assert target.put("case.json", b"v2", content_type="application/json", immutable=False)
    assert bucket.get("pre/fix/case.json") == b"v2"


def test_s3_unreachable_endpoint_is_a_target_error(bucket: Any) -> None:
    config = SyncConfig(target=f"s3://{bucket.name}", endpoint_url="http://127.0.0.1:9", timeout_s=1)
    target = S3Target(config, "s", TokenBucket(0))
    with pytest.raises(TargetError, match="put k"):
        target.put("k", b"x", content_type="text/plain")


def test_s3_missing_bucket_is_a_target_error(moto_endpoint: str) -> None:
    config = SyncConfig(target="s3://no-such-bucket-here", endpoint_url=moto_endpoint)
    with pytest.raises(TargetError, match="NoSuchBucket"):
        S3Target(config, "s", TokenBucket(0)).put("k", b"x", content_type="text/plain")


def test_file_target_writes_atomically_and_skips_identical(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    target = make_target(SyncConfig(target=f"file://{root}"), "s", TokenBucket(0))
    assert isinstance(target, FileTarget)
    assert target.put("site/node/a.bin", b"data", content_type="x")
    assert target.put("site/node/a.bin", b"data", content_type="x") is False
    assert target.put("site/node/a.bin", b"new", content_type="x")
    assert (root / "site/node/a.bin").read_bytes() == b"new"
    assert [o.key for o in target.list("site/")] == ["site/node/a.bin"]
    assert target.get("site/node/a.bin") == b"new"
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]
    with pytest.raises(TargetError, match="escapes"):
        target.put("../outside", b"x", content_type="x")


def test_file_target_refuses_a_missing_directory(tmp_path: Path) -> None:
    target = FileTarget(SyncConfig(target=f"file://{tmp_path}/not-mounted"), TokenBucket(0))
    with pytest.raises(TargetError, match="does not exist"):
        target.put("k", b"x", content_type="x")
    assert not (tmp_path / "not-mounted").exists()


def test_credentials_file_ini_and_systemd_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s3.ini").write_text("[plant]\naws_access_key_id = AK\naws_secret_access_key = SK\n")
    config = SyncConfig(target="s3://bkt", credentials_file=tmp_path / "s3.ini", credentials_profile="plant")
    assert read_credentials(config) == {"aws_access_key_id": "AK", "aws_secret_access_key": "SK"}
    (tmp_path / "sync-s3").write_text("aws_access_key_id=AK2\naws_secret_access_key=SK2\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = SyncConfig(target="s3://bkt", credentials_file=Path("sync-s3"))
    assert read_credentials(config)["aws_access_key_id"] == "AK2"
    assert read_credentials(SyncConfig(target="s3://bkt")) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read"),
        ("[default]\naws_access_key_id = A\n", "lacks aws_secret_access_key"),
        ("[other]\naws_access_key_id = A\naws_secret_access_key = B\n", r"no \[default\] section"),
        ("[default\nx", "not an INI credentials file"),
    ],
    ids=["missing", "incomplete", "no-section", "garbage"],
)
def test_bad_credentials_file_is_a_clear_error(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "creds"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_credentials(SyncConfig(target="s3://bkt", credentials_file=path))


def test_throttled_body_is_seekable_and_reads_in_chunks() -> None:
    bucket = TokenBucket(0)
    body = ThrottledBody(b"x" * 1_000_000, bucket)
    first = body.read()
    assert len(first) == bucket.chunk
    body.seek(0)
    assert body.tell() == 0
    total = b"".join(iter(lambda: body.read(100_000), b""))
    assert len(total) == 1_000_000
    assert bucket.bytes_sent == 1_000_000 + len(first)
