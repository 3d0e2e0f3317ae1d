"""Recipe files: a ``base`` file read first, this file's values replacing it key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinn.config import ConfigError, load_config, to_dict
from cinn.recipe import Recipe, find_recipe, shipped_recipes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_a_file_with_a_base_replaces_only_the_keys_it_names(tmp_path):
    (tmp_path / "base.yaml").write_text((CONFIGS / "debug.yaml").read_text())
    (tmp_path / "tuned.yaml").write_text("base: base.yaml\ntrain: {lr: 3.0e-5}\nmodel: {flow: {hidden_channels: [8, 8, 16]}}\n")
    base, tuned = load_config(Recipe, tmp_path / "base.yaml"), load_config(Recipe, tmp_path / "tuned.yaml")
    assert tuned.train.lr == 3.0e-5 and tuned.model.flow.hidden_channels == (8, 8, 16)
    expected = to_dict(base)
    expected["train"]["lr"], expected["model"]["flow"]["hidden_channels"] = 3.0e-5, [8, 8, 16]
    assert to_dict(tuned) == expected  # everything else is the base's, nested sections included


def test_overrides_apply_after_the_base(tmp_path):
    (tmp_path / "tuned.yaml").write_text(f"base: {CONFIGS / 'debug.yaml'}\ntrain: {{lr: 3.0e-5}}\n")
    assert load_config(Recipe, tmp_path / "tuned.yaml", ["train.lr=1.0e-5"]).train.lr == 1.0e-5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: missing.yaml\n", "missing.yaml' does not exist"),
        ("base: loop.yaml\n", "leads back to itself"),
        ("base: [debug.yaml]\n", "'base' must be the path of another config file"),
        ("base: other.yaml\n", "leads back to itself"),
    ],
)
def test_a_base_that_cannot_be_read_is_one_config_error(tmp_path, text, message):
    (tmp_path / "loop.yaml").write_text(text)
    (tmp_path / "other.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match=message):
        load_config(Recipe, tmp_path / "loop.yaml")


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_loads(name):
    load_config(Recipe, find_recipe(name))
