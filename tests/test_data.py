"""Photo loading of every odd kind, the colorization dataset, listing and splitting."""

from __future__ import annotations

import platform
import random
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import skimage.color
import torch
from PIL import Image

import cinn.data
from cinn.data import (
    ColorizationDataset,
    DatasetConfig,
    PhotoPairs,
    collate_skipping,
    split_train_val,
    write_split,
)
from cinn.images import ImageLoadError, list_images, load_rgb
from cinn.pixels import colourfulness, is_grayscale_photo


def colourful_array(width: int = 48, height: int = 32) -> np.ndarray:
    """(H, W, 3) uint8: red ramps left to right, green top to bottom, blue constant."""
    red = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    green = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    blue = np.full((height, width), 90.0)
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def loaded_array(path: Path, **kwargs) -> np.ndarray:
    image = load_rgb(path, **kwargs)
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int32)


# ---------------------------------------------------------------- load_rgb


@pytest.mark.parametrize(
    ("suffix", "save_kwargs", "tolerance"),
    [
        (".jpg", {"quality": 95}, 12),
        (".png", {}, 0),
        (".webp", {"lossless": True}, 0),
        (".tif", {}, 0),
        (".bmp", {}, 0),
    ],
)
def test_load_rgb_reads_common_formats(tmp_path, suffix, save_kwargs, tolerance):
    pixels = colourful_array()
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(pixels).save(path, **save_kwargs)
    loaded = loaded_array(path)
    assert loaded.shape == (32, 48, 3)
    assert np.abs(loaded - pixels).mean() <= tolerance / 3
    assert np.abs(loaded - pixels).max() <= max(tolerance * 4, 0)


def test_grey_8bit_becomes_equal_channels(tmp_path):
    grey = np.arange(48 * 32, dtype=np.uint32).reshape(32, 48) % 256
    Image.fromarray(grey.astype(np.uint8), mode="L").save(tmp_path / "grey.png")
    loaded = loaded_array(tmp_path / "grey.png")
    np.testing.assert_array_equal(loaded, np.repeat(grey[..., None], 3, axis=-1))


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("grey16.png", np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16), [0, 64, 128, 255]),
        ("grey32.tif", np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.int32), [0, 64, 128, 255]),
        ("float.tif", np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32), [0, 64, 128, 255]),
        # Signed data has no customary range: its own, never clipped at 0 (that made it black).
        ("signed.tif", np.array([[-1.0, -0.5, 0.0, 1.0]], dtype=np.float32), [0, 64, 128, 255]),
        ("negative.tif", np.array([[-4.0, -3.0, -2.0, -1.0]], dtype=np.float32), [0, 85, 170, 255]),
        ("signed32.tif", np.array([[-1000, 0, 1000, 3000]], dtype=np.int32), [0, 64, 128, 255]),
    ],
)
def test_high_bit_depth_grey_is_rescaled_not_clipped(tmp_path, name, values, expected):
    Image.fromarray(np.repeat(values, 3, axis=0)).save(tmp_path / name)
    loaded = loaded_array(tmp_path / name)
    np.testing.assert_allclose(loaded[0, :, 0], expected, atol=1)
    assert (loaded[..., 0] == loaded[..., 2]).all()


def test_a_float_photo_with_nan_is_refused_not_black(tmp_path):
    Image.fromarray(np.array([[0.0, np.nan, 0.5, 1.0]] * 3, dtype=np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(ImageLoadError, match=r"nan.tif': 3 of its pixels are NaN or infinite"):
        load_rgb(tmp_path / "nan.tif")


def test_16bit_grey_lightness_matches_skimage(tmp_path):
    mid_grey = np.full((8, 8), 257 * 100, dtype=np.uint16)
    Image.fromarray(mid_grey).save(tmp_path / "grey16.png")
    dataset = ColorizationDataset(
        [tmp_path / "grey16.png"], train=False, config=DatasetConfig(8, 8, min_colourfulness=0)
    )
    expected_lightness = skimage.color.rgb2lab(np.full((1, 1, 3), 100 / 255))[0, 0, 0]
    assert expected_lightness == pytest.approx(42.0, abs=0.5)  # a mid grey, not white
    torch.testing.assert_close(
        dataset[0]["lightness"], torch.full((1, 8, 8), expected_lightness / 50 - 1), atol=2e-3, rtol=0
    )


def test_palette_transparency_becomes_white(tmp_path):
    palette_image = Image.new("P", (4, 2), 0)
    palette_image.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    palette_image.paste(1, (2, 0, 4, 2))
    palette_image.save(tmp_path / "palette.png", transparency=0)
    loaded = loaded_array(tmp_path / "palette.png")
    assert loaded[0, 0].tolist() == [255, 255, 255]
    assert loaded[0, 3].tolist() == [200, 30, 40]


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 128], [0, 0, 255, 0]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "alpha.png")
    loaded = loaded_array(tmp_path / "alpha.png")
    assert loaded[0, 0].tolist() == [255, 0, 0]
    np.testing.assert_allclose(loaded[0, 1], [255, 127, 127], atol=1)
    assert loaded[0, 2].tolist() == [255, 255, 255]


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_is_converted(tmp_path, suffix):
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(tmp_path / f"cmyk{suffix}")
    np.testing.assert_allclose(loaded_array(tmp_path / f"cmyk{suffix}")[8, 8], [0, 255, 255], atol=4)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels[:8, :8] = [255, 0, 0]  # red block in the stored top-left corner
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise for display
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    loaded = loaded_array(tmp_path / "rotated.jpg")
    assert loaded.shape == (48, 32, 3)
    assert loaded[2, -3, 0] > 200 and loaded[2, 2, 0] < 50  # now top-right


