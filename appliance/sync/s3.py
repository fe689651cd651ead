"""S3-compatible object storage through boto3 (AWS S3, MinIO, Ceph RGW...).

Immutable objects are written with a conditional put (`If-None-Match: *`) or, for stores that
ignore that header (`conditional_put = false`), a HEAD first; when the object is already there
with the same sha256 (object metadata) the put is skipped. An object under our key with other
content is overwritten only if it carries this store's id (our own earlier attempt); otherwise
it belongs to another box or an older database and `KeyConflict` is raised instead.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict
from urllib.parse import urlparse

from appliance.config import SyncConfig
from appliance.sync.targets import MAX_GET_BYTES, KeyConflict, ObjectInfo, TargetError, sha256_hex
from appliance.sync.throttle import ThrottledBody, TokenBucket
from hardware.sources.opencv import redact_url

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ListObjectsV2RequestPaginateTypeDef, PutObjectRequestTypeDef

logger = logging.getLogger(__name__)


class S3Target:
    """An S3 bucket and prefix through boto3 (AWS, MinIO, Ceph RGW...)."""

    def __init__(
        self, config: SyncConfig, store_id: str, bucket_limiter: TokenBucket, client: S3Client | None = None
    ) -> None:
        url = urlparse(config.target)
        self.bucket = url.netloc
        self.prefix = url.path.strip("/")
        if not self.bucket:
            raise ValueError(f"sync.target {config.target!r}: no bucket name")
        self.config = config
        self.store_id = store_id
        self.limiter = bucket_limiter
        self.client = client or make_s3_client(config)

    def describe(self) -> str:
        """The target without credentials."""
        where = f" at {redact_url(self.config.endpoint_url)}" if self.config.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(
        self, key: str, data: bytes, *, content_type: str, immutable: bool = True, retry: bool = False
    ) -> bool:
        """Write `data` under `key`; False when an identical immutable object was already there.

        `retry` says an earlier attempt may have landed: HEAD first rather than sending the
        whole body only to learn from a 412 that it was there.
        """
        digest = sha256_hex(data)
        if not immutable:
            self._put(key, data, digest, content_type, conditional=False)
            return True
        if retry or not self.config.conditional_put:
            existing = self._head(key)
            if existing is not None:
                if self._same_or_ours(key, existing, digest) == "same":
                    return False
                self._put(key, data, digest, content_type, conditional=False)
                return True
        try:
            self._put(key, data, digest, content_type, conditional=self.config.conditional_put)
            return True
        except _PreconditionFailed:
            pass
        existing = self._head(key)
        if existing is not None and self._same_or_ours(key, existing, digest) == "same":
            return False
        self._put(key, data, digest, content_type, conditional=False)
        return True

    def _same_or_ours(self, key: str, metadata: dict[str, str], digest: str) -> str:
        if metadata.get("sha256") == digest:
            return "same"
        if metadata.get("store-id") == self.store_id:
            logger.warning("object %s differs from an earlier attempt by this box; overwriting", key)
            return "ours"
        raise KeyConflict(
            f"s3://{self.bucket}/{self._full(key)} already holds other data "
            f"(store {metadata.get('store-id')!r}, not this box's {self.store_id!r}); "
            "is the node id used by another appliance or was the database replaced?"
        )

    def _put(self, key: str, data: bytes, digest: str, content_type: str, *, conditional: bool) -> None:
        args: PutObjectRequestTypeDef = {
            "Bucket": self.bucket,
            "Key": self._full(key),
            # botocore reads any file-like; the stubs ask for typing.IO, which io.RawIOBase is not
            "Body": ThrottledBody(data, self.limiter),  # type: ignore[typeddict-item]
            "ContentLength": len(data),
            "ContentType": content_type,
            "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode(),  # noqa: S324 - integrity, not security
            "Metadata": {"sha256": digest, "store-id": self.store_id},
        }
        if self.config.checksums == "when_supported":
            args["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(digest)).decode()
        if conditional:
            args["IfNoneMatch"] = "*"
        try:
            self.client.put_object(**args)
        except Exception as exc:
            if _error_code(exc) in {"PreconditionFailed", "412"}:
                raise _PreconditionFailed from exc
            raise _target_error("put", key, exc) from exc

    def _head(self, key: str) -> dict[str, str] | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise _target_error("head", key, exc) from exc
        return {k.lower(): v for k, v in response.get("Metadata", {}).items()}

    def get(self, key: str) -> bytes:
        """The object's bytes (small objects only: verdicts, manifests)."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            if int(response.get("ContentLength", 0)) > MAX_GET_BYTES:
                raise TargetError(f"{key}: larger than {MAX_GET_BYTES} bytes")
            return bytes(response["Body"].read())
        except TargetError:
            raise
        except Exception as exc:
            raise _target_error("get", key, exc) from exc

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Objects under `prefix` (relative keys) after `start_after`, in key order."""
        strip = len(self._full(""))
        args: ListObjectsV2RequestPaginateTypeDef = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if start_after:
            args["StartAfter"] = self._full(start_after)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(**args)
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"][strip:], item["ETag"].strip('"'), int(item["Size"]))
        except Exception as exc:
            raise _target_error("list", prefix, exc) from exc


class _PreconditionFailed(Exception):
    """The conditional put found an object already there."""


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def _target_error(what: str, key: str, exc: Exception) -> TargetError:
    code = _error_code(exc)
    detail = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
    return TargetError(f"{what} {key}: {detail}")


def make_s3_client(config: SyncConfig) -> S3Client:
    """A boto3 S3 client for the configured endpoint, addressing, checksums and credentials."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=config.region, **read_credentials(config))
    client_config = Config(
        # Unsigned payload: the body is protected by Content-MD5 (and TLS in production), and
        # botocore would otherwise read every body twice on plain http (hashing, then sending).
        s3={"addressing_style": config.addressing_style, "payload_signing_enabled": False},
        request_checksum_calculation=config.checksums,
        response_checksum_validation=config.checksums,
        connect_timeout=config.timeout_s,
        read_timeout=config.timeout_s,
        # The worker has its own backoff; one quick retry covers a dropped keep-alive socket.
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=4,
        tcp_keepalive=True,
    )
    verify: str | None = str(config.ca_bundle) if config.ca_bundle else None
    return session.client("s3", endpoint_url=config.endpoint_url, config=client_config, verify=verify)


