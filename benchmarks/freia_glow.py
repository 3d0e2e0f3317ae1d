"""The colorization cINN's conditional multi-scale Glow built a second time, from FrEIA 0.2.

The FrEIA graph mirrors ``cinn.glow.ConditionalGlow`` node for node, so that the benchmark compares
two implementations of one function, not two models:

- level 0 at the ab resolution, ``HaarDownsampling(order_by_wavelet=True)`` before each later level
  (band-major channels, FrEIA's 2x2 Haar kernels equal ``cinn.blocks.haar.HAAR_MATRIX``);
- each step is ``Fixed1x1Conv`` with our step's fixed random orthogonal matrix, then
  ``GLOWCouplingBlock`` whose subnetworks are ``cinn.blocks.condition.ConditionedSubnet`` of the same
  width, with ``clamp=alpha`` and ``clamp_activation=u -> (2/pi) atan(u/alpha)`` (the paper's clamp;
  FrEIA's own "ATAN" is ``alpha * 0.636 * atan(u)``);
- ``Split`` hands the first half of the channels out after every level but the last (if >= 4);
- each level's couplings see that level's ``ConditionNode``; the last level also sees the global
  vector, broadcast over its pixels (FrEIA concatenates every condition of a node to the subnet
  input, in node order, as ours concatenates ``[map, vector]``).

``copy_weights`` loads our weights into the graph; ``max_difference`` checks that both give the same
latents and log-det.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from FrEIA.framework import ConditionNode, GraphINN, InputNode, Node, OutputNode
from FrEIA.modules import Fixed1x1Conv, GLOWCouplingBlock, HaarDownsampling, Split

from cinn.blocks import ConditionalAffineCoupling, FixedOrthogonalMixing
from cinn.blocks import HaarDownsampling as OurHaarDownsampling
from cinn.blocks.condition import ConditionedSubnet
from cinn.glow import ConditionalGlow


class PaperAtanClamp:
    """FrEIA ``clamp_activation``: ``u -> (2/pi) atan(u/alpha)``; FrEIA multiplies it by ``alpha``."""

    def __init__(self, alpha: float):
        self.alpha = alpha

    def __call__(self, log_scale: torch.Tensor) -> torch.Tensor:
        return (2.0 / math.pi) * torch.atan(log_scale / self.alpha)


def build_freia_glow(ours: ConditionalGlow, height: int, width: int) -> GraphINN:
    """A FrEIA ``GraphINN`` with the architecture of ``ours`` for ab of ``height`` x ``width``.

    Condition nodes, in order: one map per level, then (if ``ours`` has one) the global vector
    broadcast to the last level's ``(global_channels, H / 2**(L-1), W / 2**(L-1))``; see
    ``freia_conditions``. Outputs: one latent per level, in the order of ``ours.forward``.
    """
    config = ours.config
    condition_channels = [level_condition_channels(level) for level in ours.levels]
    global_channels = ours.global_channels
    condition_channels[-1] -= global_channels
    nodes: list[Node] = [InputNode(ours.in_channels, height, width, name="ab")]
    conditions = [
        ConditionNode(channels, height >> level, width >> level, name=f"condition{level}")
        for level, channels in enumerate(condition_channels)
    ]
    if global_channels:
        last = config.num_levels - 1
        conditions.append(ConditionNode(global_channels, height >> last, width >> last, name="global"))
    nodes += conditions
    outputs: list[OutputNode] = []
    x, channels = nodes[0], ours.in_channels
    for level, (blocks, split) in enumerate(zip(ours.levels, ours.split_channels, strict=True)):
        level_conditions = [conditions[level]]
        if level == config.num_levels - 1 and global_channels:
            level_conditions.append(conditions[-1])
        for block in blocks.blocks:
            if isinstance(block, FixedOrthogonalMixing):
                # Fixed1x1Conv computes M^T x; ours computes W x.
                matrix = block.weight.t().float().contiguous()
                x = Node(x, Fixed1x1Conv, {"M": matrix})
            elif isinstance(block, ConditionalAffineCoupling):
                hidden = block.subnet_first[0].out_channels
                x = Node(
                    x,
                    GLOWCouplingBlock,
                    {
                        "subnet_constructor": lambda cin, cout, hidden=hidden: ConditionedSubnet(cin, 0, cout, hidden),
                        "clamp": block.settings.clamp,
                        "clamp_activation": PaperAtanClamp(block.settings.clamp),
                        "split_len": block.split_sizes[0],
                    },
                    conditions=level_conditions,
                )
            elif isinstance(block, OurHaarDownsampling):
                x = Node(x, HaarDownsampling, {"order_by_wavelet": True, "rebalance": block.scale})
                channels *= 4
            else:
                raise ValueError(f"no FrEIA counterpart for {type(block).__name__} in this benchmark")
            nodes.append(x)
        if split and level < config.num_levels - 1:
            x = Node(x, Split, {"section_sizes": [split, channels - split], "dim": 0})
            nodes.append(x)
            outputs.append(OutputNode((x, 0), name=f"z{level}"))
            x, channels = (x, 1), channels - split
    outputs.append(OutputNode(x, name=f"z{config.num_levels - 1}"))
    return GraphINN(nodes + outputs, force_tuple_output=True)


def level_condition_channels(level) -> int:
    """Condition channels (map + global) the couplings of one of our levels take."""
    for block in level.blocks:
        if isinstance(block, ConditionalAffineCoupling):
            return block.condition_channels
    raise ValueError("a level without couplings")


def freia_conditions(conditions: Sequence[torch.Tensor], global_channels: int, batch: int) -> list[torch.Tensor]:
    """Our condition list (maps, then the (B, G) vector) -> FrEIA's (maps, then the broadcast vector).

    Conditions of batch 1 are expanded to ``batch`` (a view): FrEIA needs one per sample.
    """
    maps = list(conditions[: len(conditions) - (1 if global_channels else 0)])
    if global_channels:
        size = maps[-1].shape[2:]
        maps.append(conditions[-1][:, :, None, None].expand(-1, -1, *size))
    return [c.expand(batch, *c.shape[1:]) for c in maps]


@torch.no_grad()
def copy_weights(ours: ConditionalGlow, freia: GraphINN) -> None:
    """Loads the coupling weights of ``ours`` into ``freia`` (mixing matrices are set at build time).

    Our ``subnet_first`` computes the first half's coefficients from the second half: FrEIA's
    ``subnet2``; our ``subnet_second`` is FrEIA's ``subnet1``.
    """
    our_couplings = [m for m in ours.modules() if isinstance(m, ConditionalAffineCoupling)]
    freia_couplings = [m for m in freia.modules() if isinstance(m, GLOWCouplingBlock)]
    if len(our_couplings) != len(freia_couplings):
        raise ValueError(f"{len(our_couplings)} couplings in ours, {len(freia_couplings)} in FrEIA's")
    for mine, theirs in zip(our_couplings, freia_couplings, strict=True):
        theirs.subnet2.load_state_dict(mine.subnet_first.state_dict())
        theirs.subnet1.load_state_dict(mine.subnet_second.state_dict())


def trainable_parameters(module: torch.nn.Module) -> int:
    """Number of trainable scalars (FrEIA keeps its fixed matrices as frozen parameters)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def max_difference(ours: ConditionalGlow, freia: GraphINN, ab: torch.Tensor, conditions: list[torch.Tensor]) -> dict:
    """Largest absolute differences of latents, log-det and inverse between the two flows."""
    zs, logdet = ours(ab, conditions)
    freia_c = freia_conditions(conditions, ours.global_channels, ab.shape[0])
    freia_zs, freia_logdet = freia(ab, c=freia_c)
    ab_back, _ = freia(list(freia_zs), c=freia_c, rev=True)
    return {
        "latents": max((a - b).abs().max().item() for a, b in zip(zs, freia_zs, strict=True)),
        "logdet": (logdet - freia_logdet).abs().max().item(),
        "inverse": (ours.inverse(zs, conditions)[0] - ab_back[0]).abs().max().item(),
    }
