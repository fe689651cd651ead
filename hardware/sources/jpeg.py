"""A JPEG file's own bytes, kept instead of encoding its decoded pixels again.

Re-encoding costs a few hundred microseconds a frame and loses detail a second time (what the
cloud re-checks and trains on). The file is kept rebuilt from an allowlist of what a baseline
or progressive 8-bit JPEG needs to decode (tables, frame and scan headers, the scans) plus the
JFIF header without its thumbnail, an ICC profile and the Adobe colour-transform marker.
Anything else goes: EXIF, XMP, IPTC, comments, thumbnails and previews, trailers after the end
of the image (multi-picture files append whole JPEGs there, with their own EXIF). A file with
anything the allowlist does not know is not kept as is: the caller encodes its pixels.
"""

from __future__ import annotations

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman: 8-bit, what libjpeg writes
_TABLES = {0xC4, 0xDB, 0xDD}  # DHT, DQT, DRI
_RST = range(0xD0, 0xD8)
_APP0, _APP2, _APP14 = 0xE0, 0xE2, 0xEE
_JFIF_HEADER = 14  # "JFIF\0", version, units, densities, thumbnail size (then the thumbnail)


def without_metadata(data: bytes) -> bytes | None:
    """The JPEG rebuilt from the segments needed to decode it (see the module docstring).

    None when it holds a segment outside the allowlist or is not a well-formed JPEG (the caller
    then encodes the pixels). The scans are copied untouched, so the pixels are exactly the
    original's.
    """
    if data[:2] != bytes((0xFF, _SOI)):
        return None
    kept = [data[:2]]
    at = 2
    while True:
        segment = _segment(data, at)
        if segment is None:
            return None
        marker, at, end = segment  # `at` past any fill bytes: the marker's own 0xFF
        if marker == _EOI:
            kept.append(data[at:end])
            return b"".join(kept)  # a trailer after the end of the image is dropped
        if marker == _SOS:
            scan_end = _scan_end(data, end)
            if scan_end is None:
                return None
            kept.append(data[at:scan_end])
            end = scan_end
        elif marker in _TABLES:
            kept.append(data[at:end])
        elif marker in _SOF:
            if not _plain_frame(data[at + 4 : end]):
                return None
            kept.append(data[at:end])
        elif marker == _APP0:
            payload = data[at + 4 : end]
            if payload.startswith(b"JFIF\x00"):
                if len(payload) < _JFIF_HEADER:
                    return None  # the decoder reads it (colour space): not dropped, not guessed at
                header = payload[: _JFIF_HEADER - 2] + b"\x00\x00"  # no thumbnail
                kept.append(bytes((0xFF, _APP0)) + (len(header) + 2).to_bytes(2, "big") + header)
        elif marker == _APP2:
            if data[at + 4 : at + 16] == b"ICC_PROFILE\x00":
                kept.append(data[at:end])
        elif marker == _APP14:
            if data[at + 4 : at + 9] == b"Adobe":
                kept.append(data[at:end])
        elif not (0xE1 <= marker <= 0xEF or marker == 0xFE):  # other APPn and COM: metadata
            return None  # arithmetic coding, lossless, DNL, JPEG extensions...: not kept as is
        at = end


def _segment(data: bytes, at: int) -> tuple[int, int, int] | None:
    """(marker, start, end) of the marker segment at `at`, `start` after any fill bytes; None if
    malformed."""
    if at >= len(data) or data[at] != 0xFF:
        return None
    while at + 1 < len(data) and data[at + 1] == 0xFF:
        at += 1  # fill bytes before a marker
    if at + 1 >= len(data):
        return None
    marker = data[at + 1]
    if marker == _EOI:
        return marker, at, at + 2
    if marker == _SOI or marker in _RST or marker == 0x00 or at + 4 > len(data):
        return None
    end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    if end < at + 4 or end > len(data):
        return None
    return marker, at, end


def _scan_end(data: bytes, at: int) -> int | None:
    """Where the entropy-coded data starting at `at` ends: at the next marker that is not a
    stuffed zero or a restart marker (None if the file ends first). A find() per 0xFF byte:
    seven times faster than a regular expression here (24 vs 176 us for a 35 KB photo)."""
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= len(data):
            return None
        following = data[at + 1]
        if following == 0x00 or following in _RST:
            at += 2
        elif following == 0xFF:
            at += 1  # fill byte
        else:
            return at


def _plain_frame(header: bytes) -> bool:
    """An 8-bit frame of one (grey) or three (colour) components, as the pipeline decodes it."""
    return len(header) >= 6 and header[0] == 8 and header[5] in (1, 3)
