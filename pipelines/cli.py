"""What every command-line program shares: recipe arguments and one-sentence errors."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cinn
from cinn.errors import UserError

if TYPE_CHECKING:  # the recipe imports the model library, and so torch: not at start-up (colorize --backend onnx)
    from cinn.recipe import Recipe

# Errors a user can cause: the project's own, and what a path given on the command line can raise.
# Anything else (a shape mismatch, out of memory, a failed collective) is a bug or an environment
# problem and keeps its traceback.
USER_ERRORS = (
    UserError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError
)  # fmt: skip
TRACEBACK_VARIABLE = "CINN_TRACEBACK"  # set to 1 to see the traceback of a user error too


def user_errors_exit(main: Callable[..., int]) -> Callable[..., int]:
    """Turns a user error into one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as error:
            if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
                raise
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapper


def documented_parser(docstring: str) -> argparse.ArgumentParser:
    """A parser whose --help is the program's docstring (its first paragraph, then the rest: examples),
    with --version."""
    summary, _, rest = docstring.partition("\n\n")
    parser = argparse.ArgumentParser(
        description=summary, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (cinn-colorization {cinn.__version__})")
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --val-data, --out, --resume and --device of a training program."""
    parser.add_argument(
        "--data",
        help="photo folder (any tree: ImageNet, COCO, ...), a list file, or tar shards from make_shards.py "
        "('shards/train-{000000..000127}.tar', quoted)",
    )
    parser.add_argument("--val-data", help="validation folder, list or shards (default: a hashed split of --data)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--device", help="cpu, cuda or auto (default: the recipe's train.device)")


def add_recipe_arguments(parser: argparse.ArgumentParser, config_required: bool = True) -> None:
    parser.add_argument(
        "--config", type=Path, required=config_required,
        help="recipe: a YAML file, or a shipped one by name (default, debug, imagenet, small, unet: configs/*.yaml)",
    )  # fmt: skip
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value, e.g. --set train.lr=3e-4 (repeatable)",
    )


def load_recipe(path: Path, overrides: list[str]) -> Recipe:
    """The recipe file ``path``, or the shipped recipe of that name (``--config default``)."""
    from cinn.config import find_recipe, load_config
    from cinn.recipe import Recipe

    return load_config(Recipe, find_recipe(path), overrides)
