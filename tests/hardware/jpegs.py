"""JPEG files with the metadata a camera or a phone writes, for the tests of keeping originals."""

from __future__ import annotations

import cv2
import numpy as np

SECRET = b"GPS 48.1371N 11.5754E serial SN-4711 operator J. Doe"


def segment(marker: int, payload: bytes) -> bytes:
    """One JPEG marker segment (its length counts itself)."""
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def encode(image: np.ndarray, *, progressive: bool = False) -> bytes:
    """`image` as a plain JPEG from OpenCV (SOI, then a JFIF header without thumbnail)."""
    ok, encoded = cv2.imencode(
        ".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    )
    assert ok
    data = encoded.tobytes()
    assert data[2:4] == b"\xff\xe0"
    return data


def after_jfif(data: bytes, extra: bytes) -> bytes:
    """`extra` segments inserted right after the JFIF header."""
    jfif_end = 4 + int.from_bytes(data[4:6], "big")
    return data[:jfif_end] + extra + data[jfif_end:]


def jpeg_with_metadata(image: np.ndarray, *, adobe: bool = False) -> bytes:
    """`image` as JPEG with EXIF, XMP, IPTC and comment segments after the JFIF header."""
    extra = (
        segment(0xE1, b"Exif\x00\x00" + SECRET)
        + segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>" + SECRET + b"</x:xmpmeta>")
        + segment(0xED, b"Photoshop 3.0\x00" + SECRET)
        + segment(0xFE, SECRET)
        + (segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01") if adobe else b"")
    )
    return after_jfif(encode(image), extra)
