"""Reading photos of any common kind as 8-bit sRGB and finding them on disk.

Every photo that enters training or inference goes through ``load_rgb``: it accepts JPEG, PNG,
WebP, TIFF and BMP in any Pillow mode (grey 8/16/32-bit and float, palette, alpha, CMYK), applies
the EXIF orientation, and raises ``ImageLoadError`` with one readable sentence for anything else.
Pillow and numpy only, no torch: the ONNX colorizer (``cinn.onnx_colorizer``) reads photos with it
and starts in a fraction of torch's import time. Photos as tensors are ``cinn.pixels``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cinn.errors import DataError, UserError
from cinn.limits import PhotoLimits

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class ImageLoadError(UserError):
    """A file that cannot be decoded as a photo.

    Attributes:
        path: the file at fault.
        reason: what went wrong, in a few words.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot read image '{self.path}': {reason}.")


def load_rgb(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """``load_rgb_and_alpha`` without the alpha channel: the photo composited over white."""
    return load_rgb_and_alpha(path, min_side)[0]


def load_rgb_and_alpha(
    path: str | os.PathLike, min_side: int | None = None, limits: PhotoLimits | None = None
) -> tuple[Image.Image, Image.Image | None]:
    """Decode a photo as an 8-bit sRGB PIL image, upright as a viewer would show it.

    Transparent pixels are composited over white (as a viewer shows them on a page); dropping
    alpha instead would expose whatever colour an editor left under fully transparent pixels.
    Greyscale images of more than 8 bits are rescaled to 0-255, never clipped. CMYK is converted
    with Pillow's device-independent formula (embedded ICC profiles are ignored).

    Args:
        path: an image file.
        min_side: if given, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (``Image.draft``, far
            cheaper than a full decode) as long as both sides stay at least ``min_side``.
        limits: if given, a photo whose header declares a size beyond them is refused before it is
            decoded.

    Returns:
        A PIL image in mode ``"RGB"``, and its alpha channel (mode ``"L"``) if it has one, else None.

    Raises:
        ImageLoadError: the file is missing, truncated, corrupt or of an unsupported kind.
    """
    try:
        with Image.open(path) as image:  # reads the header only
            problem = limits.size_problem(*image.size) if limits is not None else None
            if problem is not None:
                raise ImageLoadError(path, problem)
            if min_side is not None:
                image.draft(None, (min_side, min_side))
            image.load()
            return rgb_and_alpha(_upright(image))
    except FileNotFoundError:
        raise ImageLoadError(path, "no such file") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError(path, "not an image format Pillow can read") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageLoadError(path, str(error).rstrip(".") or type(error).__name__) from None


def rgb_and_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """A decoded PIL image of any mode -> (8-bit sRGB composited over white, alpha or None)."""
    has_alpha = image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)
    alpha = image.convert("RGBA").getchannel("A") if has_alpha else None
    return _to_rgb(image), alpha


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a photo with unreadable EXIF is kept as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF blocks are common and must not cost us the photo
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> ``"RGB"``: alpha over white, high bit depths rescaled, palette expanded."""
    if image.mode in _GREY_MODES:
        image = _grey_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _grey_to_8bit(image: Image.Image) -> Image.Image:
    """Rescale a greyscale image of 16/32-bit integers or floats to mode ``"L"``.

    Pillow's own conversion clips some of these modes at 255. The value range is inferred from the
    mode: ``I;16*`` is 0-65535; for ``I`` and ``F`` the range is the smallest of [0, 1], [0, 255]
    and [0, 65535] holding every pixel, and otherwise the image's own maximum. Signed data (a
    difference image, a height map) has no customary range, so its own minimum to maximum is used:
    clipping at 0 would make it black.

    Raises:
        DataError: a pixel is NaN or infinite (it has no grey to show).
    """
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{int((~np.isfinite(values)).sum())} of its pixels are NaN or infinite")
    low = float(values.min()) if values.size else 0.0
    if image.mode.startswith("I;16"):
        low, full_scale = 0.0, 65535.0
    elif low < 0:
        full_scale = float(values.max()) - low or 1.0
    else:
        low, peak = 0.0, float(values.max()) if values.size else 0.0
        full_scale = next((scale for scale in (1.0, 255.0, 65535.0) if peak <= scale), peak)
    scaled = np.clip((values - low) / full_scale * 255.0, 0.0, 255.0)
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def list_images(source: str | os.PathLike, root: str | os.PathLike | None = None) -> list[str]:
    """All photos in a folder tree, or the photos named in a list file, sorted.

    A folder is searched recursively (``find_images``: each real folder once, however many links
    lead to it), so ImageNet's ``train/<class>/*.JPEG`` and COCO's ``train2017/*.jpg`` need nothing
    special. A list file holds one path per line, absolute or relative to ``root`` (default: the
    list file's folder); blank lines and lines starting with ``#`` are ignored (a ``#`` later in a
    line is part of the name).
    ``cinn.data.write_split`` writes such files.

    Args:
        source: a folder or a text file.
        root: for a list file, the folder its relative paths start from.

    Returns:
        Paths as strings, sorted and free of duplicates.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        ValueError: ``source`` holds or names no images.
    """
    source = Path(source)
    if source.is_dir():
        paths = find_images(source)
    elif source.is_file():
        base = Path(root) if root is not None else source.parent
        paths = [os.path.normpath(base / line) for line in _read_list_lines(source)]
    else:
        raise FileNotFoundError(f"Image source '{source}' is neither a folder nor a list file.")
    if not paths:
        raise DataError(f"Image source '{source}' holds no images (extensions: {', '.join(IMAGE_EXTENSIONS)}).")
    return sorted(set(paths))


def find_images(folder: str | os.PathLike) -> list[str]:
    """Every file with an image extension (any case) in a folder tree, sorted.

    Folder symlinks are followed, so a data set linked in from elsewhere is found, but each real
    folder is walked once: a link back up the tree (``self -> .``) would otherwise repeat the tree
    down to the system's limit on links (2 photos became 82 entries), and two ways into one folder
    would put the same photos in training and validation under two names. At each level real
    folders are walked before links, in name order, so the path kept for a photo never changes.
    """
    walked: set[tuple[int, int]] = set()
    paths = []
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        status = os.stat(parent)
        if (status.st_dev, status.st_ino) in walked:
            subfolders.clear()  # os.walk descends only into what is left in the list
            continue
        walked.add((status.st_dev, status.st_ino))
        subfolders.sort(key=lambda name: (os.path.islink(os.path.join(parent, name)), name))
        paths += [os.path.join(parent, name) for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(paths)


def _read_list_lines(list_file: Path) -> list[str]:
    """The paths named in a list file: stripped lines that are neither blank nor ``#`` comments."""
    stripped = (line.strip() for line in list_file.read_text(encoding="utf-8").splitlines())
    return [line for line in stripped if line and not line.startswith("#")]