def test_reduced_decoding_keeps_the_short_side_large_enough(tmp_path):
    Image.fromarray(colourful_array(800, 600)).save(tmp_path / "large.jpg")
    assert load_rgb(tmp_path / "large.jpg", min_side=64).size == (100, 75)
    assert load_rgb(tmp_path / "large.jpg", min_side=200).size == (400, 300)
    assert load_rgb(tmp_path / "large.jpg").size == (800, 600)


def test_unreadable_files_raise_one_clear_error(tmp_path):
    Image.fromarray(colourful_array(64, 64)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.png").write_text("not an image")
    for name in ("truncated.jpg", "notes.png", "missing.jpg"):
        with pytest.raises(ImageLoadError) as caught:
            load_rgb(tmp_path / name)
        assert caught.value.path == str(tmp_path / name)
        assert str(caught.value).startswith(f"Cannot read image '{tmp_path / name}': ")
        assert str(caught.value).count("\n") == 0 and str(caught.value).endswith(".")


# ---------------------------------------------------------------- colourfulness


def test_colourfulness_known_values():
    grey = torch.full((3, 4, 4), 0.5)
    red = torch.zeros(3, 4, 4)
    red[0] = 1.0
    halves = torch.zeros(3, 2, 2)
    halves[0, 0] = 1.0  # top row red, bottom row black: rg in {255, 0}, yb in {127.5, 0}
    expected_halves = np.hypot(127.5, 63.75) + 0.3 * np.hypot(127.5, 63.75)
    values = colourfulness(torch.stack([grey, red, halves.repeat(1, 2, 2)]))
    torch.testing.assert_close(
        values, torch.tensor([0.0, 0.3 * np.hypot(255, 127.5), expected_halves], dtype=torch.float32)
    )
    assert is_grayscale_photo(grey) and not is_grayscale_photo(red)


# ---------------------------------------------------------------- dataset


def write_photo(path: Path, pixels: np.ndarray | None = None) -> Path:
    Image.fromarray(colourful_array(96, 64) if pixels is None else pixels).save(path, quality=95)
    return path


def test_items_have_the_promised_shapes_dtypes_and_ranges(tmp_path):
    paths = [write_photo(tmp_path / "a.png"), write_photo(tmp_path / "b.jpg")]
    for train in (True, False):
        dataset = ColorizationDataset(paths, train=train, config=DatasetConfig(lightness_size=24, ab_size=8))
        item = dataset[1]
        assert item["lightness"].shape == (1, 24, 24) and item["lightness"].dtype == torch.float32
        assert item["ab"].shape == (2, 8, 8) and item["ab"].dtype == torch.float32
        assert item["path"] == str(paths[1])
        assert -1.0 <= item["lightness"].min() < item["lightness"].max() <= 1.0
        assert item["ab"].abs().max() < 1.5 and item["ab"].std() > 0.05


def test_validation_takes_the_centre_and_matches_skimage_lab(tmp_path):
    pixels = np.zeros((64, 128, 3), dtype=np.uint8)
    pixels[:, :32], pixels[:, 32:96], pixels[:, 96:] = [220, 20, 20], [40, 160, 60], [20, 20, 220]
    path = write_photo(tmp_path / "bands.png", pixels)
    item = ColorizationDataset([path], train=False, config=DatasetConfig(lightness_size=16, ab_size=8))[0]
    lab = skimage.color.rgb2lab(np.array([[[40, 160, 60]]], dtype=np.uint8))[0, 0]
    # The central square is all green; the borders may blend with the red and blue bands.
    torch.testing.assert_close(
        item["lightness"][:, 4:12, 4:12], torch.full((1, 8, 8), lab[0] / 50 - 1), atol=3e-3, rtol=0
    )
    expected_ab = torch.tensor(lab[1:] / 110, dtype=torch.float32)[:, None, None].expand(2, 4, 4)
    torch.testing.assert_close(item["ab"][:, 2:6, 2:6], expected_ab, atol=3e-3, rtol=0)


def test_training_randomness_follows_torch_seed(tmp_path):
    dataset = ColorizationDataset([write_photo(tmp_path / "a.png")], config=DatasetConfig(lightness_size=16, ab_size=8))
    torch.manual_seed(3)
    first = dataset[0]
    torch.manual_seed(3)
    again = dataset[0]
    other = dataset[0]
    torch.testing.assert_close(first["ab"], again["ab"])
    torch.testing.assert_close(first["lightness"], again["lightness"])
    assert not torch.equal(first["ab"], other["ab"])


def test_dataloader_workers_are_reproducible_and_share_skip_verdicts(tmp_path):
    paths = [write_photo(tmp_path / f"{index}.png") for index in range(4)]
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    dataset = ColorizationDataset([*paths, tmp_path / "bad.jpg"], config=DatasetConfig(lightness_size=16, ab_size=8))

    def one_epoch(seed: int) -> dict:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=5,
            num_workers=2,
            collate_fn=collate_skipping,
            generator=torch.Generator().manual_seed(seed),
        )
        return next(iter(loader))

    first, again = one_epoch(7), one_epoch(7)
    torch.testing.assert_close(first["ab"], again["ab"])
    assert first["num_skipped"] == 1 and first["ab"].shape == (4, 2, 8, 8)
    assert dataset._status.tolist() == [1, 1, 1, 1, 2]  # the workers' verdicts reached the parent


