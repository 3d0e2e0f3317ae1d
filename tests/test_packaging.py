"""The package as a user installs it: one namespace, layers that point one way, a wheel that runs."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each repository folder lives in the installed package (pyproject's package-dir).
PACKAGES = {"cinn": "cinn", "conditioning_nets": "cinn.conditioning_nets", "pipelines": "cinn.programs"}

# Bottom to top. A module may import (at module level) only from its own layer or below.
LAYERS = [
    {"cinn.errors", "cinn.config", "cinn.color", "cinn.limits", "cinn.devices", "cinn.files", "cinn.loss",
     "cinn.upsample", "cinn.gamut"},
    {"cinn.images", "cinn.pixels", "cinn.onnx_colorizer", "cinn.blocks", "cinn.conditioning_nets", "cinn.fid"},
    {"cinn.glow", "cinn.inference", "cinn.onnx", "cinn.metrics", "cinn.data", "cinn.shards"},
    {"cinn.recipe"},
    {"cinn.colorizer", "cinn"},
    {"cinn.training", "cinn.run_loop", "cinn.flow_training"},
    {"cinn.programs", "cinn.recipes"},
]  # fmt: skip


def layer_of(module: str) -> int:
    for depth in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:depth])
        for index, layer in enumerate(LAYERS):
            if prefix in layer:
                return index
    raise AssertionError(f"{module} is in no layer of tests/test_packaging.py: place it")


def package_modules() -> dict[str, Path]:
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            modules[name] = path
    return modules


def module_level_imports(path: Path) -> set[str]:
    """The project modules a file imports when it is imported (not inside functions or TYPE_CHECKING)."""
    imported = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return {name for name in imported if name.split(".")[0] in ("cinn", "conditioning_nets", "pipelines")}


def test_every_import_points_down_the_layers():
    modules = package_modules()
    assert {"cinn.colorizer", "cinn.conditioning_nets.unet", "cinn.programs.colorize"} <= set(modules)
    upward = []
    for module, path in modules.items():
        for imported in module_level_imports(path):
            assert imported.split(".")[0] == "cinn", f"{path}: imports {imported}, not under the cinn namespace"
            if layer_of(imported) > layer_of(module):
                upward.append(f"{module} imports {imported}")
    assert not upward, upward


def test_loading_a_release_imports_the_model_and_nothing_of_training():
    script = (
        "import json, sys\n"
        "from cinn import DEFAULT_MODEL, Colorizer\n"
        "Colorizer.from_pretrained(DEFAULT_MODEL)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "cinn.colorizer" in loaded
    heavy = {"cinn.data", "cinn.training", "cinn.fid", "torchvision", "matplotlib", "gradio", "tensorboard"}
    assert not heavy & loaded, sorted(heavy & loaded)
    assert not [name for name in loaded if name.startswith("cinn.programs")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=out)
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("cinn_colorization-*.whl")
    return built


def test_the_wheel_holds_one_namespace_with_recipes_and_the_default_model(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"cinn", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                                                       + ".dist-info"}  # fmt: skip
    for expected in ("cinn/py.typed", "cinn/recipes/default.yaml", "cinn/recipes/photo_kit.txt",
                     "cinn/pretrained/default/model.safetensors", "cinn/pretrained/default/config.yaml",
                     "cinn/programs/colorize.py", "cinn/conditioning_nets/unet.py"):  # fmt: skip
        assert expected in names
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info/"
                                               "entry_points.txt").decode()  # fmt: skip
    for command in ("cinn-colorize", "cinn-train", "cinn-pretrain", "cinn-evaluate", "cinn-app", "cinn-make-kit",
                    "cinn-export", "cinn-make-shards"):  # fmt: skip
        assert f"{command} = cinn.programs." in entry_points


def test_the_installed_wheel_colorizes_without_the_repository(wheel, tmp_path):
    """Installed into its own environment (its dependencies and pip from this one), run from elsewhere."""
    environment = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=True).create(environment)
    python, bin_dir = environment / "bin" / "python", environment / "bin"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)

    where = run(str(python), "-c", "import cinn, cinn.programs.colorize as c; print(cinn.__file__, c.__file__)")
    assert where.returncode == 0, where.stderr
    assert str(REPO) not in where.stdout and str(environment) in where.stdout, where.stdout

    import skimage.data

    photo = Path(skimage.data.data_dir) / "camera.png"
    colorize = run(str(bin_dir / "cinn-colorize"), str(photo), "--n", "2", "--seed", "0", "--out", "out")
    assert colorize.returncode == 0, colorize.stderr
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == ["camera_color_01.png", "camera_color_02.png", "camera_grid.png"]

    from PIL import Image

    with Image.open(tmp_path / "out" / "camera_color_01.png") as image:
        assert image.mode == "RGB" and image.size == (512, 512)

    recipe = run(str(bin_dir / "cinn-train"), "--config", "default", "--help")
    assert recipe.returncode == 0 and "--config" in recipe.stdout, recipe.stderr
    found = run(str(python), "-c", "from cinn.config import find_recipe; print(find_recipe('default'))")
    assert found.stdout.strip().startswith(str(environment)) and found.stdout.strip().endswith("recipes/default.yaml")
    unknown = run(str(bin_dir / "cinn-train"), "--config", "nosuch", "--data", "photos", "--out", "run")
    assert unknown.returncode == 2, unknown.stderr
    assert "shipped recipes: debug, default, imagenet, small, unet" in unknown.stderr, unknown.stderr
    version = run(str(bin_dir / "cinn-colorize"), "--version")
    assert version.returncode == 0 and version.stdout.split()[-1].rstrip(")") == wheel.name.split("-")[1]
    check = run(str(python), "-m", "pip", "check")
    assert check.returncode == 0, check.stdout + check.stderr
