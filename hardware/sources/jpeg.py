"""A JPEG file's own bytes, kept instead of encoding its decoded pixels again.

Re-encoding costs a few hundred microseconds a frame and loses detail a second time (what the
cloud re-checks and trains on). Kept as they came, less the metadata that can name a place,
a device or a person (EXIF, XMP, IPTC, comments): only the segments the decoder needs and the
JFIF header, the Adobe colour-transform marker and an ICC profile stay.
"""

from __future__ import annotations

_SOI = b"\xff\xd8"
_SOS = 0xDA
_COM = 0xFE
_KEPT_APP = {0xE0, 0xE2, 0xEE}  # APP0 JFIF, APP2 ICC profile, APP14 Adobe (colour transform)
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length


def without_metadata(data: bytes) -> bytes | None:
    """The JPEG without the APPn (other than JFIF, ICC, Adobe) and COM segments of its header.

    None when the header is not a well-formed JPEG header (the caller then encodes the pixels).
    Everything from the first scan (SOS) on is copied untouched, so the pixels are exactly the
    original's; EXIF, XMP and IPTC live in the header.
    """
    if not data.startswith(_SOI):
        return None
    kept = [_SOI]
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in _STANDALONE:
            kept.append(data[at : at + 2])
            at += 2
            continue
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if end > len(data) or end < at + 4:
            return None
        if marker == _SOS:
            kept.append(data[at:])  # header, then the entropy-coded data up to EOI
            return b"".join(kept)
        metadata = (0xE1 <= marker <= 0xEF and marker not in _KEPT_APP) or marker == _COM
        if not metadata:
            kept.append(data[at:end])
        at = end
    return None
