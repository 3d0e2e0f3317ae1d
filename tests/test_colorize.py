"""The colorize program end to end: every kind of photo, bad inputs, overwriting, seeds, options."""

from __future__ import annotations

import re
from pathlib import Path

import cinn.programs.colorize as colorize_pipeline
import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

from cinn.colorizer import Colorizer

WIDTH, HEIGHT = 203, 141  # odd on purpose: not multiples of any stride
TILE_WIDTH = round(WIDTH * colorize_pipeline.GRID_TILE_HEIGHT / HEIGHT)
EXIF_ORIENTATION = 0x0112


def run(release: Path, *args: str | Path) -> int:
    return colorize_pipeline.main([*map(str, args), "--model", str(release)])


def base_rgb(width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8: a colour gradient, a bright square and noise, so L varies everywhere."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([cols / width * 200, rows / height * 160, 120 + 0 * rows], axis=-1)
    image[height // 4 : height // 2, width // 3 : width // 2] = (240, 230, 40)
    return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)


def lightness(rgb: np.ndarray | Image.Image) -> np.ndarray:
    """CIE L of 8-bit sRGB, by scikit-image (an independent reference)."""
    rgb = np.asarray(rgb.convert("RGB")) if isinstance(rgb, Image.Image) else rgb
    return rgb2lab(rgb)[..., 0]


def chroma(image: Image.Image) -> float:
    return float(np.abs(rgb2lab(np.asarray(image.convert("RGB")))[..., 1:]).mean())


def save_photo(path: Path, seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    rgb = base_rgb(width, height, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return rgb


def make_kind(kind: str, folder: Path) -> tuple[Path, np.ndarray, np.ndarray | None]:
    """Writes one photo of ``kind``; returns its path, the RGB a viewer shows, and its alpha (or None)."""
    rgb = base_rgb()
    gray = rgb.mean(axis=-1).round().astype(np.uint8)
    if kind == "gray_l":
        Image.fromarray(gray, mode="L").save(path := folder / "gray_l.png")
        return path, np.repeat(gray[..., None], 3, axis=-1), None
    if kind == "gray_16bit":
        deep = (gray.astype(np.uint32) * 257 + np.random.default_rng(1).integers(0, 257, gray.shape)).astype(np.uint16)
        Image.fromarray(deep).save(path := folder / "gray_16bit.png")
        assert Image.open(path).mode.startswith("I")  # really stored with 16 bits
        shown = np.round(deep / 65535 * 255).astype(np.uint8)
        return path, np.repeat(shown[..., None], 3, axis=-1), None
    if kind == "palette":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=24).save(path := folder / "pal.png")
        return path, np.asarray(Image.open(path).convert("RGB")), None
    if kind == "rgba":
        alpha = np.full((HEIGHT, WIDTH), 255, np.uint8)
        alpha[:, :60] = 0  # transparent: shown as white
        alpha[:, 60:90] = 128  # half transparent: composited over white once
        Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(path := folder / "rgba.png")
        weight = alpha[..., None] / 255.0
        return path, np.round(rgb * weight + 255 * (1 - weight)).astype(np.uint8), alpha
    if kind == "cmyk_jpeg":
        Image.fromarray(rgb).convert("CMYK").save(path := folder / "cmyk.jpg", quality=95)
        assert Image.open(path).mode == "CMYK"
        return path, np.asarray(Image.open(path).convert("RGB")), None
    if kind == "exif_rotated_jpeg":
        # Stored sideways (HEIGHT wide) with orientation 6: a viewer turns it 90 degrees clockwise.
        stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb)))
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6
        stored.save(path := folder / "rotated.jpg", quality=95, exif=exif.tobytes())
        decoded = np.asarray(Image.open(path).convert("RGB"))
        assert decoded.shape[:2] == (WIDTH, HEIGHT)
        return path, np.ascontiguousarray(np.rot90(decoded, k=-1)), None
    assert kind == "colour_jpeg"
    Image.fromarray(rgb).save(path := folder / "colour.jpg", quality=90)
    return path, np.asarray(Image.open(path).convert("RGB")), None


