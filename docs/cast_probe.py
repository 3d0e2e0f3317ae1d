"""The model card's cast probe: what one tint over the whole picture (the cast) can buy a release.

On the centre crops of --data at the model's working resolution it prints, in Lab units:
1. how far apart the release's samples lie in cast (the std over samples of their mean ab) against
   how far the true cast lies from the guide's (the std over photos of ``mean(truth - guide)``);
2. a cast head fitted by multiple-choice learning on random crops of --fit-data: K casts and their
   weights, from the conditioning net's pooled maps, trained so that the nearest of the K casts
   lands on the truth's offset from the guide. The entropy of its weights against log K says how
   much of the cast the net can tell from the lightness; the best of the K casts around the guide
   (the guide's colours shifted by each) is the best-of-K a sampler of casts alone could reach;
3. the release's samples with one of those casts each, drawn by the head's weights and pulled
   towards their weighted mean by ``beta``: best-of-n, one sample and the cast error beside the
   samples alone and the all-gray baseline.

Example (the numbers of the model card):
    python docs/cast_probe.py --fit-data photos/kit/train --data photos/kit/val
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from cinn.programs.cli import user_errors_exit
from torch import nn

from cinn import DEFAULT_MODEL, Colorizer, metrics
from cinn.color import denormalize_ab
from cinn.data import ColorizationDataset, DatasetConfig
from cinn.images import list_images
from cinn.training import validation_loader

CAST_UNIT = 10.0  # Lab units per unit of the head's output: casts are tens of Lab units
WINNER_SHARE = 0.95  # relaxed multiple-choice learning: the nearest cast takes 95 % of the loss


def pooled(features: list[torch.Tensor]) -> torch.Tensor:
    """The conditioning net's maps, each reduced to its per-channel mean and std, and its global vector."""
    parts = []
    for feature in features:
        parts += [feature.mean(dim=(-2, -1)), feature.std(dim=(-2, -1))] if feature.dim() == 4 else [feature]
    return torch.cat(parts, dim=1)


@torch.no_grad()
def crops(model: Colorizer, folder: Path, train: bool, passes: int, n: int, temperature: float, seed: int) -> dict:
    """Features, truth, guide (Lab units) and, if ``n``, samples of every crop of ``passes`` passes."""
    config = DatasetConfig(model.config.lightness_size, model.config.ab_size)
    dataset = ColorizationDataset(list_images(folder), train=train, config=config)
    generator = torch.Generator().manual_seed(seed)
    rows: dict[str, list[torch.Tensor]] = {"features": [], "truth": [], "guide": [], "samples": []}
    for _ in range(passes):
        for batch in validation_loader(dataset, 32, 0):
            if not batch["path"]:
                continue
            lightness = batch["lightness"]
            features = model.conditioning_net(lightness)
            guide = model.guide_at(model.guide.predict_ab(features, model.config.guide.temperature), 0)
            rows["features"].append(pooled(features))
            rows["truth"].append(denormalize_ab(batch["ab"]))
            rows["guide"].append(denormalize_ab(guide))
            if n:
                rows["samples"].append(denormalize_ab(model.sample(lightness, n, temperature, generator)))
    return {key: torch.cat(value) for key, value in rows.items() if value}


class CastHead(nn.Module):
    """K casts (Lab units) and their logits from pooled features, standardised by the fitting crops'."""

    def __init__(self, features: torch.Tensor, k: int):
        super().__init__()
        self.k = k
        self.register_buffer("mean", features.mean(0))
        self.register_buffer("std", features.std(0) + 1e-4)
        self.net = nn.Sequential(nn.Linear(features.shape[1], 128), nn.GELU(), nn.Dropout(0.2), nn.Linear(128, 3 * k))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net((features - self.mean) / self.std).view(-1, self.k, 3)
        return out[..., :2] * CAST_UNIT, out[..., 2]


