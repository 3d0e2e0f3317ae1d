"""The JPEG photos inside Enlightenment's Eet files (``.edj`` wallpapers), for the photo kit.

An Eet file (version 2, magic ``0x1ee70f42``) is a big-endian header ``magic, entries,
dictionary entries``, then one directory row per entry of six int32: data offset, stored size,
uncompressed size, name offset, name size (with its NUL) and flags (bit 0 compressed, bit 1
ciphered, bit 2 alias, bits 3-10 the compression: 1-9 zlib, 10-11 LZ4). Edje keeps its images as
entries ``edje/images/N``; a lossy image is a plain JPEG stream, or, with alpha, a header
``0xbeeff00d`` (little-endian) and two sizes before the colour JPEG and the alpha JPEG. Lossless
(ARGB) and texture images are not photos and are left out. Only what the kit needs is read:
uncompressed or zlib entries.
"""

from __future__ import annotations

import struct
import zlib

MAGIC = 0x1EE70F42
LOSSY_WITH_ALPHA = 0xBEEFF00D
JPEG_START = b"\xff\xd8\xff"


class EetError(Exception):
    """A damaged or unsupported Eet file."""


def eet_images(data: bytes) -> dict[str, bytes]:
    """``edje/images/N.jpg`` -> JPEG bytes, for every lossy image entry of the Eet file ``data``."""
    images = {}
    for name, payload in eet_entries(data):
        if not name.startswith("edje/images/"):
            continue
        if payload.startswith(JPEG_START):
            images[f"{name}.jpg"] = payload
        elif len(payload) >= 12 and struct.unpack_from("<I", payload)[0] == LOSSY_WITH_ALPHA:
            (colour_size,) = struct.unpack_from("<I", payload, 4)
            images[f"{name}.jpg"] = payload[12 : 12 + colour_size]
    return images


def eet_entries(data: bytes):
    """Yields (name, payload) for every plain entry (aliases and ciphered entries are skipped)."""
    try:
        magic, num_entries, _ = struct.unpack_from(">Iii", data, 0)
    except struct.error:
        raise EetError("too short for an Eet header") from None
    if magic != MAGIC:
        raise EetError(f"magic 0x{magic:08x} is not Eet version 2's 0x{MAGIC:08x}")
    if not 0 <= num_entries <= (len(data) - 12) // 24:
        raise EetError(f"{num_entries} directory entries do not fit the file")
    for row in range(num_entries):
        offset, size, full_size, name_offset, name_size, flags = struct.unpack_from(">6i", data, 12 + 24 * row)
        if min(offset, size, name_offset, name_size) < 0 or max(offset + size, name_offset + name_size) > len(data):
            raise EetError(f"directory entry {row} points outside the file")
        name = data[name_offset : name_offset + name_size].rstrip(b"\0").decode("utf-8", "replace")
        if flags & 0b110:  # ciphered or alias
            continue
        payload = data[offset : offset + size]
        if flags & 1:
            compression = (flags >> 3) & 0xFF
            if not 1 <= compression <= 9:
                continue  # LZ4-compressed: never a photo in the packages the kit uses
            try:
                payload = zlib.decompress(payload)
            except zlib.error as error:
                raise EetError(f"entry '{name}' does not decompress ({error})") from None
            if len(payload) != full_size:
                raise EetError(f"entry '{name}' decompresses to {len(payload)} bytes, not {full_size}")
        yield name, payload
