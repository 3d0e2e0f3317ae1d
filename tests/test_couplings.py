"""Couplings as a family in recipes and releases: their own settings, the old clamp key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from cinn import DEFAULT_MODEL
from cinn.colorizer import Colorizer
from cinn.config import ConfigError, from_dict, load_config, save_config
from cinn.glow import GlowConfig
from cinn.recipe import ModelConfig, Recipe

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "debug.yaml"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.flow.coupling_settings.bins=4"],
         "unknown config key 'model.flow.coupling_settings.bins' (known: clamp)"),
        (["model.flow.clamp=1", "model.flow.coupling=affine"],
         "'model.flow.clamp' is the old place of the affine coupling's clamp"),
    ],
)  # fmt: skip
def test_coupling_settings_are_checked_by_the_chosen_coupling(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(Recipe, DEBUG, overrides)
    assert message in str(error.value)


def test_the_old_place_of_the_clamp_is_the_affine_couplings_setting():
    old = from_dict(ModelConfig, {"flow": {"steps_per_level": [1, 1], "hidden_channels": [8, 8], "clamp": 0.9}})
    assert old.flow == GlowConfig((1, 1), (8, 8), coupling="affine", coupling_settings={"clamp": 0.9})
    with pytest.raises(ConfigError, match="'flow.coupling_settings.clamp' must be > 0"):
        from_dict(ModelConfig, {"flow": {"clamp": 0}})


def test_a_release_written_with_the_old_clamp_key_loads_as_the_same_model(tmp_path):
    """Releases up to 0.2.0 (the shipped one among them) have flow.clamp; read with the rule of
    GlowConfig.prepare_values, they give the model their config saved today describes."""
    old, new = tmp_path / "old", tmp_path / "new"
    for folder in (old, new):
        shutil.copytree(DEFAULT_MODEL, folder)
    values = yaml.safe_load((DEFAULT_MODEL / "config.yaml").read_text())
    flow = values["flow"]
    clamp = flow.pop("coupling_settings", {}).get("clamp", flow.get("clamp"))
    flow.pop("coupling", None)
    flow["clamp"] = clamp
    (old / "config.yaml").write_text(yaml.safe_dump(values))
    model_old = Colorizer.from_pretrained(old)
    save_config(model_old.config, new / "config.yaml")
    written = yaml.safe_load((new / "config.yaml").read_text())["flow"]
    assert (
        "clamp" not in written and written["coupling"] == "affine" and written["coupling_settings"] == {"clamp": clamp}
    )
    model_new = Colorizer.from_pretrained(new)
    assert model_new.config == model_old.config
    lightness = torch.randn(2, 1, 64, 64)
    ab = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(model_old.nll(lightness, ab), model_new.nll(lightness, ab))
