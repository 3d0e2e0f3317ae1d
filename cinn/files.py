"""Writing files a user keeps (colorizations, reports, releases) so that nothing half-written or
mixed ever carries a final name.

``publish`` writes every file of a group to a temporary name beside its target, then moves them into
place together. Without ``overwrite`` the move is an exclusive creation (a hard link, which fails if
the name exists, even as a dangling symlink), so two programs writing into one folder cannot both
claim a name; if any name of the group is taken, the names this call already claimed are removed
again and nothing of the group is left behind. A process killed midway leaves at most hidden
``.NAME.*.tmp`` files, never a truncated file under a final name.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

Writer = Callable[[Path], None]  # writes the file's content to the path it is given


def publish(files: Mapping[Path, Writer], overwrite: bool = False) -> None:
    """Write each ``target: writer`` pair, all or nothing.

    Raises:
        FileExistsError: without ``overwrite``, a target already exists; none of ``files`` is written.
    """
    temporaries = {target: temporary_name(target) for target in files}
    claimed: list[Path] = []
    try:
        for target, writer in files.items():
            writer(temporaries[target])
        for target, temporary in temporaries.items():
            if overwrite:
                os.replace(temporary, target)  # a symlink at the target is replaced, never followed
            else:
                claim(temporary, target)
            claimed.append(target)
    except BaseException:
        if not overwrite:
            for target in claimed:
                with contextlib.suppress(OSError):
                    target.unlink()
        raise
    finally:
        for temporary in temporaries.values():
            with contextlib.suppress(OSError):
                temporary.unlink()


def temporary_name(target: Path) -> Path:
    """A hidden name beside ``target`` that no other writer uses; it keeps the suffix, which Pillow
    and torch read to choose a format."""
    return target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}.tmp{target.suffix}")


def claim(temporary: Path, target: Path) -> None:
    """Give ``temporary``'s file the name ``target`` unless that name exists (atomically)."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise FileExistsError(f"'{target}' already exists (use --overwrite to replace it)") from None
    except OSError:  # a file system without hard links: exclusive create, then replace
        with open(target, "xb"):
            pass
        os.replace(temporary, target)