KINDS = ["gray_l", "gray_16bit", "palette", "rgba", "cmyk_jpeg", "exif_rotated_jpeg", "colour_jpeg"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_photo_keeps_its_size_lightness_and_alpha(kind, tmp_path, debug_release):
    path, shown, alpha = make_kind(kind, tmp_path)
    assert run(debug_release, path, "--n", "2", "--seed", "0", "--out", tmp_path / "out") == 0
    for index in (1, 2):
        output = Image.open(tmp_path / "out" / f"{path.stem}_color_{index:02d}.png")
        assert output.size == (WIDTH, HEIGHT)
        # The model only chooses a and b; L is the photo's own, up to 8-bit rounding of the result.
        error = np.abs(lightness(output) - lightness(shown))
        assert error.mean() < 0.5 and error.max() < 1.0, (error.mean(), error.max())
        assert chroma(output) > 2.0  # it did add colour
        if alpha is None:
            assert output.mode == "RGB"
        else:
            assert output.mode == "RGBA"
            np.testing.assert_array_equal(np.asarray(output.getchannel("A")), alpha)
    grid = Image.open(tmp_path / "out" / f"{path.stem}_grid.png")
    assert grid.size == (3 * TILE_WIDTH + 2 * 4, colorize_pipeline.GRID_TILE_HEIGHT)


def test_bad_inputs_are_named_and_the_good_ones_still_written(tmp_path, debug_release, capsys):
    save_photo(tmp_path / "good_1.png", seed=1)
    save_photo(tmp_path / "good_2.jpg", seed=2)
    Image.fromarray(base_rgb()).save(tmp_path / "whole.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "whole.png").read_bytes()[:2000])
    Image.fromarray(base_rgb()).save(tmp_path / "whole.jpg")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:1500])
    (tmp_path / "text.jpg").write_text("not a photo\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    bad = ["missing.jpg", "truncated.png", "truncated.jpg", "text.jpg", "empty.jpg"]
    inputs = ["good_1.png", *bad[:3], "good_2.jpg", *bad[3:]]
    code = run(debug_release, *(tmp_path / name for name in inputs), "--n", "1", "--out", tmp_path / "out")
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad), errors
    for name, line in zip(bad, errors, strict=True):
        assert str(tmp_path / name) in line
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == ["good_1_color_01.png", "good_1_grid.png", "good_2_color_01.png", "good_2_grid.png"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, debug_release, capsys):
    photo, other, out = tmp_path / "photo.png", tmp_path / "other.png", tmp_path / "out"
    save_photo(photo, seed=1)
    save_photo(other, seed=2)
    assert run(debug_release, photo, "--n", "2", "--seed", "1", "--out", out) == 0
    before = snapshot(out)
    capsys.readouterr()

    assert run(debug_release, photo, other, "--n", "2", "--seed", "2", "--out", out) == 1
    error = capsys.readouterr().err
    assert f"error: {photo}:" in error and "already exists" in error and "--overwrite" in error
    after = snapshot(out)
    assert {name: after[name] for name in before} == before  # byte-identical
    assert "other_color_01.png" in after  # the run went on with the next photo

    assert run(debug_release, photo, "--n", "2", "--seed", "2", "--out", out, "--overwrite") == 0
    assert snapshot(out)["photo_color_01.png"] != before["photo_color_01.png"]


def test_a_seed_reproduces_the_outputs_byte_for_byte(tmp_path, debug_release):
    photo = tmp_path / "photo.png"
    save_photo(photo)
    for folder, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        args = ["--n", "2", "--interpolate", "3", "--seed", seed, "--out", tmp_path / folder]
        assert run(debug_release, photo, *args) == 0
    first, second, other = (snapshot(tmp_path / folder) for folder in "abc")
    assert len(first) == 4 and first == second
    for name in ("photo_color_01.png", "photo_color_02.png", "photo_interpolation.png"):
        assert first[name] != other[name], name