def fit_cast_head(features: torch.Tensor, offsets: torch.Tensor, k: int, steps: int, seed: int) -> CastHead:
    """Relaxed multiple-choice learning of the offsets (B, 2): the nearest cast learns, the weights name it."""
    torch.manual_seed(seed)
    head = CastHead(features, k)
    optimizer = torch.optim.Adam(head.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(steps):
        index = torch.randint(0, len(features), (256,))
        casts, logits = head(features[index])
        distance = (casts - offsets[index, None]).pow(2).sum(-1) / CAST_UNIT**2
        nearest = distance.argmin(1)
        share = torch.full_like(distance, (1 - WINNER_SHARE) / (k - 1)).scatter_(1, nearest[:, None], WINNER_SHARE)
        loss = (share * distance).sum(1).mean() + F.cross_entropy(logits, nearest)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return head.eval()


def errors(candidates: torch.Tensor, truth: torch.Tensor, weights: torch.Tensor | None = None) -> str:
    """'best-of-n | one draw | cast' of candidates (B, N, 2, h, w); a draw's by ``weights`` (B, N), else uniform."""
    if weights is None:
        weights = torch.full(candidates.shape[:2], 1.0 / candidates.shape[1])
    per_draw = metrics.rmse(candidates, truth.unsqueeze(-4))
    cast = metrics.cast_error(candidates.unsqueeze(2), truth.unsqueeze(1))  # each candidate its own "samples"
    best, one, cast = per_draw.amin(1).mean(), (weights * per_draw).sum(1).mean(), (weights * cast).sum(1).mean()
    return f"{best:.2f} | {one:.2f} | {cast:.2f}"


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--fit-data", type=Path, required=True, help="photos to fit the cast head on (training photos)")
    parser.add_argument("--data", type=Path, required=True, help="photos to measure on")
    parser.add_argument("--k", type=int, default=8, help="casts of the head (default 8)")
    parser.add_argument("--n", type=int, default=8, help="samples per photo (default 8)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the release's own")
    parser.add_argument("--passes", type=int, default=4, help="random crops of each fitting photo (default 4)")
    parser.add_argument("--steps", type=int, default=3000, help="fitting steps of the cast head (default 3000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = Colorizer.from_pretrained(args.model).eval()
    if model.guide is None:
        parser.error(f"{args.model} has no colour guide; the probe measures casts around the guide's colours")
    temperature = model.sampling_temperature(args.temperature)
    torch.manual_seed(args.seed)  # the fitting photos' random crops
    fit = crops(model, args.fit_data, True, args.passes, 0, temperature, args.seed)
    data = crops(model, args.data, False, 1, args.n, temperature, args.seed)
    truth, guide, samples = data["truth"], data["guide"], data["samples"]
    head = fit_cast_head(
        fit["features"], (fit["truth"] - fit["guide"]).mean(dim=(-2, -1)), args.k, args.steps, args.seed
    )
    with torch.no_grad():
        casts, logits = head(data["features"])
    weights = logits.softmax(-1)

    offsets = (truth - guide).mean(dim=(-2, -1))
    print(f"{len(truth)} photos of {args.data}, {args.n} samples each at temperature {temperature}, Lab units")
    print(f"- the truth's cast around the guide's: std a {offsets[:, 0].std():.2f}, b {offsets[:, 1].std():.2f}")
    spread = samples.mean(dim=(-2, -1)).std(dim=1).mean(0)
    print(f"- the samples' cast around each other: std a {spread[0]:.2f}, b {spread[1]:.2f} (mean over photos)")
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1).mean()
    print(f"- cast head: entropy of its weights {entropy:.2f} nats (uniform: log {args.k} = {math.log(args.k):.2f}), "
          f"largest weight {weights.amax(-1).mean():.2f} on average")  # fmt: skip
    print(f"- the guide with the true cast: {metrics.rmse(guide + offsets[..., None, None], truth).mean():.2f}\n")
    print("| colours | best-of-n | one draw | cast |\n|---|---|---|---|")
    print(f"| all gray | {errors(torch.zeros_like(truth)[:, None], truth)} |")
    print(f"| the guide alone | {errors(guide[:, None], truth)} |")
    print(f"| the samples | {errors(samples, truth)} |")
    mean_cast = (weights[..., None] * casts).sum(1, keepdim=True)
    generator = torch.Generator().manual_seed(args.seed)
    draws = torch.multinomial(weights, args.n, replacement=True, generator=generator)
    for beta in (1.0, 0.5, 0.25):
        pulled = (mean_cast + beta * (casts - mean_cast))[..., None, None]  # (B, K, 2, 1, 1)
        each = errors(guide[:, None] + pulled, truth, weights)
        print(f"| the guide + each of the {args.k} casts, beta {beta} (a draw by the weights) | {each} |")
        drawn = torch.gather(pulled, 1, draws[..., None, None, None].expand(-1, -1, 2, 1, 1))
        print(f"| the samples + a drawn cast each, beta {beta} | {errors(samples + drawn, truth)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
