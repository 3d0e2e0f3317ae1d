"""A release's colorization path as ONNX graphs, and running the sampling graph with onnxruntime.

``sampler.onnx`` is the model: it takes the working-size lightness ``(1, 1, Hl, Wl)`` and one latent
per flow level ``(N, C_k, H_k, W_k)`` and returns ab ``(N, 2, Ha, Wa)``, ``logdet (N,)`` of the inverse
pass and each sample's ``bits_per_dim (N,)``, for any photo size the model accepts (sides multiples
of ``Colorizer.input_multiple``) and any N. ``sampling.json`` beside it says how the inputs are made
(shapes as divisors of the lightness size) for a program in another language.

Three more graphs hold what ``cinn.inference`` does around the model, traced from the same torch
code, so that a program needs neither torch nor a second copy of the colour maths
(``cinn.onnx_colorizer`` is one, in numpy): ``prepare.onnx`` (the photo's sRGB -> its normalised
lightness at full size and at the working size), ``recombine.onnx`` (one sample's ab + the full-size
lightness -> sRGB bytes, the mask of colours outside the sRGB gamut and their Lab) and
``gamut.onnx`` (those colours -> their bytes fitted into the gamut at constant L and hue, by the
search ``cinn.gamut.gamut_scale_bisection``, where torch solves cubics).
Needs the optional packages ``onnx`` (export) and ``onnxruntime`` (running): ``pip install
cinn-colorization[onnx]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from cinn.color import (
    denormalize_ab,
    denormalize_lightness,
    lab_to_linear_rgb,
    linear_to_srgb,
    normalize_lightness,
    rgb_to_lab,
)
from cinn.errors import ReleaseError, UsageError
from cinn.files import publish
from cinn.gamut import gamut_scale_bisection
from cinn.inference import in_srgb_gamut, srgb_bytes
from cinn.loss import bits_per_dim, negative_log_likelihood
from cinn.onnx_colorizer import GAMUT_FILE, PREPARE_FILE, RECOMBINE_FILE, SHAPES_FILE
from cinn.onnx_colorizer import SAMPLER_FILE as GRAPH_FILE
from cinn.pixels import reduce_rgb
from cinn.upsample import area_weights, guided_coefficients


class SamplingPath(nn.Module):
    """``(lightness, *zs) -> (ab, logdet, bits_per_dim)``: what the ONNX graph computes, as a module to export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, lightness: torch.Tensor, *zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ab, logdet = self.model.decode(list(zs), self.model.conditions(lightness))
        return ab, logdet, bits_per_dim(negative_log_likelihood(zs, -logdet), ab[0].numel())


