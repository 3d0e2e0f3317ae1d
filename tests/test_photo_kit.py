"""The photo-kit list and ``pipelines/make_photo_kit.py`` on a fake extracted package tree (offline)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from PIL import Image

from pipelines.make_photo_kit import DEFAULT_LIST, main, read_kit_list


def test_the_shipped_kit_list_is_sound():
    entries = read_kit_list(DEFAULT_LIST)
    splits = collections.Counter(entry.split for entry in entries)
    assert len(entries) >= 40 and splits["val"] >= 8
    assert 0.15 <= splits["val"] / len(entries) <= 0.25
    val_sources = {entry.source for entry in entries if entry.split == "val"}
    assert len(val_sources) >= 4  # validation spans wallpapers, OpenCV samples and scikit-image


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
    bad = write_list(tmp_path / "bad.txt", [("skimage", "chelsea", "test")])
    with pytest.raises(SystemExit, match=r"bad.txt:2: expected"):
        main(["--out", str(tmp_path / "kit"), "--list", str(bad)])
    clash = write_list(tmp_path / "clash.txt", [("skimage", "chelsea", "train"), ("skimage", "chelsea", "val")])
    with pytest.raises(SystemExit, match="skimage__chelsea.png"):
        main(["--out", str(tmp_path / "kit"), "--list", str(clash)])
