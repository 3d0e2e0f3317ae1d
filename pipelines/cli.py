"""What every command-line program shares: recipe arguments and one-sentence errors."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from cinn.config import ConfigError, load_config
from cinn.images import ImageLoadError
from cinn.recipe import Recipe

# Errors a user can cause; anything else is a bug and keeps its traceback.
USER_ERRORS = (ConfigError, FileNotFoundError, FileExistsError, ImageLoadError, ValueError, RuntimeError)


def user_errors_exit(main: Callable[..., int]) -> Callable[..., int]:
    """Turns a user error into one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapper


def add_recipe_arguments(parser: argparse.ArgumentParser, config_required: bool = True) -> None:
    parser.add_argument("--config", type=Path, required=config_required, help="recipe YAML (configs/*.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value, e.g. --set train.lr=3e-4 (repeatable)",
    )


def load_recipe(path: Path, overrides: list[str]) -> Recipe:
    return load_config(Recipe, path, overrides)
