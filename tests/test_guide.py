"""The colour guide: the pretrained head kept in the model, the flow modelling ab as an offset from its colour."""

from __future__ import annotations

from pathlib import Path

import cinn.programs.pretrain_condnet as pretrain_pipeline
import cinn.programs.train as train_pipeline
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cinn.colorizer import Colorizer
from cinn.config import ConfigError, load_config
from cinn.recipe import GuideConfig, Recipe

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


def guided_model(level: int = 1, seed: int = 0) -> Colorizer:
    """The debug model with a guide and a global vector, every parameter randomised so that no part is the identity."""
    config = load_config(Recipe, DEBUG, ["model.conditioning_kwargs.global_channels=4"]).model
    torch.manual_seed(seed)
    model = Colorizer(type(config)(**{**config.__dict__, "guide": GuideConfig(hidden_channels=8, level=level)}))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    return model.double().eval()


def test_the_guide_adds_two_condition_channels_that_are_its_colour():
    model = guided_model()
    lightness = torch.rand(2, 1, 16, 16, dtype=torch.float64) * 2 - 1
    conditions = model.conditions(lightness)
    features = model.conditioning_net(lightness)
    logits = model.guide(features)  # (2, Q, 4, 4) at level 1
    mean = torch.einsum("bqhw,qc->bchw", logits.softmax(dim=1), model.guide.quantizer.centers.double())
    for level, (condition, feature) in enumerate(zip(conditions[:3], features[:3], strict=True)):
        assert condition.shape[1] == feature.shape[1] + 2
        assert torch.equal(condition[:, :-2], feature)
        size = feature.shape[-2:]
        expected = mean if size == mean.shape[-2:] else (
            F.interpolate(mean, size=size, mode="area") if size[0] < mean.shape[-2]
            else F.interpolate(mean, size=size, mode="bilinear", align_corners=False)
        )  # fmt: skip
        torch.testing.assert_close(condition[:, -2:], expected, msg=f"level {level}")
    assert len(conditions) == len(features) == 4 and torch.equal(conditions[3], features[3])  # the global vector


def test_the_offset_keeps_the_likelihood_exact():
    """-log p(ab) from the model equals the change of variables with an autograd Jacobian of ab -> z."""
    model = guided_model()
    lightness = torch.rand(1, 1, 16, 16, dtype=torch.float64) * 2 - 1
    ab = torch.randn(1, 2, 8, 8, dtype=torch.float64) * 0.3

    def latent(flat: torch.Tensor) -> torch.Tensor:
        zs, _ = model(lightness, flat.reshape(ab.shape))
        return torch.cat([z.reshape(-1) for z in zs])

    jacobian = torch.autograd.functional.jacobian(latent, ab.reshape(-1))
    _, logabsdet = torch.linalg.slogdet(jacobian)
    z = latent(ab.reshape(-1))
    dims = ab.numel()
    expected_bits = (0.5 * z.pow(2).sum() + 0.5 * dims * torch.log(torch.tensor(2 * torch.pi)) - logabsdet) / (
        dims * torch.log(torch.tensor(2.0))
    )
    torch.testing.assert_close(model.nll(lightness, ab)[0], expected_bits.to(torch.float64))


def test_samples_share_one_condition_and_round_trip():
    model = guided_model()
    lightness = torch.rand(2, 1, 16, 16, dtype=torch.float64) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    ab, bits = model.sample_with_likelihood(lightness, num_samples=3, temperature=1.0, generator=generator)
    # Each photo's 3 samples were decoded against its one condition (batch 2 for 6 samples): encoding
    # them one photo at a time gives back the same likelihoods.
    for photo in range(2):
        again = model.nll(lightness[photo : photo + 1].expand(3, -1, -1, -1), ab[photo])
        torch.testing.assert_close(again, bits[photo])
    zs, _ = model(lightness.repeat_interleave(3, dim=0), ab.flatten(0, 1))
    back, _ = model.decode(zs, model.conditions(lightness))
    torch.testing.assert_close(back, ab.flatten(0, 1))


