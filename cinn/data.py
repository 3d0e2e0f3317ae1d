"""Training and validation data: photos -> (normalised lightness, normalised ab) pairs.

One photo gives the condition at ``lightness_size`` and the flow's target at ``ab_size``, both taken
from the same crop, each resized from RGB with antialiasing and converted by ``cinn.color``.
Photos that cannot be read or carry no colour are skipped (``None``) with one warning per file;
``collate_skipping`` drops them from the batch and counts them. Train/validation splits are made by
hashing file names, so they do not depend on listing order or machine and can be published with
``write_split``.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from cinn.color import rgb_to_normalized_lab
from cinn.errors import DataError
from cinn.images import ImageLoadError, load_rgb
from cinn.pixels import DEFAULT_GRAYSCALE_THRESHOLD, is_grayscale_photo, reduce_rgb

# Aspect ratios RandomResizedCrop may draw; the decode size below relies on the narrowest one.
_CROP_RATIOS = (3.0 / 4.0, 4.0 / 3.0)
_COLOURFULNESS_THUMBNAIL = 64

# Per-file state shared between DataLoader workers (see ``ColorizationDataset._status``).
_UNSEEN, _USABLE, _SKIPPED = 0, 1, 2

# Pairs a process makes between two returns of freed heap memory to the system (``PhotoPairs``).
TRIM_EVERY = 64


def _find_malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this interpreter runs on
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _find_malloc_trim()


def release_freed_memory() -> None:
    """Give the heap memory that freed photos left behind back to the system (a no-op without glibc)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass(frozen=True)
class DatasetConfig:
    """How photos become training pairs.

    Attributes:
        lightness_size: side of the square lightness condition, (1, lightness_size, lightness_size).
        ab_size: side of the square ab target the flow models, (2, ab_size, ab_size).
        ab_noise: std of Gaussian noise added to normalised ab in training only; it spreads the
            data off the quantised 8-bit colour lattice, whose density a flow could otherwise
            blow up (0.05 as in Ardizzone et al. 2019, cINN colorization).
        min_colourfulness: photos below this Hasler-Suesstrunk colourfulness are skipped as grey.
        crop_scale: area fractions of RandomResizedCrop in training.
        reduced_decoding: decode JPEGs at 1/2-1/8 scale when that still covers the output size.
        cache_images: keep every decoded photo in memory (per worker process), for small photo
            sets such as the kit, where decoding would otherwise take the CPU from the model.
    """

    lightness_size: int = 64
    ab_size: int = 32
    ab_noise: float = 0.05
    min_colourfulness: float = DEFAULT_GRAYSCALE_THRESHOLD
    crop_scale: tuple[float, float] = (0.3, 1.0)
    reduced_decoding: bool = True
    cache_images: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_scale", tuple(float(value) for value in self.crop_scale))
        if self.lightness_size < 1 or self.ab_size < 1:
            raise ValueError(f"Image sizes must be positive, got lightness {self.lightness_size}, ab {self.ab_size}.")
        if self.ab_noise < 0:
            raise ValueError(f"ab_noise must be non-negative, got {self.ab_noise}.")
        low, high = self.crop_scale if len(self.crop_scale) == 2 else (0.0, 0.0)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.crop_scale}.")


class NoUsablePhotos(DataError):
    """Every photo of a dataset was rejected."""