def test_bad_and_grey_photos_are_skipped_with_one_warning_each(tmp_path):
    good = write_photo(tmp_path / "good.jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:300])
    grey_pixels = np.repeat(colourful_array(96, 64)[..., :1], 3, axis=-1)
    grey = write_photo(tmp_path / "grey.jpg", grey_pixels)
    dataset = ColorizationDataset([good, truncated, grey], config=DatasetConfig(lightness_size=16, ab_size=8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [dataset[index] for index in (0, 1, 2, 1, 2)]
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 2
    assert str(truncated) in messages[0] and str(grey) in messages[1] and "colourfulness" in messages[1]
    batch = collate_skipping(items)
    assert batch["num_skipped"] == 4 and batch["path"] == [str(good)] and batch["lightness"].shape == (1, 1, 16, 16)


def test_collate_of_an_all_skipped_batch():
    batch = collate_skipping([None, None])
    assert batch["num_skipped"] == 2 and batch["path"] == []
    assert batch["lightness"].shape[0] == 0 and batch["ab"].shape[:2] == (0, 2)


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="crop_scale"):
        DatasetConfig(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="ab_noise"):
        DatasetConfig(ab_noise=-1)
    assert DatasetConfig(crop_scale=[0.3, 1]).crop_scale == (0.3, 1.0)


# ---------------------------------------------------------------- listing and splitting


def test_list_images_walks_a_tree_and_reads_list_files(tmp_path):
    for relative in ("train/n01/a.JPEG", "train/n02/b.jpg", "train2017/c.Png", "train/n01/readme.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    found = list_images(tmp_path)
    assert found == sorted(str(tmp_path / name) for name in ("train/n01/a.JPEG", "train/n02/b.jpg", "train2017/c.Png"))
    (tmp_path / "list.txt").write_text(f"# a comment\ntrain/n02/b.jpg\n\n  {tmp_path / 'x.jpg'}  \ntrain/n01/a.JPEG\n")
    assert list_images(tmp_path / "list.txt") == [
        str(tmp_path / "train/n01/a.JPEG"),
        str(tmp_path / "train/n02/b.jpg"),
        str(tmp_path / "x.jpg"),
    ]
    assert list_images(tmp_path / "list.txt", root="/data")[0] == "/data/train/n01/a.JPEG"


def test_list_images_walks_each_real_folder_once(tmp_path):
    for relative in ("data/a.png", "data/nested/b.jpg", "elsewhere/c.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    data = tmp_path / "data"
    (data / "self").symlink_to(".")  # without a cycle check: 2 photos made 82 entries, in train and val alike
    (data / "nested" / "up").symlink_to("..")
    (data / "again").symlink_to("nested")  # a second way into one folder: its photos once, by the real path
    (data / "linked").symlink_to(tmp_path / "elsewhere")  # a data set linked in from elsewhere is found
    expected = [str(data / relative) for relative in ("a.png", "linked/c.png", "nested/b.jpg")]
    assert list_images(data) == expected


def test_list_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        list_images(tmp_path / "empty")


def test_split_is_deterministic_order_and_location_independent(tmp_path):
    names = [f"class{index % 7}/photo_{index}.jpg" for index in range(1000)]
    train, val = split_train_val([f"/data/a/{name}" for name in names], "/data/a", 0.2)
    shuffled = [f"/mnt/other/{name}" for name in names]
    random.Random(0).shuffle(shuffled)
    moved_train, moved_val = split_train_val(shuffled, "/mnt/other", 0.2)
    assert [path[len("/data/a/") :] for path in val] == [path[len("/mnt/other/") :] for path in moved_val]
    assert 150 < len(val) < 250 and len(train) + len(val) == 1000 and not set(train) & set(val)
    assert split_train_val(shuffled, "/mnt/other", 0.2, salt="another")[1] != moved_val
    assert split_train_val(shuffled, "/mnt/other", 0.0)[1] == []
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(names, "/", 1.0)


def test_write_split_reads_back(tmp_path):
    data = tmp_path / "data"
    paths = [str(data / f"c{index}" / f"{index}.jpg") for index in range(20)]
    train, val = split_train_val(paths, data, 0.3)
    write_split(tmp_path / "run", train, val)
    assert list_images(tmp_path / "run" / "val.txt") == val
    assert list_images(tmp_path / "run" / "train.txt") == train
    _, portable_val = write_split(tmp_path / "published", train, val, root=data)
    assert portable_val.read_text().splitlines()[1:] == sorted(str(Path(path).relative_to(data)) for path in val)
    assert list_images(portable_val, root=data) == val


def test_training_items_carry_the_ab_noise(tmp_path):
    """Same seed, same crop and flip: the noisy item minus the clean one is the noise, of std ab_noise."""
    path = write_photo(tmp_path / "a.png")
    noisy = ColorizationDataset([path], config=DatasetConfig(lightness_size=32, ab_size=32, ab_noise=0.1))
    clean = ColorizationDataset([path], config=DatasetConfig(lightness_size=32, ab_size=32, ab_noise=0.0))
    torch.manual_seed(5)
    with_noise = noisy[0]
    torch.manual_seed(5)
    without = clean[0]
    torch.testing.assert_close(with_noise["lightness"], without["lightness"])
    difference = with_noise["ab"] - without["ab"]
    assert abs(difference.std().item() - 0.1) < 0.01 and abs(difference.mean().item()) < 0.01
    validation = ColorizationDataset([path], train=False, config=noisy.config)  # never in validation
    assert torch.equal(validation[0]["ab"], ColorizationDataset([path], train=False, config=clean.config)[0]["ab"])


def test_split_is_the_same_in_every_process(tmp_path):
    """Membership must not depend on Python's per-process string hashing (PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    program = (
        "from cinn.data import split_train_val\n"
        "names = [f'/data/photo_{index}.jpg' for index in range(200)]\n"
        "print(split_train_val(names, '/data', 0.3)[1])\n"
    )
    splits = {
        subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout  # fmt: skip
        for seed in ("1", "2", "3")
    }
    assert len(splits) == 1 and splits.pop().count("photo_") > 30


def test_pairs_return_freed_heap_memory_every_trim_every_photos(monkeypatch):
    """A DataLoader worker's heap grew by hundreds of MB over an ImageNet-like pass until freed memory
    was given back regularly (benchmarks/README.md, "Data at scale")."""
    calls = []
    monkeypatch.setattr(cinn.data, "release_freed_memory", lambda: calls.append(1))
    pairs = PhotoPairs(DatasetConfig(lightness_size=16, ab_size=8), train=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    for _ in range(2 * cinn.data.TRIM_EVERY + 1):
        pairs.pair(image, "photo.png")
    assert len(calls) == 2


def test_freed_memory_is_returned_with_glibc_and_skipped_elsewhere():
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert cinn.data._MALLOC_TRIM is not None
    cinn.data.release_freed_memory()  # never raises, with or without glibc