def test_an_untrained_flow_samples_the_guide_colour_at_temperature_zero():
    """New couplings are the identity and the mixing is linear, so z = 0 decodes to the guide's colour."""
    config = load_config(Recipe, DEBUG).model
    torch.manual_seed(0)
    model = Colorizer(type(config)(**{**config.__dict__, "guide": GuideConfig(hidden_channels=8, level=0)}))
    with torch.no_grad():
        for parameter in model.guide.parameters():
            parameter.normal_(0, 0.5)
    lightness = torch.rand(1, 1, 16, 16) * 2 - 1
    sample = model.sample(lightness, temperature=0.0)[0, 0]
    colour = model.guide.predict_ab(model.conditioning_net(lightness), 1.0)[0]
    assert colour.abs().max() > 0.01  # a colour, not gray
    torch.testing.assert_close(sample, colour)


def test_a_guided_run_trains_from_the_pretrained_head_and_its_release_reloads(tmp_path, photo_folder):
    pretrain = tmp_path / "pretrain"
    head_level = ["--set", "pretrain.head_level=1", "--set", "pretrain.head_hidden_channels=8"]
    assert pretrain_pipeline.main(["--config", DEBUG, "--data", str(photo_folder), "--out", str(pretrain),
                                   *head_level]) == 0  # fmt: skip
    run = tmp_path / "flow"
    argv = ["--config", DEBUG, "--data", str(photo_folder), "--out", str(run), "--set", "train.steps=2", *head_level,
            "--set", "model.guide={hidden_channels: 8, level: 1}",
            "--set", f"train.pretrained_conditioning={pretrain / 'backbone.safetensors'}",
            "--set", "train.freeze_conditioning_steps=-1"]  # fmt: skip
    assert train_pipeline.main(argv) == 0
    model = Colorizer.from_pretrained(run / "release")
    baseline = load_file(pretrain / "baseline.safetensors")
    for name, tensor in model.guide.state_dict().items():  # frozen throughout: the pretrained head as it was
        assert torch.equal(tensor, baseline[f"head.{name}"]), name
    assert model.config.guide == GuideConfig(hidden_channels=8, level=1)
    lightness = torch.rand(1, 1, 16, 16) * 2 - 1
    assert model.sample(lightness, num_samples=2).shape == (1, 2, 2, 8, 8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.guide={level: 0}"], "model.guide needs train.pretrained_conditioning"),
        (["model.guide={level: 1}", "train.pretrained_conditioning=x.safetensors"],
         "must be the head the pretraining trains"),
        (["model.guide={level: 3}"], "guide.level must name one of the flow's 3 levels"),
        (["model.guide={levels: 1}"], "unknown config key 'model.guide.levels'"),
    ],
)  # fmt: skip
def test_a_guide_that_does_not_fit_its_recipe_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Recipe, DEBUG, overrides)


def test_a_missing_pretrained_head_is_named(tmp_path):
    backbone = tmp_path / "backbone.safetensors"
    backbone.write_bytes(b"")
    recipe = load_config(Recipe, DEBUG, ["model.guide={level: 0}", f"train.pretrained_conditioning={backbone}"])
    from cinn.flow_training import pretrained_head

    with pytest.raises(FileNotFoundError, match="baseline.safetensors' .*does not exist"):
        pretrained_head(recipe.train.pretrained_conditioning)


def test_a_guided_model_exports_to_onnx_with_its_guide(tmp_path):
    pytest.importorskip("onnxruntime")
    from cinn.programs import export

    from cinn.loss import sample_latents
    from cinn.onnx import OnnxSampler

    model = guided_model(level=0).float()
    model.save_pretrained(tmp_path / "release")
    assert export.main(["--onnx", str(tmp_path / "graphs"), "--model", str(tmp_path / "release")]) == 0
    generator = torch.Generator().manual_seed(0)
    lightness = torch.rand(1, 1, 32, 16, generator=generator) * 2 - 1
    zs = sample_latents(model.latent_shapes(lightness), 3, 1.0, generator)
    with torch.no_grad():
        expected, expected_logdet = model.decode(zs, model.conditions(lightness))
        unguided, _ = model.flow.inverse(zs, model.conditions(lightness))
    ab, logdet = OnnxSampler(tmp_path / "graphs")(lightness, zs)
    assert (expected - unguided).abs().max() > 0.01  # the guide moved the colours, and the graph with them
    torch.testing.assert_close(ab, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logdet, expected_logdet, atol=1e-3, rtol=1e-5)
