"""The README's picture of the default model: for each photo, its gray input, the truth, then samples.

Example (the README's grid: one test photo per category, never trained on):
    python docs/make_model_grid.py --data photos/kit/test --out docs/default_model_grid.jpg --n 6 --photos \\
        kphotoalbum__jesper.jpg hugin__800px-C_Marchi-GrandCentral-adj.jpg gimp__taj_orig.png \\
        gimp__apple-orchard-truck-from-camera.jpg gimp__duck_orig.png gimp__kvitveis-orig.png \\
        kphotoalbum__skagen.jpg qtwebengine5__pizza.jpg
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from cinn.programs.cli import user_errors_exit
from PIL import Image, ImageDraw

from cinn import DEFAULT_MODEL, Colorizer
from cinn.images import load_rgb

TILE_HEIGHT, LABEL_HEIGHT, GAP = 160, 18, 4


def tile(image: Image.Image, width: int | None = None) -> Image.Image:
    """The image at the tile height, centre-cropped to ``width`` if given (rows line up)."""
    image = image.convert("RGB")
    scaled = image.resize((max(1, round(image.width * TILE_HEIGHT / image.height)), TILE_HEIGHT), Image.LANCZOS)
    if width is None or scaled.width <= width:
        return scaled
    left = (scaled.width - width) // 2
    return scaled.crop((left, 0, left + width, TILE_HEIGHT))


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, required=True, help="folder holding the photos (and categories.tsv)")
    parser.add_argument("--photos", nargs="+", required=True, help="file names inside --data, one row each")
    parser.add_argument("--n", type=int, default=6, help="samples per photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile-width", type=int, default=220, help="crop every tile to this width")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    categories = {}
    if (args.data / "categories.tsv").is_file():
        rows = (line.split("\t") for line in (args.data / "categories.tsv").read_text().splitlines())
        categories = {row[0]: row[1] for row in rows if len(row) == 2 and not row[0].startswith("#")}
    model = Colorizer.from_pretrained(args.model)
    rows = []
    for name in args.photos:
        photo = load_rgb(args.data / name)
        samples = model.colorize(photo, args.n, generator=torch.Generator().manual_seed(args.seed))
        label = f"{categories.get(name, '')}: {name}".strip(": ")
        rows.append((label, [tile(photo.convert("L"), args.tile_width), tile(photo, args.tile_width)]
                     + [tile(sample, args.tile_width) for sample in samples]))  # fmt: skip
    width = max(sum(image.width + GAP for image in images) for _, images in rows)
    sheet = Image.new("RGB", (width, len(rows) * (TILE_HEIGHT + LABEL_HEIGHT + GAP)), "white")
    draw = ImageDraw.Draw(sheet)
    for number, (label, images) in enumerate(rows):
        top = number * (TILE_HEIGHT + LABEL_HEIGHT + GAP)
        captions = ["gray input", "true colours"] + [f"sample {index + 1}" for index in range(args.n)]
        left = 0
        for image, caption in zip(images, captions, strict=True):
            sheet.paste(image, (left, top + LABEL_HEIGHT))
            draw.text((left + 2, top + 3), caption if left else f"{label}", fill="black")
            left += image.width + GAP
    sheet.save(args.out, quality=90)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