def test_temperature_zero_gives_one_deterministic_colorization(tmp_path, debug_release):
    photo = tmp_path / "photo.png"
    save_photo(photo)
    for folder in "ab":  # no --seed: temperature 0 must not need one
        assert run(debug_release, photo, "--n", "4", "--temperature", "0", "--out", tmp_path / folder) == 0
    first, second = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert sorted(first) == ["photo_color_01.png", "photo_grid.png"]
    assert first == second
    grid = Image.open(tmp_path / "a" / "photo_grid.png")
    assert grid.width == 2 * TILE_WIDTH + 4  # the gray photo and one colorization


def test_samples_differ_from_each_other(tmp_path, debug_release):
    photo = tmp_path / "photo.png"
    save_photo(photo)
    assert run(debug_release, photo, "--n", "3", "--out", tmp_path / "out") == 0
    samples = [
        rgb2lab(np.asarray(Image.open(tmp_path / "out" / f"photo_color_{i:02d}.png")))[..., 1:] for i in (1, 2, 3)
    ]
    for first in range(3):
        for second in range(first + 1, 3):
            assert np.abs(samples[first] - samples[second]).mean() > 1.0  # Lab units of a and b


def test_folders_and_globs_expand(tmp_path, debug_release):
    save_photo(tmp_path / "album" / "a.png", seed=1)
    save_photo(tmp_path / "album" / "nested" / "b.JPG", seed=2)
    (tmp_path / "album" / "notes.txt").write_text("not a photo")
    save_photo(tmp_path / "loose" / "c.png", seed=3)
    save_photo(tmp_path / "loose" / "d.jpg", seed=4)
    (tmp_path / "album" / "self").symlink_to(".")
    inputs = [tmp_path / "album", f"{tmp_path}/loose/*.png"]
    assert run(debug_release, *inputs, "--n", "1", "--temperature", "0", "--out", tmp_path / "out") == 0
    written = sorted(path.name for path in (tmp_path / "out").glob("*_color_01.png"))
    assert written == ["a_color_01.png", "b_color_01.png", "c_color_01.png"]
    # "album/**" matches the folders and notes.txt too: only its photos are inputs, each once.
    assert run(debug_release, f"{tmp_path}/album/**", "--n", "1", "--temperature", "0", "--out", tmp_path / "all") == 0
    assert sorted(path.name for path in (tmp_path / "all").glob("*_color_01.png")) == written[:2]


def test_each_photo_is_found_once_and_folders_are_never_inputs(tmp_path):
    album = tmp_path / "album"
    for relative in ("a.png", "nested/b.JPG", "notes.txt"):
        (album / relative).parent.mkdir(parents=True, exist_ok=True)
        (album / relative).write_bytes(b"")
    (album / "self").symlink_to(".")  # a link back up the tree
    (album / "again").symlink_to("nested")  # a second way into one folder
    (album / "nested" / "up").symlink_to("..")
    expected = [album / "a.png", album / "nested" / "b.JPG"]
    for inputs in ([album], [f"{album}/**"], [f"{album}/**/*.*", album, album / "a.png"], [f"{album}/*/b.*"]):
        paths, problems = colorize_pipeline.expand_inputs([str(item) for item in inputs])
        assert problems == [], inputs
        assert paths == (expected if inputs != [f"{album}/*/b.*"] else expected[1:]), inputs


