"""Where the time of ``python pipelines/colorize.py photo.png --n 8`` goes, today and at a baseline commit.

Both code paths run in this process, interleaved (baseline, current, baseline, ...), each stage the
median of the repeats; the baseline's inference modules are taken from git (``--baseline``), so the
comparison needs no second checkout. Whole commands run as subprocesses: the baseline from a
``git archive`` of its commit, the current one from this work tree with the torch backend and with
``--backend onnx`` on the graphs ``export.py --onnx`` writes (exported here, into a scratch folder).
The ONNX path is also checked against torch on real photos: the same latents, the colours after
recombination compared in Lab units, the written bytes compared.

    python benchmarks/colorize_stages.py --photos photos/kit/test --out benchmarks/results/colorize_stages.json
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cinn import DEFAULT_MODEL, Colorizer
from cinn import inference as current
from cinn.images import list_images, load_rgb_and_alpha

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "4016a97"  # main before issue 16


def baseline_tree(commit: str, folder: Path) -> Path:
    """The repository at ``commit`` in ``folder``, laid out as the installed package (cinn.programs, ...)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    for name, source in (("programs", "pipelines"), ("conditioning_nets", "conditioning_nets"), ("recipes", "configs")):
        (folder / "cinn" / name).symlink_to(folder / source)
    return folder


def baseline_inference(tree: Path):
    """The baseline's ``cinn.inference`` (with its color, upsample and images modules), as a separate module."""
    modules = {}
    for name in ("color", "upsample", "images", "inference"):
        text = (tree / "cinn" / f"{name}.py").read_text()
        for other in modules:
            text = text.replace(f"from cinn.{other} import", f"from baseline_{other} import")
        module = type(sys)(f"baseline_{name}")
        sys.modules[module.__name__] = module
        exec(compile(text, str(tree / "cinn" / f"{name}.py"), "exec"), module.__dict__)
        modules[name] = module
    return modules["inference"]


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def stages(model: Colorizer, path: Path, module, baseline: bool, level: int) -> dict[str, float]:
    """Seconds of each stage of colorizing one photo file into 8 PNGs + a grid (in memory)."""
    seconds = {}
    (rgb, _), seconds["decode"] = timed(load_rgb_and_alpha, path)
    device = torch.device("cpu")
    prepared, seconds["working-size Lab + full-res L"] = timed(module.prepare_photo, rgb, 64, model.input_multiple,
                                                               device)  # fmt: skip
    # The baseline commit's prepare_photo returned (full L, L, ab, alpha, has colour).
    full_lightness, lightness, alpha = (prepared[0], prepared[1], prepared[3] if baseline else prepared[2])
    with torch.no_grad():
        conditions, seconds["conditioning net"] = timed(model.conditions, lightness)
        zs = [torch.randn(8, *shape) * model.config.temperature for shape in model.latent_shapes(lightness)]
        (ab, _), seconds["flow inverse (8 samples)"] = timed(model.decode, zs, conditions)
    if baseline:
        seconds.update({"guided upsampling": 0.0, "gamut": 0.0, "Lab to RGB bytes": 0.0})
        images = []
        for sample in ab:
            full_ab, spent = timed(module.guided_upsample, sample[None], full_lightness)
            seconds["guided upsampling"] += spent
            lab = torch.cat([module.denormalize_lightness(full_lightness), module.denormalize_ab(full_ab)], dim=1)
            fitted, spent = timed(module.fit_to_gamut, lab)
            seconds["gamut"] += spent
            image, spent = timed(lambda fitted=fitted: module.to_pil(module.lab_to_rgb(fitted)[0], alpha))
            seconds["Lab to RGB bytes"] += spent
            images.append(image)
    else:
        images, seconds["recombination (upsampling + gamut + Lab to RGB, strips)"] = timed(
            module.recombine, ab, full_lightness, alpha
        )
    from cinn.programs.colorize import grid

    pictures, seconds["grid"] = timed(lambda: [*images, grid([rgb.convert("L"), *images])])
    _, seconds[f"PNG encoding (level {level})"] = timed(
        lambda: [picture.save(io.BytesIO(), format="PNG", compress_level=level) for picture in pictures]
    )
    seconds["total"] = sum(seconds.values())
    return seconds


