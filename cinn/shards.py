"""Photos in tar shards, streamed: the multi-machine answer to a million small files.

Reading 1.28M small files over a network file system stalls multi-node training; reading a few
hundred large files front to back does not. ``pipelines/make_shards.py`` writes a photo folder as
plain tar files (WebDataset's format), each photo a member named by its path relative to the
dataset's top folder (``n01440764/n01440764_10026.JPEG``). So ``tar tf`` lists them, and the hashed
train/validation split (``cinn.data.is_held_out``), the published split files and every item
(``cinn.data.PhotoPairs``) are the folder reader's.

In training every epoch deals the shards, in an order seeded by ``(seed, epoch)``, to the ranks
and then to each rank's DataLoader workers, so no two readers read a shard in the same epoch; each
reader shuffles its photos through a buffer. The tar streaming is WebDataset's (``url_opener``,
``tar_file_expander``, ``shuffle``): maintained, and local paths, ``pipe:`` commands and URLs alike.
"""

from __future__ import annotations

import copy
import hashlib
import io
import random
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.data import IterableDataset, get_worker_info

from cinn.data import DatasetConfig, NoUsablePhotos, PhotoPairs, is_held_out
from cinn.errors import DataError, UsageError
from cinn.images import IMAGE_EXTENSIONS, ImageLoadError, load_rgb

SHUFFLE_BUFFER = 1000  # photos per reader: ~110 MB of ImageNet JPEGs


def require_webdataset() -> ModuleType:
    """The ``webdataset`` module; an optional dependency (``pip install 'cinn-colorization[shards]'``), so that
    colorizing and training from folders do not need it."""
    try:
        import webdataset
    except ImportError:
        raise UsageError("tar shards need WebDataset: pip install 'cinn-colorization[shards]'") from None
    return webdataset


def is_shard_source(source: str | None) -> bool:
    """Whether ``--data`` names tar shards (``shards/train-{000000..000127}.tar``) rather than a folder or list."""
    return source is not None and str(source).endswith(".tar")


def expand_shards(pattern: str) -> list[str]:
    """The shard files a brace pattern names, all of which must exist.

    Raises:
        DataError: unbalanced braces, or a named shard that does not exist.
    """
    webdataset = require_webdataset()
    from braceexpand import UnbalancedBracesError  # WebDataset's own dependency

    try:
        shards = webdataset.shardlists.expand_urls(pattern)
    except UnbalancedBracesError:
        raise DataError(f"shard pattern '{pattern}' has unbalanced braces") from None
    missing = [shard for shard in shards if not Path(shard).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of its {len(shards)})" if len(missing) > 1 else ""
        raise DataError(f"shard pattern '{pattern}' names '{missing[0]}'{more}, which does not exist")
    return shards


def shard_names(shard: str) -> list[str]:
    """The photos in one shard, in stored order, read from the tar headers only (data is skipped)."""
    try:
        with tarfile.open(shard, "r:") as archive:
            return [member.name for member in archive if member.isreg() and _is_photo(member.name)]
    except (tarfile.TarError, OSError) as error:
        raise DataError(f"'{shard}' is not a readable tar shard ({error})") from None