def test_an_input_without_photos_is_an_error(tmp_path, debug_release, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a photo")
    out = tmp_path / "out"
    assert run(debug_release, tmp_path / "empty", "--out", out) == 2
    assert f"error: the folder '{tmp_path / 'empty'}' holds no photo (extensions: .jpg" in capsys.readouterr().err
    assert not out.exists()
    save_photo(tmp_path / "good.png")
    inputs = [tmp_path / "empty", f"{tmp_path}/*.jpg", tmp_path / "good.png"]
    assert run(debug_release, *inputs, "--n", "1", "--temperature", "0", "--out", out) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "holds no photo" in errors[0] and f"'{tmp_path}/*.jpg' matches no photo" in errors[1]
    assert sorted(path.name for path in out.iterdir()) == ["good_color_01.png", "good_grid.png"]


def test_same_stem_in_two_folders_gives_two_results(tmp_path, debug_release):
    first = save_photo(tmp_path / "x" / "photo.png", seed=1)
    second = save_photo(tmp_path / "y" / "photo.png", seed=2, width=97, height=131)
    inputs = [tmp_path / "x" / "photo.png", tmp_path / "y" / "photo.png"]
    assert run(debug_release, *inputs, "--n", "1", "--temperature", "0", "--out", tmp_path / "out") == 0
    for name, source in (("photo", first), ("photo_2", second)):
        output = Image.open(tmp_path / "out" / f"{name}_color_01.png")
        assert output.size == (source.shape[1], source.shape[0])
        assert np.abs(lightness(output) - lightness(source)).mean() < 0.5  # its own photo's colorization


def test_interpolate_writes_a_strip_of_different_frames(tmp_path, debug_release):
    photo = tmp_path / "photo.png"
    save_photo(photo)
    assert run(debug_release, photo, "--n", "1", "--interpolate", "4", "--seed", "0", "--out", tmp_path / "out") == 0
    strip = Image.open(tmp_path / "out" / "photo_interpolation.png")
    assert strip.size == (4 * TILE_WIDTH + 3 * 4, colorize_pipeline.GRID_TILE_HEIGHT)
    tiles = [np.asarray(strip.crop((i * (TILE_WIDTH + 4), 0, i * (TILE_WIDTH + 4) + TILE_WIDTH, 256))) for i in (0, 3)]
    ends = [rgb2lab(tile)[..., 1:] for tile in tiles]
    assert np.abs(ends[0] - ends[1]).mean() > 1.0


def test_likelihood_prints_the_bits_per_dim_of_each_sample(tmp_path, debug_release, capsys):
    colour, gray = tmp_path / "colour.png", tmp_path / "gray.png"
    save_photo(colour)
    Image.fromarray(base_rgb()).convert("L").save(gray)
    assert run(debug_release, colour, gray, "--n", "3", "--seed", "4", "--likelihood", "--out", tmp_path / "o") == 0
    lines = capsys.readouterr().out.splitlines()
    colour_line = next(line for line in lines if line.startswith(f"{colour}: bits/dim"))
    gray_line = next(line for line in lines if line.startswith(f"{gray}: bits/dim"))
    numbers = [float(value) for value in re.findall(r"-?\d+\.\d+", colour_line.split(":", 1)[1])]
    # The same numbers from the Python API, with the same seed.
    model = Colorizer.from_pretrained(debug_release)
    result = model.colorize_photo(Image.open(colour), 3, None, torch.Generator().manual_seed(4))
    assert result.original_bits_per_dim is not None and "original colours" in colour_line
    np.testing.assert_allclose(numbers, [*result.bits_per_dim, result.original_bits_per_dim], atol=6e-4)
    assert "original colours" not in gray_line  # a gray photo has no colours of its own to score
    assert len(re.findall(r"-?\d+\.\d+", gray_line.split(":", 1)[1])) == 3


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        colorize_pipeline.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Examples:" in text and "python pipelines/colorize.py photo.jpg" in text
    for option in ("--n", "--temperature", "--seed", "--overwrite", "--interpolate", "--likelihood", "--out"):
        assert option in text


@pytest.mark.parametrize(
    "bad",
    [
        ["--n", "0"], ["--n", "100000"], ["--temperature", "-1"], ["--temperature", "nan"], ["--temperature", "inf"],
        ["--interpolate", "1"], ["--max-megapixels", "0"],
    ],
)  # fmt: skip
def test_impossible_options_are_refused(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        colorize_pipeline.main(["photo.jpg", *bad])
    assert exit_info.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_limits_are_checked_per_photo_before_decoding(tmp_path, debug_release, capsys):
    """A sliver and an oversized photo are refused, each in one line, and the good photo is still done."""
    Image.new("RGB", (500, 4), (200, 40, 40)).save(tmp_path / "a_sliver.png")  # 125 to 1
    Image.new("RGB", (3000, 2000), (40, 200, 40)).save(tmp_path / "b_large.png")  # 6 megapixels
    save_photo(tmp_path / "c_good.png")
    out = tmp_path / "out"
    code = run(debug_release, tmp_path / "a_sliver.png", tmp_path / "b_large.png", tmp_path / "c_good.png",
               "--n", "2", "--out", out, "--max-megapixels", "5")  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "a_sliver.png" in err and "longer than the limit of 10 to 1" in err
    assert "b_large.png" in err and "more than the limit of 5 megapixels" in err
    assert sorted(path.name for path in out.iterdir()) == [
        "c_good_color_01.png",
        "c_good_color_02.png",
        "c_good_grid.png",
    ]
    assert run(debug_release, tmp_path / "c_good.png", "--out", out, "--working-side", "-5") == 2
    assert "--working-side must be between" in capsys.readouterr().err


def test_the_python_api_checks_what_it_is_given(debug_release):
    from cinn.errors import UsageError

    model = Colorizer.from_pretrained(debug_release)
    array = base_rgb().astype(np.uint8)
    images = model.colorize(array, num_samples=2, temperature=0.5)  # a uint8 array is a photo too
    assert [image.size for image in images] == [(WIDTH, HEIGHT)] * 2
    for call, message in (
        (lambda: model.colorize(array, num_samples=0), "number of samples must be between 1 and 64"),
        (lambda: model.colorize(array, temperature=float("nan")), "temperature must be a finite number"),
        (lambda: model.colorize(array, temperature=-1), "temperature must be a finite number >= 0"),
        (lambda: model.colorize(Image.new("RGB", (0, 0))), "it has no pixels"),
        (lambda: model.colorize(torch.rand(3, 8, 8)), "a photo is a PIL image"),
        (lambda: model.colorize(array.astype(np.float32)), "a photo is a PIL image"),
    ):
        with pytest.raises(UsageError, match=message):
            call()
    # A float photo with negative values (a difference image) keeps its contrast: it used to come back black.
    signed = Image.fromarray(np.linspace(-1, 0, WIDTH * HEIGHT, dtype=np.float32).reshape(HEIGHT, WIDTH))
    assert signed.mode == "F"
    lightness_range = np.ptp(lightness(model.colorize(signed, num_samples=1, temperature=0)[0]))
    assert lightness_range > 90, lightness_range


def test_a_folder_colorized_photos_at_a_time_gives_each_photo_its_own_results(tmp_path, debug_release, monkeypatch):
    """Photos of a folder are colorized on several threads at once, each with its share of torch's
    threads: each photo's files are those it gets alone (up to one 8-bit level: a different number of
    threads sums in another order), and torch's thread count is set back afterwards."""
    for index in range(3):
        save_photo(tmp_path / "in" / f"photo_{index}.png", seed=index)
    monkeypatch.setattr(colorize_pipeline, "photo_workers", lambda count, cores: min(count, 2))
    threads = torch.get_num_threads()
    assert run(debug_release, tmp_path / "in", "--n", "2", "--seed", "3", "--out", tmp_path / "folder") == 0
    assert torch.get_num_threads() == threads
    for index in range(3):
        photo = tmp_path / "in" / f"photo_{index}.png"
        assert run(debug_release, photo, "--n", "2", "--seed", "3", "--out", tmp_path / f"alone_{index}") == 0
        for name in (f"photo_{index}_color_01.png", f"photo_{index}_color_02.png"):
            together = np.asarray(Image.open(tmp_path / "folder" / name), dtype=int)
            alone = np.asarray(Image.open(tmp_path / f"alone_{index}" / name), dtype=int)
            assert np.abs(together - alone).max() <= 1, name
