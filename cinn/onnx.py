"""The sampling path (conditioning net + flow inverse) as an ONNX graph, and running it with onnxruntime.

The graph takes the working-size lightness ``(1, 1, Hl, Wl)`` and one latent per flow level
``(N, C_k, H_k, W_k)`` and returns ab ``(N, 2, Ha, Wa)`` and ``logdet (N,)`` of the inverse pass, for
any photo size the model accepts (sides multiples of ``Colorizer.input_multiple``) and any N. The
lightness and latents are made exactly as ``Colorizer`` makes them (``cinn.inference``,
``cinn.loss.sample_latents``), so everything around the graph stays the same; ``sampling.json``
beside it says how (shapes as divisors of the lightness size) for a program in another language.
Needs the optional packages ``onnx`` (export) and ``onnxruntime`` (running): ``pip install
cinn-colorization[onnx]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from cinn.errors import ReleaseError, UsageError

GRAPH_FILE, SHAPES_FILE = "sampler.onnx", "sampling.json"


class SamplingPath(nn.Module):
    """``(lightness, *zs) -> (ab, logdet)``: what the ONNX graph computes, as a module to export."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, lightness: torch.Tensor, *zs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.flow.inverse(list(zs), self.model.conditions(lightness))


def export_onnx(model: nn.Module, directory: str | Path, example_side: int | None = None) -> Path:
    """Writes ``sampler.onnx`` and ``sampling.json`` for a ``Colorizer`` into ``directory``.

    Args:
        example_side: side of the square lightness traced (default: the model's training size).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    side = example_side or model.config.lightness_size
    lightness = torch.zeros(1, 1, side, side)
    shapes = model.latent_shapes(lightness)
    zs = [torch.zeros(2, *shape) for shape in shapes]
    names = [f"z{level}" for level in range(len(zs))]
    dynamic = {"lightness": {2: "height", 3: "width"}, "ab": {0: "samples"}, "logdet": {0: "samples"}}
    for name, shape in zip(names, shapes, strict=True):
        divisor = side // shape[1]
        dynamic[name] = {0: "samples", 2: f"height_{divisor}", 3: f"width_{divisor}"}
    with torch.no_grad():
        torch.onnx.export(
            SamplingPath(model.eval()), (lightness, *zs), directory / GRAPH_FILE, input_names=["lightness", *names],
            output_names=["ab", "logdet"], dynamic_axes=dynamic, opset_version=17, dynamo=False,
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
    }
    (directory / SHAPES_FILE).write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
    return directory / GRAPH_FILE


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
