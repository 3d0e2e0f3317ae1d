"""Export a model release for deployment elsewhere: its sampling path as an ONNX graph.

The graph (conditioning net + flow inverse) runs with onnxruntime, in a web page, on a phone or from
C++; ``sampling.json`` beside it says what goes in and out. Needs ``pip install 'cinn-colorization[onnx]'``.

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
    parser.add_argument("--onnx", type=Path, required=True, metavar="DIR", help="folder for sampler.onnx")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model release directory (default: shipped)")
    args = parser.parse_args(argv)
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise UsageError("exporting to ONNX needs the onnx package: pip install 'cinn-colorization[onnx]'") from None
    from cinn.colorizer import Colorizer
    from cinn.onnx import export_onnx

    path = export_onnx(Colorizer.from_pretrained(args.model), args.onnx)
    print(f"wrote {path} and {path.with_name('sampling.json').name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