def credentials_path(config: SyncConfig) -> Path | None:
    """credentials_file, with a relative name looked up in $CREDENTIALS_DIRECTORY (systemd)."""
    path = config.credentials_file
    if path is None or path.is_absolute():
        return path
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(directory) / path if directory else path


class Credentials(TypedDict, total=False):
    """Keyword arguments for boto3's Session; none given = the default credential chain."""

    aws_access_key_id: str
    aws_secret_access_key: str
    aws_session_token: str


def read_credentials(config: SyncConfig) -> Credentials:
    """Keys for boto3's Session from credentials_file; empty = the environment/default chain.

    The file is AWS's shared-credentials INI format (`[default]`, `aws_access_key_id`,
    `aws_secret_access_key`, optional `aws_session_token`); a file without a section header is
    read as the `default` section.
    """
    path = credentials_path(config)
    if path is None:
        return Credentials()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"sync.credentials_file {path}: cannot read: {exc.strerror or exc}") from exc
    parser = configparser.ConfigParser(interpolation=None)
    if not text.lstrip().startswith("["):
        text = "[default]\n" + text
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ValueError(f"sync.credentials_file {path}: not an INI credentials file: {exc}") from exc
    section = config.credentials_profile
    if not parser.has_section(section):
        raise ValueError(f"sync.credentials_file {path}: no [{section}] section")
    values = {k.lower(): v.strip() for k, v in parser.items(section)}
    missing = {"aws_access_key_id", "aws_secret_access_key"} - set(values)
    if missing:
        raise ValueError(f"sync.credentials_file {path}: [{section}] lacks {', '.join(sorted(missing))}")
    keys = Credentials(
        aws_access_key_id=values["aws_access_key_id"], aws_secret_access_key=values["aws_secret_access_key"]
    )
    if "aws_session_token" in values:
        keys["aws_session_token"] = values["aws_session_token"]
    return keys