class ColorizationDataset(torch.utils.data.Dataset):
    """Photos as items ``{"lightness": (1, Hl, Wl), "ab": (2, Ha, Wa), "path": str}``, or ``None``.

    Training draws a RandomResizedCrop and a horizontal flip from torch's RNG, so a DataLoader
    ``generator`` makes runs repeatable; validation takes the central square (a short-side resize
    followed by a centre crop). Values are normalised by ``cinn.color``: lightness in [-1, 1], ab
    divided by ``AB_SCALE``.

    A photo that cannot be read, or whose colourfulness is below ``config.min_colourfulness``, gives
    ``None`` and one ``UserWarning`` naming the file and reason. The per-file verdict lives in shared
    memory, so the warning appears once per file across all workers and epochs, and a rejected file
    is not decoded again.

    Args:
        paths: photo files, absolute or relative to ``root``.
        root: folder that relative paths start from.
        train: random crops, flips and ab noise if True; deterministic centre crops if False.
        config: sizes, noise and skipping rules; ``DatasetConfig()`` if None.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        root: str | os.PathLike | None = None,
        train: bool = True,
        config: DatasetConfig | None = None,
    ):
        super().__init__()
        if len(paths) == 0:
            raise ValueError("ColorizationDataset needs at least one photo path, got an empty list.")
        joined = (Path(root) / path if root is not None else Path(path) for path in paths)
        # One numpy byte array rather than a list of str: workers reading Python objects touch their
        # reference counts, which copies the pages of a million-photo list into every worker.
        self._paths = np.array([os.fsencode(path) for path in joined])
        self.train = train
        self.config = config if config is not None else DatasetConfig()
        # Shared memory survives the fork into DataLoader workers, so every worker sees each verdict.
        self._status = torch.zeros(len(self._paths), dtype=torch.uint8).share_memory_()
        self._cache: dict[int, Image.Image] = {}  # filled only with config.cache_images
        self.pairs = PhotoPairs(self.config, train)

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, index: int) -> str:
        """The file behind item ``index``."""
        return os.fsdecode(self._paths[index])

    def check_some_usable(self) -> None:
        """Raise ``NoUsablePhotos`` once every photo has been tried and rejected (unreadable or grey);
        a training loop calls it after an empty batch rather than waiting for a usable one forever."""
        if bool((self._status == _SKIPPED).all()):
            raise NoUsablePhotos(
                f"none of the {len(self)} training photos is usable (each is unreadable or has no colour; "
                "the warnings above name them)"
            )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str] | None:
        path = self.path(index)
        if self._status[index] == _SKIPPED:
            return None
        try:
            image = self._cache.get(index) or load_rgb(path, min_side=self.pairs.decode_side())
        except ImageLoadError as error:
            return self._skip(index, error.reason)
        if self.config.cache_images and index not in self._cache:
            image = self._shrink_for_cache(image)
            self._cache[index] = image
        if self._status[index] == _UNSEEN:
            if self.pairs.is_grey(image):
                return self._skip(index, self.pairs.grey_reason())
            self._status[index] = _USABLE
        return self.pairs.pair(image, path)

    def _skip(self, index: int, reason: str) -> None:
        """Mark a photo as unusable and warn about it, the first time only."""
        if self._status[index] != _SKIPPED:
            self._status[index] = _SKIPPED
            warnings.warn(f"Skipping photo '{self.path(index)}': {reason}.", UserWarning, stacklevel=2)
        return None

    def _shrink_for_cache(self, image: Image.Image) -> Image.Image:
        """The photo at the smallest size no crop will need upsampling from: cheaper to keep and to crop."""
        side = self.pairs.decode_side()
        if side is None or min(image.size) <= side:
            return image
        scale = side / min(image.size)
        size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
        return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


class PhotoPairs:
    """A decoded photo -> a training pair: the part of ``ColorizationDataset`` that does not care where
    photos come from (a folder or a tar shard, ``cinn.shards``), so both readers give the same items.

    Every ``TRIM_EVERY`` pairs it returns freed heap memory to the system: photos of every size
    leave glibc's heap fragmented, and it keeps what it cannot trim from the top. Over one pass of
    20,000 generated ImageNet-like photos at lightness 256 one of two DataLoader workers grew from
    175 to 605 MB without it, and both stayed within 170-200 MB with it, at the same photos/s
    (``benchmarks/README.md``, "Data at scale").

    Args:
        config: sizes, noise and skipping rules.
        train: random crops, flips and ab noise (from torch's RNG) if True; centre crops if False.
    """

    def __init__(self, config: DatasetConfig, train: bool):
        self.config, self.train = config, train
        self._made = 0  # pairs made by this process (each DataLoader worker has its own copy)

    def pair(self, image: Image.Image, path: str) -> dict[str, torch.Tensor | str]:
        """``{"lightness": (1, Hl, Wl), "ab": (2, Ha, Wa), "path": path}``, normalised by ``cinn.color``."""
        self._made += 1
        if self._made % TRIM_EVERY == 0:
            release_freed_memory()
        lightness_rgb, ab_rgb = self._crop_and_resize(image)
        lightness, _ = rgb_to_normalized_lab(lightness_rgb.unsqueeze(0))
        _, ab = rgb_to_normalized_lab(ab_rgb.unsqueeze(0))
        ab = ab.squeeze(0)
        if self.train and self.config.ab_noise > 0:
            ab = ab + self.config.ab_noise * torch.randn_like(ab)
        return {"lightness": lightness.squeeze(0), "ab": ab, "path": path}

    def is_grey(self, image: Image.Image) -> bool:
        """Whether the photo is too grey to train on (``config.min_colourfulness``)."""
        return is_grayscale_photo(_thumbnail(image), self.config.min_colourfulness)

    def grey_reason(self) -> str:
        return f"colourfulness below {self.config.min_colourfulness:g}, a greyscale photo"

    def decode_side(self) -> int | None:
        """Smallest short side a JPEG may be decoded at without the crop ever needing upsampling.

        A RandomResizedCrop of area fraction s and aspect r spans at least sqrt(s * min(r, 1/r))
        of the image's short side.
        """
        if not self.config.reduced_decoding:
            return None
        output_side = max(self.config.lightness_size, self.config.ab_size)
        if not self.train:
            return output_side
        narrowest = self.config.crop_scale[0] * min(_CROP_RATIOS)
        return math.ceil(output_side / math.sqrt(narrowest))

    def _crop_and_resize(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop of ``image`` resized to both output sizes: ((3, Hl, Wl), (3, Ha, Wa)) in [0, 1]."""
        if self.train:
            top, left, height, width = RandomResizedCrop.get_params(
                image, list(self.config.crop_scale), list(_CROP_RATIOS)
            )
            flip = bool(torch.rand(()) < 0.5)
        else:
            side = min(image.size)
            left, top, height, width = (image.width - side) // 2, (image.height - side) // 2, side, side
            flip = False
        crop = TF.pil_to_tensor(image.crop((left, top, left + width, top + height))).float().div_(255.0)[None]
        if flip:
            crop = crop.flip(-1)
        sizes = (self.config.lightness_size, self.config.ab_size)
        return tuple(reduce_rgb(crop, (size, size))[0] for size in sizes)


def _thumbnail(image: Image.Image) -> torch.Tensor:
    """(3, 64, 64) in [0, 1], the whole photo, for the colourfulness test."""
    small = image.resize((_COLOURFULNESS_THUMBNAIL, _COLOURFULNESS_THUMBNAIL), Image.Resampling.BOX)
    return TF.pil_to_tensor(small).float().div_(255.0)


def collate_skipping(items: Sequence[dict | None]) -> dict:
    """Stack the usable items of a batch; count the skipped ones.

    Args:
        items: dataset items, ``None`` for skipped photos.

    Returns:
        ``{"lightness": (N, 1, Hl, Wl), "ab": (N, 2, Ha, Wa), "path": list of N str,
        "num_skipped": int}`` with N the usable items. If all were skipped, N = 0 and the tensors
        are empty with shapes (0, 1, 0, 0) and (0, 2, 0, 0): check ``len(batch["path"])``.
    """
    usable = [item for item in items if item is not None]
    num_skipped = len(items) - len(usable)
    if not usable:
        return {
            "lightness": torch.empty(0, 1, 0, 0),
            "ab": torch.empty(0, 2, 0, 0),
            "path": [],
            "num_skipped": num_skipped,
        }
    return {
        "lightness": torch.stack([item["lightness"] for item in usable]),
        "ab": torch.stack([item["ab"] for item in usable]),
        "path": [item["path"] for item in usable],
        "num_skipped": num_skipped,
    }


def split_train_val(
    paths: Sequence[str | os.PathLike],
    root: str | os.PathLike,
    val_fraction: float,
    salt: str = "cinn-colorization",
) -> tuple[list[str], list[str]]:
    """Split photos into train and validation by a hash of each path relative to ``root``.

    A photo's side depends only on its relative POSIX path and ``salt`` (SHA-1), so the split is
    the same on every machine, for any listing order, and stays put when photos are added.

    Args:
        paths: photo files (as from ``list_images``).
        root: folder the hashed relative paths start from, e.g. the dataset's top folder.
        val_fraction: expected share of validation photos, in [0, 1).
        salt: change it to draw a different split.

    Returns:
        (train, val): sorted lists of the given path strings.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    train, val = [], []
    for path in paths:
        relative = Path(os.path.relpath(path, root)).as_posix()
        (val if is_held_out(relative, val_fraction, salt) else train).append(str(path))
    return sorted(train), sorted(val)


def is_held_out(relative: str, val_fraction: float, salt: str = "cinn-colorization") -> bool:
    """Whether the photo at POSIX path ``relative`` (to the dataset's top folder) is a validation photo
    of ``split_train_val``; tar shards (``cinn.shards``) name their photos by the same paths."""
    digest = hashlib.sha1(f"{salt}/{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def write_split(
    run_dir: str | os.PathLike,
    train: Sequence[str | os.PathLike],
    val: Sequence[str | os.PathLike],
    root: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Write ``train.txt`` and ``val.txt`` into ``run_dir``, one relative path per line.

    Paths are written relative to ``root`` if given (portable: read back with
    ``list_images(run_dir / "val.txt", root=my_copy_of_the_data)``), else relative to ``run_dir``
    (read back with ``list_images(run_dir / "val.txt")``).

    Returns:
        The paths of the two files written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = Path(root) if root is not None else run_dir
    relative_to = "the dataset root" if root is not None else "this folder"
    written = []
    for name, paths in (("train.txt", train), ("val.txt", val)):
        lines = sorted(Path(os.path.relpath(path, base)).as_posix() for path in paths)
        header = f"# {name}: {len(lines)} photos, paths relative to {relative_to}\n"
        (run_dir / name).write_text(header + "".join(line + "\n" for line in lines), encoding="utf-8")
        written.append(run_dir / name)
    return written[0], written[1]


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (``MemAvailable``), or None where that is unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_cache_fits(num_photos: int, config: DatasetConfig, num_workers: int) -> None:
    """Refuse ``cache_images`` for a photo set whose decoded copies cannot fit in memory.

    Every worker process keeps its own copy of every photo it decodes, each at least the decode side
    on its short side (4:3 assumed), so the estimate is a lower bound; half of the available memory is
    the most it may take, the rest being the model's and the operating system's.

    Raises:
        DataError: the cache would not fit; the message gives the estimate.
    """
    if not config.cache_images:
        return
    side = PhotoPairs(config, train=True).decode_side() or max(config.lightness_size, config.ab_size)
    needed = num_photos * side * math.ceil(side * 4 / 3) * 3 * max(num_workers, 1)
    available = available_memory()
    if available is not None and needed > available / 2:
        raise DataError(
            f"data.cache_images would keep {num_photos:,} decoded photos in each of {max(num_workers, 1)} worker "
            f"processes, at least {needed / 2**30:,.1f} GiB, more than half of the {available / 2**30:,.1f} GiB "
            "available: set data.cache_images=false (for large photo sets, decoding is the workers' job)"
        )
