"""Export a model release for deployment elsewhere: its colorization path as ONNX graphs.

The model's graph (conditioning net + flow inverse, ``sampler.onnx``) runs with onnxruntime, in a web
page, on a phone or from C++; ``sampling.json`` beside it says what goes in and out. Three more graphs
hold the lightness, the upsampling to full size and the gamut fit (``cinn.onnx``), so that
``colorize.py --backend onnx --onnx-dir DIR`` colorizes with them and without torch. Exporting takes a
minute or two. Needs ``pip install 'cinn-colorization[onnx]'``.

Examples:
    python pipelines/export.py --onnx exported/
    python pipelines/export.py --onnx exported/ --model runs/mine/release
"""

from __future__ import annotations

import sys
from pathlib import Path

from cinn.programs.cli import documented_parser, user_errors_exit

from cinn import DEFAULT_MODEL
from cinn.errors import UsageError


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = documented_parser(__doc__)
    parser.add_argument("--onnx", type=Path, required=True, metavar="DIR", help="folder for the graphs")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model release directory (default: shipped)")
    parser.add_argument("--overwrite", action="store_true", help="replace graphs already in DIR")
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise UsageError("exporting to ONNX needs the onnx package: pip install 'cinn-colorization[onnx]'") from None
    from cinn.colorizer import Colorizer
    from cinn.onnx import export_onnx

    path = export_onnx(Colorizer.from_pretrained(args.model), args.onnx, overwrite=args.overwrite)
    names = ", ".join(sorted(file.name for file in path.parent.glob("*.onnx")))
    print(f"wrote {names} and sampling.json into {path.parent}; colorize without torch with\n"
          f"  python pipelines/colorize.py PHOTO --backend onnx --onnx-dir {path.parent}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
