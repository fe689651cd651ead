"""Keeping a JPEG file as it came, less its metadata: the same pixels, no EXIF, XMP or comments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from hardware.sources.folder import FolderSource
from hardware.sources.jpeg import without_metadata
from tests.hardware.jpegs import SECRET, after_jfif, encode, jpeg_with_metadata, segment


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


@pytest.mark.parametrize("channels", [1, 3])
def test_metadata_goes_and_the_pixels_stay(channels: int) -> None:
    rng = np.random.default_rng(channels)
    shape = (120, 160) if channels == 1 else (120, 160, 3)
    original = jpeg_with_metadata(rng.integers(0, 255, shape, dtype=np.uint8), adobe=channels == 3)
    assert SECRET in original
    kept = without_metadata(original)
    assert kept is not None
    assert SECRET not in kept
    assert np.array_equal(decode(kept), decode(original))
    assert kept[2:4] == b"\xff\xe0" and b"JFIF" in kept[:20]  # the JFIF header stays
    assert (b"Adobe" in kept) == (channels == 3)  # so does the colour-transform marker
    assert kept.endswith(b"\xff\xd9")


def test_a_file_without_metadata_is_kept_byte_for_byte() -> None:
    ok, encoded = cv2.imencode(".jpg", np.full((64, 64), 128, np.uint8))
    assert ok
    assert without_metadata(encoded.tobytes()) == encoded.tobytes()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,  # not a JPEG
        b"\xff\xd8" + segment(0xE1, b"Exif\x00\x00")[:3],  # cut inside a segment header
        b"\xff\xd8\xff\xe1\xff\xff" + b"\x00" * 16,  # a length past the end
        b"\xff\xd8\x00\x01\x02\x03\x04\x05",  # no marker where one must be
        b"\xff\xd8" + segment(0xE0, b"JFIF\x00"),  # no scan at all
    ],
)
def test_headers_it_cannot_read_are_left_to_the_encoder(data: bytes) -> None:
    assert without_metadata(data) is None


def test_folder_source_hands_over_jpeg_files_as_they_came(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    original = jpeg_with_metadata(rng.integers(0, 255, (48, 64), dtype=np.uint8))
    (tmp_path / "a.jpg").write_bytes(original)
    cv2.imwrite(str(tmp_path / "b.png"), rng.integers(0, 255, (48, 64), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "c.png"), rng.integers(0, 255, (48, 64, 4), dtype=np.uint8))
    source = FolderSource(tmp_path, loop=False)
    source.open()
    seen = {}
    for name in ("a.jpg", "b.png", "c.png"):
        source.grab()
        image = source.retrieve()
        seen[name] = source.encoded
        if source.encoded is not None:
            assert np.array_equal(decode(source.encoded), image)
    assert seen["a.jpg"] == original  # the keeper removes the metadata when it keeps the frame
    assert seen["b.png"] is None and seen["c.png"] is None  # encoded on the box when kept


def test_dataset_photos_keep_their_pixels(datasets: Path) -> None:
    folder = datasets / "magnetic-tile"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (set APPLIANCE_DATASETS)")
    photos = sorted(folder.rglob("*.jpg"))
    assert photos
    for path in photos[:: max(1, len(photos) // 40)]:
        data = path.read_bytes()
        kept = without_metadata(data)
        assert kept is not None, path
        assert np.array_equal(decode(kept), decode(data)), path


def _image(channels: int = 1, seed: int = 0) -> np.ndarray:
    shape = (96, 128) if channels == 1 else (96, 128, 3)
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _kept_clean(original: bytes) -> bytes:
    kept = without_metadata(original)
    assert kept is not None
    assert SECRET not in kept
    assert np.array_equal(decode(kept), decode(original))
    return kept


def test_a_trailer_after_the_image_goes() -> None:
    # Multi-picture files append whole JPEGs (previews, with their own EXIF) after the end.
    first = encode(_image())
    kept = _kept_clean(first + jpeg_with_metadata(_image(seed=1)) + SECRET)
    assert kept == first


def test_segments_between_the_scans_of_a_progressive_jpeg_go() -> None:
    data = encode(_image(3), progressive=True)
    second_scan = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
    tucked = data[:second_scan] + segment(0xFE, SECRET) + segment(0xE1, b"Exif\x00\x00" + SECRET)
    kept = _kept_clean(tucked + data[second_scan:])
    assert kept == data


def test_thumbnails_and_unknown_payloads_of_kept_markers_go() -> None:
    data = encode(_image())
    jfif = data[6:20]  # the JFIF payload without thumbnail: "JFIF\0", version, units, densities, 0, 0
    width = len(SECRET) // 3 + 1
    thumbnail = segment(0xE0, jfif[:12] + bytes([width, 1]) + SECRET.ljust(3 * width, b"."))
    extra = (
        segment(0xE0, b"JFXX\x00\x10" + SECRET)  # JFIF extension thumbnail
        + segment(0xE2, b"FPXR\x00" + SECRET)  # FlashPix, not an ICC profile
        + segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + b"profile")
        + segment(0xEE, b"NotAdobe" + SECRET)
    )
    kept = _kept_clean(data[:2] + thumbnail + extra + data[20:])
    assert b"ICC_PROFILE\x00\x01\x01profile" in kept  # colour management stays
    assert kept.count(b"JFIF\x00") == 1 and kept[2:20] == data[2:20]  # header, thumbnail 0x0


@pytest.mark.parametrize(
    ("what", "edit"),
    [
        ("a DNL segment (could carry anything)", lambda d: after_jfif(d, segment(0xDC, SECRET))),
        ("arithmetic coding", lambda d: d.replace(b"\xff\xc0", b"\xff\xc9", 1)),
        ("four components (CMYK)", lambda d: _sof_components(d, 4)),
    ],
)
def test_what_the_allowlist_does_not_know_is_encoded_instead(what: str, edit: Any) -> None:
    assert without_metadata(edit(encode(_image()))) is None, what


def _sof_components(data: bytes, count: int) -> bytes:
    sof = data.index(b"\xff\xc0")
    return data[: sof + 9] + bytes([count]) + data[sof + 10 :]


def test_fill_bytes_before_markers_are_read_through() -> None:
    data = encode(_image(3))
    padded = data[:2] + b"\xff\xff" + data[2:]  # fill before the JFIF header
    sof = padded.index(b"\xff\xc0")
    padded = padded[:sof] + b"\xff" + padded[sof:]  # and before the frame header
    kept = _kept_clean(padded)
    assert kept == data  # the JFIF header recognised and kept, the frame accepted
