"""Couplings as a family in recipes and releases: choosing one, its own settings, the old clamp key."""

from __future__ import annotations

import shutil
from pathlib import Path

import cinn.programs.train as train_pipeline
import pytest
import torch
import yaml

from cinn import DEFAULT_MODEL
from cinn.blocks import ConditionalSplineCoupling, SplineCouplingSettings
from cinn.colorizer import Colorizer
from cinn.config import ConfigError, from_dict, load_config, save_config
from cinn.glow import GlowConfig
from cinn.recipe import ModelConfig, Recipe

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "debug.yaml"


def test_a_recipe_chooses_the_coupling_and_gets_its_settings_in_full():
    recipe = load_config(Recipe, DEBUG, ["model.flow.coupling=spline", "model.flow.coupling_settings.bins=5"])
    assert recipe.model.flow.coupling_settings == {"bins": 5, "bound": SplineCouplingSettings().bound}
    model = Colorizer(recipe.model)
    couplings = [module for module in model.flow.modules() if isinstance(module, ConditionalSplineCoupling)]
    assert len(couplings) == sum(recipe.model.flow.steps_per_level)
    assert all(coupling.settings == SplineCouplingSettings(bins=5) for coupling in couplings)
    # 3 * bins - 1 coefficients per element of the half a subnetwork transforms
    first_half = couplings[0].split_sizes[0]
    assert couplings[0].subnet_first[-1].out_channels == (3 * 5 - 1) * first_half


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.flow.coupling=spline", "model.flow.coupling_settings.bins=0"],
         "'model.flow.coupling_settings.bins' must be >= 1 and <= 100, got 0"),
        (["model.flow.coupling=spline", "model.flow.coupling_settings.bound=-1"],
         "'model.flow.coupling_settings.bound' must be > 0, got -1"),
        (["model.flow.coupling=spline", "model.flow.coupling_settings.bins=2.5"],
         "'model.flow.coupling_settings.bins' must be of type int"),
        (["model.flow.coupling=spline", "model.flow.coupling_settings.clamp=1"],
         "unknown config key 'model.flow.coupling_settings.clamp' (known: bins, bound)"),
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


def test_a_spline_model_trains_and_its_release_samples(tmp_path, photo_folder):
    run = tmp_path / "run"
    argv = ["--config", str(DEBUG), "--data", str(photo_folder), "--out", str(run), "--set", "train.steps=2",
            "--set", "model.flow.coupling=spline", "--set", "model.flow.coupling_settings.bins=4"]  # fmt: skip
    assert train_pipeline.main(argv) == 0
    written = yaml.safe_load((run / "release" / "config.yaml").read_text())["flow"]
    assert written["coupling"] == "spline" and written["coupling_settings"]["bins"] == 4
    assert "spline couplings (bins 4, bound 3.0)" in (run / "release" / "README.md").read_text()
    model = Colorizer.from_pretrained(run / "release")
    lightness = torch.randn(1, 1, 16, 16)
    ab, bits = model.sample_with_likelihood(lightness, 3, generator=torch.Generator().manual_seed(0))
    assert ab.shape == (1, 3, 2, 8, 8) and torch.isfinite(bits).all()
    # The reported likelihood of a sample is the forward pass's on that sample.
    torch.testing.assert_close(model.nll(lightness.expand(3, -1, -1, -1), ab[0]), bits[0], atol=1e-4, rtol=1e-4)
