"""Files inside the archives that packages store their photos in, for ``make_photo_kit.py``.

A kit row names a photo inside an archive as ``ARCHIVE!MEMBER``. ``read_member`` opens the
archive by its kind: Qt resource archives (``.rcc``, GCompris), Enlightenment's Eet files
(``.edj``, wallpapers), zip files (``.zip``, Python wheels) and tar files (sdists, npm tarballs).
Every problem with an archive is an ``ArchiveError`` naming the file.
"""

from __future__ import annotations

import functools
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

Members = dict[str, Callable[[], bytes]]  # member path -> reads its bytes


class ArchiveError(Exception):
    """A damaged or unsupported archive, or a member it does not hold, in one sentence."""


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` inside ``archive``; ``ArchiveError`` if it is not there."""
    members = archive_members(archive)
    if member not in members:
        raise ArchiveError(f"'{archive}' holds no '{member}'")
    return members[member]()


def has_member(archive: Path, member: str) -> bool:
    return member in archive_members(archive)


@functools.cache
def archive_members(archive: Path) -> Members:
    """Member path -> a function returning its bytes, for every file in ``archive``."""
    name = archive.name.lower()
    if name.endswith(".rcc"):
        files = qt_resources(archive)
        return {path: functools.partial(files.__getitem__, path) for path in files}
    if name.endswith(".edj") or name.endswith(".eet"):
        from cinn.programs.eet import EetError, eet_images

        try:
            images = eet_images(archive.read_bytes())
        except EetError as error:
            raise ArchiveError(f"'{archive}' is a damaged or unsupported Eet file ({error})") from None
        return {path: functools.partial(images.__getitem__, path) for path in images}
    if name.endswith((".zip", ".whl")):
        return zip_members(archive)
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return tar_members(archive)
    raise ArchiveError(f"'{archive}' is not an archive this kit can read (.rcc, .edj, .zip, .whl, .tar[.gz])")


def zip_members(archive: Path) -> Members:
    try:
        with zipfile.ZipFile(archive) as handle:
            names = [info.filename for info in handle.infolist() if not info.is_dir()]
    except (zipfile.BadZipFile, OSError) as error:
        raise ArchiveError(f"'{archive}' is a damaged zip file ({error})") from None

    def read(name: str) -> bytes:
        with zipfile.ZipFile(archive) as handle:
            return handle.read(name)

    return {name: functools.partial(read, name) for name in names}


def tar_members(archive: Path) -> Members:
    try:
        with tarfile.open(archive) as handle:
            names = [info.name for info in handle.getmembers() if info.isfile()]
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArchiveError(f"'{archive}' is a damaged tar file ({error})") from None

    def read(name: str) -> bytes:
        with tarfile.open(archive) as handle:
            return handle.extractfile(name).read()

    return {name: functools.partial(read, name) for name in names}


def qt_resources(archive: Path) -> dict[str, bytes]:
    """Every file in a compiled Qt resource archive (``.rcc``), by its path inside the archive.

    The format (Qt's ``rcc --binary``, versions 1-3): a header ``qres``, version, and offsets of
    the tree, the data and the names; the tree is a flat array of nodes (name offset, flags, then
    children for a directory or a data offset for a file); a file's data is a big-endian length and
    the bytes, zlib-compressed behind a 4-byte size when flag 1 is set.
    """
    data = archive.read_bytes()
    if len(data) < 20 or data[:4] != b"qres":
        raise ArchiveError(f"'{archive}' is not a Qt resource archive")
    try:
        return parse_qt_resources(data, archive)
    except (struct.error, zlib.error, UnicodeDecodeError) as error:
        raise ArchiveError(f"'{archive}' is a damaged Qt resource archive ({error})") from None


def parse_qt_resources(data: bytes, archive: Path) -> dict[str, bytes]:
    """The files of the archive ``data`` (read from ``archive``); see ``qt_resources``."""
    version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
    node_size = 22 if version >= 2 else 14

    def name_at(offset: int) -> str:
        (length,) = struct.unpack_from(">H", data, names + offset)
        start = names + offset + 6  # length, then a 4-byte hash, then UTF-16 code units
        return data[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    pending = [(0, "")]  # (node index, path of its parent)
    while pending:
        index, parent = pending.pop()
        node = tree + index * node_size
        name_offset, flags = struct.unpack_from(">IH", data, node)
        path = f"{parent}/{name_at(name_offset)}".lstrip("/") if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack_from(">II", data, node + 6)
            pending.extend((child, path) for child in range(first, first + count))
            continue
        (offset,) = struct.unpack_from(">I", data, node + 10)
        (size,) = struct.unpack_from(">I", data, payload + offset)
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 4:
            raise ArchiveError(f"'{archive}': '{path}' is zstd-compressed, which this reader does not support")
        files[path] = zlib.decompress(blob[4:]) if flags & 1 else blob
    return files
