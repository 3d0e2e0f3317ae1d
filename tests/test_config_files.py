"""Recipe files: a ``base`` file read first, this file's values replacing it key by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cinn.config import ConfigError, find_recipe, load_config, shipped_recipes, to_dict
from cinn.recipe import Recipe

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


def test_a_base_named_like_a_shipped_recipe_is_that_recipe_unless_a_file_beside_it_has_the_name(tmp_path):
    (tmp_path / "tuned.yaml").write_text("base: debug\ntrain: {lr: 3.0e-5}\n")
    tuned = load_config(Recipe, tmp_path / "tuned.yaml")
    expected = to_dict(load_config(Recipe, find_recipe("debug")))
    expected["train"]["lr"] = 3.0e-5
    assert to_dict(tuned) == expected
    (tmp_path / "debug").write_text("base: debug.yaml\ntrain: {lr: 1.0e-5}\n")  # a file beside it comes first
    assert load_config(Recipe, tmp_path / "tuned.yaml").train.lr == 3.0e-5
    (tmp_path / "tuned.yaml").write_text("base: debug\n")
    assert load_config(Recipe, tmp_path / "tuned.yaml").train.lr == 1.0e-5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: missing.yaml\n", "base .missing.yaml. is neither a file beside it nor a shipped recipe"),
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