class PreparationPath(nn.Module):
    """``(rgb (1, 3, H, W) in [0, 1], working (h, w)) -> (full lightness (1, 1, H, W), lightness (1, 1, h, w))``,
    normalised, as ``cinn.inference.prepare_photo`` makes them; ``working`` only carries the size."""

    def forward(self, rgb: torch.Tensor, working: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = normalize_lightness(rgb_to_lab(rgb)[:, :1])
        return full, normalize_lightness(rgb_to_lab(reduce_rgb(rgb, working.shape))[:, :1])


class RecombinationPath(nn.Module):
    """``(ab (1, 2, h, w), full lightness (1, 1, H, W)) -> (bytes (H, W, 3) uint8, outside (H, W), Lab (3, H, W))``:
    ``cinn.inference.recombine`` for one sample, whole rather than in strips, before the gamut fit."""

    def forward(self, ab: torch.Tensor, lightness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (height, width), (small_height, small_width) = lightness.shape[2:], ab.shape[2:]
        guide = area_weights(small_height, height) @ lightness @ area_weights(small_width, width).T
        slope, offset = guided_coefficients(ab, guide)
        upsample = partial(nn.functional.interpolate, size=(height, width), mode="bilinear", align_corners=False)
        ab_full = upsample(slope) * lightness + upsample(offset)
        lab = torch.cat([denormalize_lightness(lightness), denormalize_ab(ab_full)], dim=1)[0]
        rgb = linear_to_srgb(lab_to_linear_rgb(lab))
        return srgb_bytes(rgb), ~in_srgb_gamut(rgb), lab


class GamutPath(nn.Module):
    """``Lab (3, P) -> bytes (P, 3) uint8``: colours outside the sRGB gamut fitted into it at constant L and hue."""

    def forward(self, lab: torch.Tensor) -> torch.Tensor:
        scale = gamut_scale_bisection(lab)
        fitted = torch.cat([lab[:1], lab[1:] * scale])
        return srgb_bytes(linear_to_srgb(lab_to_linear_rgb(fitted[:, :, None]))[:, :, 0])


def export_onnx(
    model: nn.Module, directory: str | Path, example_side: int | None = None, overwrite: bool = False
) -> Path:
    """Writes ``sampler.onnx``, ``sampling.json`` and the graphs around the model (``recombination_writers``)
    for a ``Colorizer`` into ``directory``, all or none of them (``cinn.files.publish``).

    Args:
        example_side: side of the square lightness traced (default: the model's training size).
        overwrite: replace graphs already there (else ``FileExistsError``, and nothing is written).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    side = example_side or model.config.lightness_size
    lightness = torch.zeros(1, 1, side, side)
    shapes = model.latent_shapes(lightness)
    zs = [torch.zeros(2, *shape) for shape in shapes]
    names = [f"z{level}" for level in range(len(zs))]
    dynamic = {"lightness": {2: "height", 3: "width"}, "ab": {0: "samples"}, "logdet": {0: "samples"},
               "bits_per_dim": {0: "samples"}}  # fmt: skip
    for name, shape in zip(names, shapes, strict=True):
        divisor = side // shape[1]
        dynamic[name] = {0: "samples", 2: f"height_{divisor}", 3: f"width_{divisor}"}

    def write_sampler(path: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                SamplingPath(model.eval()), (lightness, *zs), path, input_names=["lightness", *names],
                output_names=["ab", "logdet", "bits_per_dim"], dynamic_axes=dynamic, opset_version=17, dynamo=False,
            )  # fmt: skip

    description = {
        "lightness": "(1, 1, H, W): L / 50 - 1 at the working size; H and W multiples of lightness_multiple",
        "lightness_multiple": model.input_multiple,
        "latents": [
            {"name": name, "channels": shape[0], "divisor": side // shape[1]}
            for name, shape in zip(names, shapes, strict=True)
        ],  # fmt: skip
        "temperature": model.config.temperature,
        "ab": "(N, 2, H / divisor, W / divisor) with the first latent's divisor: (a, b) / 110",
        "lightness_size": model.config.lightness_size,
        "ab_size": model.config.ab_size,
    }
    text = json.dumps(description, indent=1) + "\n"
    writers = {directory / GRAPH_FILE: write_sampler,
               directory / SHAPES_FILE: lambda path: path.write_text(text, encoding="utf-8"),
               **recombination_writers(directory)}  # fmt: skip
    existing = [path for path in writers if path.exists()]
    if existing and not overwrite:  # before the minutes of tracing; publish checks again when it moves them
        raise FileExistsError(f"'{existing[0]}' already exists (use --overwrite to replace it)")
    publish(writers, overwrite)
    return directory / GRAPH_FILE


def recombination_writers(directory: Path) -> dict[Path, Callable[[Path], None]]:
    """Writers of ``prepare.onnx``, ``recombine.onnx`` and ``gamut.onnx`` (the module docstring) in ``directory``.

    Traced by torch's dynamo exporter, the one that handles the antialiased reduction and sizes taken
    from the inputs' shapes; every side is dynamic.
    """
    side = torch.export.Dim
    height, width = side("height", min=2, max=1 << 16), side("width", min=2, max=1 << 16)
    small_height, small_width = side("small_height", min=2, max=1 << 12), side("small_width", min=2, max=1 << 12)
    rgb, working = torch.rand(1, 3, 96, 128), torch.zeros(48, 64)
    lightness, ab = torch.zeros(1, 1, 96, 128), torch.zeros(1, 2, 24, 32)
    graphs = (
        (PreparationPath(), (rgb, working), PREPARE_FILE, ["rgb", "working"], ["full_lightness", "lightness"],
         {"rgb": {2: height, 3: width}, "working": {0: small_height, 1: small_width}}),
        (RecombinationPath(), (ab, lightness), RECOMBINE_FILE, ["ab", "lightness"], ["bytes", "outside", "lab"],
         {"ab": {2: small_height, 3: small_width}, "lightness": {2: height, 3: width}}),
        (GamutPath(), (torch.tensor([[50.0, 90.0], [80.0, -90.0], [80.0, 90.0]]),), GAMUT_FILE, ["lab"], ["bytes"],
         {"lab": {1: side("colours", min=1, max=1 << 30)}}),
    )  # fmt: skip

    def writer(module, inputs, input_names, output_names, shapes) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            with torch.no_grad():
                program = torch.onnx.export(
                    module.eval(), inputs, input_names=input_names, output_names=output_names, dynamic_shapes=shapes,
                    dynamo=True, verbose=False,
                )  # fmt: skip
            program.save(str(path))

        return write

    return {directory / name: writer(module, inputs, *rest) for module, inputs, name, *rest in graphs}


class OnnxSampler:
    """Runs an exported ``sampler.onnx`` with onnxruntime on the CPU, as ``Colorizer.invert`` does."""

    def __init__(self, directory: str | Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise UsageError("the onnx backend needs onnxruntime: pip install 'cinn-colorization[onnx]'") from None
        path = Path(directory) / GRAPH_FILE
        if not path.is_file():
            raise ReleaseError(f"'{directory}' holds no {GRAPH_FILE} (write one with pipelines/export.py --onnx)")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [item.name for item in self.session.get_inputs()]

    def __call__(self, lightness: torch.Tensor, zs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = {
            name: tensor.detach().cpu().float().numpy()
            for name, tensor in zip(self.names, [lightness, *zs], strict=True)
        }
        ab, logdet = self.session.run(["ab", "logdet"], feeds)
        return torch.from_numpy(ab).to(lightness.device), torch.from_numpy(logdet).to(lightness.device)