def _is_photo(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class Selection:
    """Which photos of the shards a reader uses: one side of the hashed split, minus some names.

    A few numbers rather than a set of a million names: a set would be copied into every worker.

    Attributes:
        val_fraction: the hashed split's validation share (0: every photo is on the training side).
        held_out: keep the validation side of the split instead of the training side.
        exclude: names never used (the photos of a separate validation set).
    """

    val_fraction: float = 0.0
    held_out: bool = False
    exclude: frozenset[str] = frozenset()

    def __call__(self, name: str) -> bool:
        return name not in self.exclude and is_held_out(name, self.val_fraction) == self.held_out


@dataclass(frozen=True)
class ShardSet:
    """Some tar shards and the photos of them in use.

    Attributes:
        shards: the shard files.
        counts: photos in use per shard (for resuming mid-epoch without reading what came before).
        selection: which photos are in use.
    """

    shards: tuple[str, ...]
    counts: tuple[int, ...]
    selection: Selection


def select(index: dict[str, list[str]], selection: Selection) -> tuple[ShardSet, list[str]]:
    """The shards of ``index`` (shard -> names) restricted to ``selection``, and the names kept, sorted."""
    kept = {shard: [name for name in names if selection(name)] for shard, names in index.items()}
    counts = tuple(len(names) for names in kept.values())
    return ShardSet(tuple(kept), counts, selection), sorted(name for names in kept.values() for name in names)


class ShardedPhotos(IterableDataset):
    """The photos of a ``ShardSet`` as ``ColorizationDataset`` items (``None`` for a skipped photo).

    Training (``train=True``, after ``ordered``): an endless stream; epoch ``e`` deals the shards in
    an order seeded by ``(seed, e)`` to the ranks (``rank::world_size``) and then to this rank's
    DataLoader workers, and every reader shuffles its photos through a buffer. Each item's crop,
    flip and noise come from torch's RNG seeded by ``(seed, epoch, rank, worker, position)``, so the
    stream is the same on every run, and a resumed run skips what was already read without decoding
    it. Validation (``train=False``): one pass over the shards in the given order, one reader.

    Args:
        shard_set: shards and the photos of them to use.
        train: random crops, flips and noise if True; centre crops if False.
        config: sizes, noise and skipping rules.
    """

    def __init__(self, shard_set: ShardSet, train: bool = True, config: DatasetConfig | None = None):
        super().__init__()
        self.shard_set = shard_set
        self.train = train
        self.config = config if config is not None else DatasetConfig()
        if self.config.cache_images:
            raise DataError("data.cache_images cannot be used with tar shards: they are streamed, not kept")
        self.pairs = PhotoPairs(self.config, train)
        self.seed, self.start_batch, self.batch_size, self.rank, self.world_size = 0, 0, 1, 0, 1

    def __len__(self) -> int:
        return sum(self.shard_set.counts)

    def ordered(self, seed: int, start_batch: int, batch_size: int, rank: int = 0, world_size: int = 1):
        """A copy of this stream for one rank, starting after ``start_batch`` batches of ``batch_size``."""
        stream = copy.copy(self)
        stream.seed, stream.start_batch, stream.batch_size = seed, start_batch, batch_size
        stream.rank, stream.world_size = rank, world_size
        return stream

    def check_readers(self, num_workers: int) -> None:
        """Every reader (rank x worker) needs a shard of its own in every epoch."""
        readers = self.world_size * max(num_workers, 1)
        if len(self.shard_set.shards) < readers:
            raise DataError(
                f"{len(self.shard_set.shards)} shards cannot feed {readers} readers ({self.world_size} processes x "
                f"{max(num_workers, 1)} DataLoader workers): write at least {readers} shards or use fewer workers"
            )

    def check_some_usable(self) -> None:
        """Nothing to check here: a reader that finds no usable photo in a whole epoch raises itself."""

    def shards_of(self, epoch: int, worker: int, num_workers: int) -> list[int]:
        """Indices of the shards that reader (this rank, ``worker``) streams in ``epoch``."""
        count = len(self.shard_set.shards)
        if not self.train:
            return list(range(count))
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)).tolist()
        return order[self.rank :: self.world_size][worker::num_workers]

    def __iter__(self) -> Iterator[dict | None]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader takes batch k from worker k % num_workers, counting from its own start: after a
        # resume at batch s, worker w makes the batches an uninterrupted run's worker (w + s) % num_workers made.
        worker = (worker + self.start_batch) % num_workers
        epoch, skip = self._start(worker, num_workers)
        while True:
            usable = 0
            for position, (name, data) in enumerate(self._photos(epoch, worker, num_workers)):
                if position < skip:
                    continue
                if self.train:
                    torch.manual_seed(self._item_seed(epoch, worker, position))
                item = self._item(name, data)
                usable += item is not None
                yield item
            if not self.train:
                return
            if usable == 0 and skip == 0:
                shards = self._names(epoch, worker, num_workers)
                raise NoUsablePhotos(f"no usable photo in a whole epoch of shards {shards}")
            epoch, skip = epoch + 1, 0

    def _start(self, worker: int, num_workers: int) -> tuple[int, int]:
        """(epoch, photos into it) where this reader resumes: it made every ``num_workers``-th batch."""
        if not self.train:
            return 0, 0
        batches = max(0, -(-(self.start_batch - worker) // num_workers))
        skip, epoch = batches * self.batch_size, 0
        while skip > 0:
            length = sum(self.shard_set.counts[index] for index in self.shards_of(epoch, worker, num_workers))
            if length == 0 or skip < length:
                break
            skip, epoch = skip - length, epoch + 1
        return epoch, skip

    def _photos(self, epoch: int, worker: int, num_workers: int) -> Iterator[tuple[str, bytes]]:
        """(name, file bytes) of this reader's photos in ``epoch``, shuffled in training."""
        webdataset = require_webdataset()
        sources = ({"url": self.shard_set.shards[index]} for index in self.shards_of(epoch, worker, num_workers))
        files = webdataset.tariterators.tar_file_expander(webdataset.tariterators.url_opener(sources), eof_value=None)
        photos = (
            (file["fname"], file["data"])
            for file in files
            if _is_photo(file["fname"]) and self.shard_set.selection(file["fname"])
        )
        if not self.train:
            return photos
        rng = random.Random(self._item_seed(epoch, worker, -1))
        return webdataset.filters.shuffle(SHUFFLE_BUFFER, initial=SHUFFLE_BUFFER, rng=rng)(photos)

    def _item(self, name: str, data: bytes) -> dict | None:
        try:
            image = load_rgb(io.BytesIO(data), min_side=self.pairs.decode_side())
        except ImageLoadError as error:
            return self._skip(name, error.reason)
        if self.pairs.is_grey(image):
            return self._skip(name, self.pairs.grey_reason())
        return self.pairs.pair(image, name)

    def _skip(self, name: str, reason: str) -> None:
        if self.train:  # validation reads the same photos at every validation: warn in training only
            warnings.warn(f"Skipping photo '{name}' (in a shard): {reason}.", UserWarning, stacklevel=2)
        return None

    def _item_seed(self, epoch: int, worker: int, position: int) -> int:
        key = f"{self.seed}/{epoch}/{self.rank}/{worker}/{position}".encode()
        return int.from_bytes(hashlib.sha1(key).digest()[:7], "big")

    def _names(self, epoch: int, worker: int, num_workers: int) -> str:
        return ", ".join(f"'{self.shard_set.shards[index]}'" for index in self.shards_of(epoch, worker, num_workers))


def shard_split(
    data: str, val_data: str | None, val_fraction: float
) -> tuple[ShardSet, list[str], ShardSet | None, list[str]]:
    """Training and validation photos of a shard run, as for a folder (``run_dir.prepare_run``).

    Without ``val_data`` the shards' photos are split by ``cinn.data.is_held_out`` at ``val_fraction``;
    with validation shards, their photos are excluded from training by name. A validation folder or
    list is read by the folder reader (``None`` is returned for its shard set).

    Returns:
        (training shards, training names, validation shards or None, validation names).
    """
    index = {shard: shard_names(shard) for shard in expand_shards(data)}
    if val_data is None:
        train_set, train = select(index, Selection(val_fraction, held_out=False))
        val_set, val = select(index, Selection(val_fraction, held_out=True))
        return train_set, train, val_set, val
    if not is_shard_source(val_data):
        train_set, train = select(index, Selection())
        return train_set, train, None, []
    val_set, val = select({shard: shard_names(shard) for shard in expand_shards(val_data)}, Selection())
    train_set, train = select(index, Selection(exclude=frozenset(val)))
    return train_set, train, val_set, val