def median_stages(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def command_seconds(tree: Path | None, script: Path, inputs: list[str], out: Path, extra: tuple = ()) -> float:
    """Wall-clock seconds of one colorize.py command in a fresh process (start-up included); with ``tree``,
    the package is imported from there instead of from the (editable) installation."""
    arguments = [*inputs, "--n", "8", "--seed", "0", "--out", str(out), "--overwrite", *extra]
    if tree is None:
        command = [sys.executable, str(script), *arguments]
    else:
        launcher = (
            "import runpy, sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]\n"
            f"sys.path.insert(0, {str(tree)!r}); sys.argv = sys.argv[1:]\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n"
        )
        command = [sys.executable, "-c", launcher, str(script), *arguments]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def photo_folder(source: Path, folder: Path, count: int, size: tuple[int, int]) -> list[str]:
    """``count`` of ``source``'s photos cropped to the aspect ratio of ``size`` and resized to it, as JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, path in enumerate(list_images(source)[:count]):
        image = load_rgb_and_alpha(path)[0]
        scale = max(size[0] / image.width, size[1] / image.height)
        image = image.resize((max(size[0], round(image.width * scale)), max(size[1], round(image.height * scale))))
        image = image.crop((0, 0, *size))
        paths.append(str(folder / f"photo_{index:02d}.jpg"))
        image.save(paths[-1], quality=92)
    return paths


def png_levels(image: Image.Image) -> list[dict]:
    """Seconds and bytes of one PNG at each of Pillow's zlib levels."""
    rows = []
    for level in (0, 1, 3, 6, 9):
        buffer = io.BytesIO()
        _, seconds = timed(lambda level=level, buffer=buffer: image.save(buffer, format="PNG", compress_level=level))
        rows.append({"level": level, "seconds": seconds, "bytes": buffer.tell()})
    return rows


def onnx_agreement(model: Colorizer, graphs: Path, paths: list[str]) -> list[dict]:
    """The torch path and the ONNX graphs on the same latents, per photo: the largest difference of the
    full-size ab after recombination (before the gamut fit, Lab units), of L, and of the written bytes."""
    from cinn.onnx_colorizer import RECOMBINE_FILE, OnnxColorizer
    from cinn.upsample import guided_upsample

    onnx, rows = OnnxColorizer(graphs), []
    for path in paths:
        image = load_rgb_and_alpha(path)[0]
        full, lightness, _, _, _ = current.prepare_photo(image, 64, model.input_multiple, torch.device("cpu"))
        zs = [torch.randn(8, *shape, generator=torch.Generator().manual_seed(0)) * model.config.temperature
              for shape in model.latent_shapes(lightness)]  # fmt: skip
        with torch.no_grad():
            ab, _ = model.sample_with_likelihood(lightness, 8, zs=zs)
        full_ab = guided_upsample(ab[0], full) * 110
        ab_difference = lightness_difference = 0.0
        for index in range(8):
            _, _, lab = onnx.sessions[RECOMBINE_FILE].run(None, {"ab": ab[0, index : index + 1].numpy(),
                                                                  "lightness": full.numpy()})  # fmt: skip
            ab_difference = max(ab_difference, float(np.abs(lab[1:] - full_ab[index].numpy()).max()))
            lightness_difference = max(
                lightness_difference, float(np.abs(lab[0] - (full[0, 0].numpy() + 1) * 50).max())
            )
        ours = onnx.colorize_photo(image, 8, zs=[z.numpy() for z in zs]).images
        theirs = current.recombine(ab[0], full, None)
        pairs = zip(ours, theirs, strict=True)
        differences = [np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max(axis=-1) for a, b in pairs]
        rows.append({"photo": Path(path).name, "size": list(image.size), "max_ab_difference": ab_difference,
                     "max_lightness_difference": lightness_difference,
                     "max_byte_difference": int(max(d.max() for d in differences)),
                     "pixels_differing_by_more_than_one": int(sum((d > 1).sum() for d in differences)),
                     "pixels": 8 * image.width * image.height})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="folder of real photos (>= 20 for the folder run)")
    parser.add_argument("--baseline", default=BASELINE, help=f"commit to compare with (default {BASELINE})")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder-size", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    results: dict = {"baseline": args.baseline, "torch_threads": torch.get_num_threads(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        tree = baseline_tree(args.baseline, scratch / "baseline")
        old = baseline_inference(tree)
        model = Colorizer.from_pretrained(DEFAULT_MODEL)
        photo = scratch / "photo.png"
        square = load_rgb_and_alpha(list_images(args.photos)[0])[0]
        side = min(square.size)
        square.crop((0, 0, side, side)).resize((512, 512), Image.Resampling.BICUBIC).save(photo)
        runs = {"baseline": [], "current": []}
        for _ in range(args.repeats + 1):  # the first round warms up
            runs["baseline"].append(stages(model, photo, old, True, 6))
            runs["current"].append(stages(model, photo, current, False, 1))
        results["stages_512"] = {name: median_stages(found[1:]) for name, found in runs.items()}
        print(json.dumps(results["stages_512"], indent=1), flush=True)
        results["png_levels_512"] = png_levels(Image.open(photo).convert("RGB"))
        from cinn.onnx import export_onnx

        graphs = scratch / "graphs"
        _, results["onnx_export_seconds"] = timed(export_onnx, model, graphs)
        onnx = ("--backend", "onnx", "--onnx-dir", str(graphs))
        results["onnx_against_torch"] = onnx_agreement(model, graphs, [str(photo), *list_images(args.photos)[1:3]])
        print(json.dumps(results["onnx_against_torch"], indent=1), flush=True)
        commands = {"baseline": [], "current": [], "current, --backend onnx": []}
        current_script = ROOT / "pipelines" / "colorize.py"
        for _ in range(3):
            commands["baseline"].append(command_seconds(tree, tree / "pipelines" / "colorize.py", [str(photo)],
                                                        scratch / "out_old"))  # fmt: skip
            commands["current"].append(command_seconds(None, current_script, [str(photo)], scratch / "out_new"))
            commands["current, --backend onnx"].append(
                command_seconds(None, current_script, [str(photo)], scratch / "out_onnx", onnx)
            )
        results["command_512"] = {name: statistics.median(found) for name, found in commands.items()}
        print(json.dumps(results["command_512"]), flush=True)
        folder = photo_folder(args.photos, scratch / "folder", args.folder_size, (480, 360))
        results["folder"] = {"photos": len(folder), "size": "480x360"}
        for name, python_path, script, extra in (("baseline", tree, tree / "pipelines" / "colorize.py", ()),
                                                 ("current", None, current_script, ()),
                                                 ("current, --backend onnx", None, current_script, onnx)):  # fmt: skip
            target = scratch / f"folder_{len(results['folder'])}"
            seconds = command_seconds(python_path, script, [str(scratch / "folder")], target, extra)
            # The same program on the folder's first photo alone: the difference is the other photos' time,
            # start-up (imports, model) excluded.
            one = command_seconds(python_path, script, [folder[0]], scratch / f"folder_one_{name}", extra)
            results["folder"][name] = {"seconds": seconds, "per_photo": seconds / len(folder), "one_photo": one,
                                       "per_photo_after_start_up": (seconds - one) / (len(folder) - 1)}  # fmt: skip
        same = [np.array_equal(np.asarray(Image.open(scratch / "out_old" / f"photo_{kind}.png")),
                               np.asarray(Image.open(scratch / "out_new" / f"photo_{kind}.png")))
                for kind in [f"color_{index:02d}" for index in range(1, 9)]]  # fmt: skip
        results["identical_outputs_of_8"] = sum(same)
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    importlib.import_module("cinn.programs.colorize")  # fail early if the package is not installed
    main()
