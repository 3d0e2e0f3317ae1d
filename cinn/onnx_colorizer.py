"""Colorizing with a release's exported ONNX graphs alone: numpy, Pillow and onnxruntime, no torch.

``pipelines/export.py --onnx DIR`` writes the graphs (``cinn.onnx``); ``OnnxColorizer(DIR)`` runs them
as ``Colorizer.colorize_photo`` runs the model: the photo's lightness at full size and at the working
size (``prepare.onnx``), latents drawn with numpy, the conditioning net and the flow inverse
(``sampler.onnx``), then for each sample the guided upsampling to full size, sRGB and the colours
outside the gamut fitted into it (``recombine.onnx``, ``gamut.onnx``). Every number is computed by a
graph traced from the torch code; this module only moves arrays between them, so it holds no colour
maths of its own. A program using it starts without torch, whose import alone takes seconds
(``benchmarks/README.md``); ``colorize.py --backend onnx`` is one.

Its latents come from numpy's generator, so a seed gives other samples than the torch backend's
(from the same distribution); given the same latents, the two agree to float rounding except where a
colour's path from grey leaves the gamut and re-enters it, where the graph's search keeps the first
exit and torch's closed form may keep a later point (``cinn.gamut``; tests/test_onnx.py).
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cinn.errors import ReleaseError, UsageError
from cinn.images import rgb_and_alpha
from cinn.limits import MAX_WORKING_SIDE, PhotoLimits, working_size

SAMPLER_FILE, SHAPES_FILE = "sampler.onnx", "sampling.json"
PREPARE_FILE, RECOMBINE_FILE, GAMUT_FILE = "prepare.onnx", "recombine.onnx", "gamut.onnx"
GRAPH_FILES = (SAMPLER_FILE, PREPARE_FILE, RECOMBINE_FILE, GAMUT_FILE)


@dataclass
class OnnxColorization:
    """What ``OnnxColorizer.colorize_photo`` returns; the fields of ``cinn.inference.Colorization`` that
    a program reads (the likelihood of a photo's own colours needs the flow's forward pass: torch)."""

    images: list[Image.Image]
    bits_per_dim: list[float]
    original_bits_per_dim: None = None
    samples_ab: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 0, 0), np.float32))


class OnnxColorizer:
    """A release's exported graphs on onnxruntime's CPU provider.

    Args:
        directory: a folder written by ``pipelines/export.py --onnx``.
        threads: onnxruntime's intra-op threads per graph (default: its own choice, every core).

    Raises:
        UsageError: onnxruntime is not installed.
        ReleaseError: a graph or ``sampling.json`` is missing or unreadable.
    """

    def __init__(self, directory: str | Path, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise UsageError("the onnx backend needs onnxruntime: pip install 'cinn-colorization[onnx]'") from None
        directory = Path(directory)
        missing = [name for name in (*GRAPH_FILES, SHAPES_FILE) if not (directory / name).is_file()]
        if missing:
            export = f"python pipelines/export.py --onnx {directory}"
            raise ReleaseError(f"'{directory}' holds no {missing[0]}: write the graphs with {export}")
        try:
            self.shapes = json.loads((directory / SHAPES_FILE).read_text(encoding="utf-8"))
            self.temperature = float(self.shapes["temperature"])
            self.input_multiple = int(self.shapes["lightness_multiple"])
            self.lightness_size = int(self.shapes["lightness_size"])
            self.ab_factor = self.lightness_size // int(self.shapes["ab_size"])
        except (ValueError, KeyError, TypeError) as error:
            raise ReleaseError(f"'{directory / SHAPES_FILE}' is not what export.py writes ({error!r})") from None
        options = onnxruntime.SessionOptions()
        # onnxruntime's threads spin between runs by default: here they would take the cores from the
        # PNG encoding and the other graphs that run in between.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads

        def load(name: str):
            return onnxruntime.InferenceSession(str(directory / name), options, providers=["CPUExecutionProvider"])

        try:  # side by side: optimising the sampler's graph is most of the start-up, and releases the GIL
            with ThreadPoolExecutor(len(GRAPH_FILES)) as loaders:
                self.sessions = dict(zip(GRAPH_FILES, loaders.map(load, GRAPH_FILES), strict=True))
        except Exception as error:  # onnxruntime raises its own exception types for a damaged graph
            raise ReleaseError(f"a graph in '{directory}' cannot be loaded ({str(error).splitlines()[0]})") from None

    def sampling_temperature(self, temperature: float | None) -> float:
        """``temperature``, or the release's default if None; a negative or non-finite one is an error."""
        temperature = self.temperature if temperature is None else temperature
        if not math.isfinite(temperature) or temperature < 0:
            raise UsageError(f"the temperature must be a finite number >= 0, got {temperature}")
        return temperature

    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """Per-level latent (C, H, W) for a working lightness of ``height`` x ``width``."""
        return [
            (latent["channels"], height // latent["divisor"], width // latent["divisor"])
            for latent in self.shapes["latents"]
        ]

    def colorize_photo(
        self,
        image: Image.Image,
        num_samples: int = 8,
        temperature: float | None = None,
        generator: np.random.Generator | None = None,
        working_side: int | None = None,
        limits: PhotoLimits | None = None,
        zs: list[np.ndarray] | None = None,
    ) -> OnnxColorization:
        """Colorizes a photo at its full resolution, as ``Colorizer.colorize_photo`` (without the
        likelihood of the photo's own colours).

        Args:
            generator: numpy's, for reproducible latents.
            zs: per-level latents (N, C, H, W) to decode instead of drawing them (temperature ignored).

        Raises:
            UsageError: a photo, number of samples, temperature or working side beyond what is served.
        """
        limits = limits or PhotoLimits()
        problem = limits.size_problem(*image.size)
        if problem is not None:
            raise UsageError(f"this photo cannot be colorized: {problem}")
        limits.check_samples(num_samples)
        side = working_side or self.lightness_size
        if not self.input_multiple <= side <= MAX_WORKING_SIDE:
            raise UsageError(
                f"the working side must be between {self.input_multiple} and {MAX_WORKING_SIDE}, got {side}"
            )
        temperature = self.sampling_temperature(temperature)
        rgb, alpha = rgb_and_alpha(image)
        pixels = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)[None] / np.float32(255.0)
        height, width = working_size(pixels.shape[2], pixels.shape[3], side, self.input_multiple)
        full_lightness, lightness = self.sessions[PREPARE_FILE].run(
            None, {"rgb": pixels, "working": np.zeros((height, width), np.float32)}
        )
        if zs is None:
            count = 1 if temperature == 0 else num_samples
            generator = generator if generator is not None else np.random.default_rng()
            zs = [
                (generator.standard_normal((count, *shape), dtype=np.float32) * np.float32(temperature))
                for shape in self.latent_shapes(height, width)
            ]
        feeds = {"lightness": lightness, **{f"z{level}": z for level, z in enumerate(zs)}}
        ab, _, bits = self.sessions[SAMPLER_FILE].run(None, feeds)
        if not np.isfinite(ab).all():
            raise RuntimeError("the model produced non-finite colours; its weights or settings are broken")
        images = [Image.fromarray(pixels) for pixels in self.recombine(ab, full_lightness)]
        if alpha is not None:
            for picture in images:
                picture.putalpha(alpha)
        return OnnxColorization(images, [float(value) for value in bits], samples_ab=ab)

    def recombine(self, ab: np.ndarray, full_lightness: np.ndarray) -> list[np.ndarray]:
        """Samples' ab (N, 2, h, w) + the photo's lightness (1, 1, H, W) -> N full-size (H, W, 3) uint8.

        Each sample is recombined alone (its intermediates are a few times the photo's size); the
        colours outside the gamut of all of them are fitted in one call, which costs mostly per call.
        """
        images, outside_colours, places = [], [], []
        for sample in ab:
            pixels, outside, lab = self.sessions[RECOMBINE_FILE].run(
                None, {"ab": sample[None], "lightness": full_lightness}
            )
            rows, columns = np.nonzero(outside)
            images.append(pixels)
            outside_colours.append(lab[:, rows, columns])
            places.append((rows, columns))
        colours = np.concatenate(outside_colours, axis=1)
        if colours.shape[1]:
            fitted = self.sessions[GAMUT_FILE].run(None, {"lab": colours})[0]
            start = 0
            for pixels, (rows, columns) in zip(images, places, strict=True):
                pixels[rows, columns] = fitted[start : start + len(rows)]
                start += len(rows)
        return images
