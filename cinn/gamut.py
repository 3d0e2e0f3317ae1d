"""Bringing Lab colours into the sRGB gamut at constant lightness and hue, in closed form.

A colour ``(L, a, b)`` outside the gamut is replaced by ``(L, t a, t b)``, with ``t`` in [0, 1] where
the segment from grey ``(L, 0, 0)`` first crosses the RGB bounds the colour violates: clipping RGB
instead would change the lightness, which must stay the photo's. The colour at ``t`` is inside the
gamut, and so, nearly always, is the whole segment from grey to it; a segment that leaves the gamut
through another bound and re-enters it before ``t`` (one random Lab colour in ~20,000) is kept to
``t`` nonetheless. ``gamut_scale_bisection``, the search the ONNX graphs use, stops at the first exit.

Along that segment each linear-RGB channel is ``M_k0 Xn g(fy + t a/500) + M_k1 Y + M_k2 Zn g(fy - t b/200)``,
where ``g`` (the inverse of Lab's ``f``) is a cube above the knee ``6/29`` and linear below it.
Between the (at most three) values of ``t`` where an argument crosses the knee or ``Z`` reaches 0,
each channel is therefore a cubic polynomial in ``t``, and ``t`` is the first root of
``channel = 0`` or ``channel = 1`` (Cardano).
The sRGB transfer function is monotone with 0 -> 0 and 1 -> 1, so these bounds are the gamut's.
"""

from __future__ import annotations

import math

import torch

from cinn.color import LAB_KNEE, LAB_SLOPE, WHITE_D65, XYZ_TO_RGB, lab_to_linear_rgb

# Polynomials below are (..., 4) coefficients of 1, t, t^2, t^3.


def segment_polynomials(f0: torch.Tensor, slope: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """``g(f0 + slope t)`` as a cubic polynomial in ``t`` on a piece where ``g`` takes one branch.

    Args:
        f0, slope: (N,).
        branch: (N,) 0 linear part, 1 cube, 2 clamped at ``f = 0`` (kornia's ``Z >= 0``).
    """
    cube = torch.stack([f0**3, 3 * f0**2 * slope, 3 * f0 * slope**2, slope**3], dim=-1)
    zero = torch.zeros_like(f0)
    linear = torch.stack([(f0 - 4.0 / 29.0) / LAB_SLOPE, slope / LAB_SLOPE, zero, zero], dim=-1)
    clamped = torch.stack([zero - 4.0 / 29.0 / LAB_SLOPE, zero, zero, zero], dim=-1)
    return torch.where((branch == 1)[:, None], cube, torch.where((branch == 0)[:, None], linear, clamped))


def branch_at(f: torch.Tensor, clamp_at_zero: bool) -> torch.Tensor:
    """Which part of ``g`` applies at argument ``f`` (see ``segment_polynomials``)."""
    branch = (f > LAB_KNEE).long()
    return torch.where(f <= 0, 2, branch) if clamp_at_zero else branch


def cubic_roots(coefficients: torch.Tensor) -> torch.Tensor:
    """Real roots of cubic polynomials (..., 4), as (..., 3) with NaN where there is none.

    Cardano's formula (trigonometric form for three real roots) on the monic depressed cubic; a
    leading coefficient that is negligible next to the others falls back to the quadratic formula.
    Each root is then polished by a Newton step on the original polynomial.
    """
    scale = coefficients.abs().amax(dim=-1, keepdim=True).clamp(min=1e-300)
    c0, c1, c2, c3 = (coefficients / scale).unbind(dim=-1)
    nan = torch.full_like(c0, math.nan)
    is_cubic = c3.abs() > 1e-7
    lead = torch.where(is_cubic, c3, torch.ones_like(c3))
    a, b, c = c2 / lead, c1 / lead, c0 / lead
    p, q = b - a * a / 3, 2 * a**3 / 27 - a * b / 3 + c
    discriminant = (q / 2) ** 2 + (p / 3) ** 3
    root = torch.sqrt(discriminant.clamp(min=0))
    one = cube_root(-q / 2 + root) + cube_root(-q / 2 - root) - a / 3
    radius = 2 * torch.sqrt((-p / 3).clamp(min=0))
    angle = torch.acos((3 * q / (p * radius).clamp(max=-1e-300)).clamp(-1, 1)) / 3
    three = [radius * torch.cos(angle - 2 * math.pi * k / 3) - a / 3 for k in range(3)]
    single = discriminant > 0
    cubic = torch.stack([torch.where(single, one, three[0]), *(torch.where(single, nan, r) for r in three[1:])], -1)
    roots = cubic
    if not bool(is_cubic.all()):  # c2 t^2 + c1 t + c0, in the form of the quadratic formula without cancellation
        discriminant = c1 * c1 - 4 * c2 * c0
        root = torch.sqrt(discriminant.clamp(min=0))
        big = -(c1 + torch.where(c1 >= 0, root, -root)) / 2
        quadratic = torch.stack([c0 / big, torch.where(c2.abs() > 1e-12, big / c2, nan), nan], dim=-1)
        quadratic = torch.where((discriminant < 0)[..., None], math.nan, quadratic)
        roots = torch.where(is_cubic[..., None], cubic, quadratic)
    for _ in range(1):
        value = ((c3[..., None] * roots + c2[..., None]) * roots + c1[..., None]) * roots + c0[..., None]
        derivative = (3 * c3[..., None] * roots + 2 * c2[..., None]) * roots + c1[..., None]
        roots = torch.where(derivative.abs() > 1e-12, roots - value / derivative, roots)
    return roots


def cube_root(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * x.abs().pow(1 / 3)


def gamut_scale(lab: torch.Tensor) -> torch.Tensor:
    """Largest ``t`` in [0, 1] with ``(L, t a, t b)`` in the sRGB gamut, for colours outside it.

    ``t`` is the first crossing of the RGB bounds the colour violates; if another bound is still
    violated there (one crossed earlier and recrossed before ``t = 1``), its first crossing is taken
    too, until the colour fits. Only violated bounds are solved for: about one cubic per colour.

    Args:
        lab: (3, N) colours, L in [0, 100].

    Returns:
        t: (N,), in the dtype of ``lab`` (computed in float64); 1 for a colour inside the gamut.
    """
    lab = lab.double()
    fy = (lab[0] + 16.0) / 116.0
    slopes = torch.stack([lab[1] / 500.0, -lab[2] / 200.0])  # of fx and fz in t
    # Where fx or fz crosses the knee, or fz reaches 0: the pieces on which every channel is a cubic.
    crossings = torch.stack([(LAB_KNEE - fy) / slopes[0], (LAB_KNEE - fy) / slopes[1], -fy / slopes[1]], dim=-1)
    crossings = crossings.nan_to_num(nan=2.0, posinf=2.0, neginf=2.0)  # a zero slope never crosses
    crossings = torch.where((crossings > 0) & (crossings < 1), crossings, 1.0).sort(dim=-1).values
    breaks = torch.cat([torch.zeros_like(fy)[:, None], crossings, torch.ones_like(fy)[:, None]], dim=-1)
    scale, todo = torch.ones_like(fy), torch.arange(len(fy), device=fy.device)
    for round_ in range(4):  # a bound may be crossed before the one violated at t = 1; each round adds one
        scaled = torch.cat([lab[:1, todo], lab[1:, todo] * scale[todo]])
        linear = lab_to_linear_rgb(scaled[:, :, None])[:, :, 0]
        target, channel, colour = torch.nonzero(torch.stack([linear < -1e-9, linear > 1 + 1e-9])).unbind(dim=1)
        colour = todo[colour]
        if colour.numel() == 0 or round_ == 3:
            # Grey fits at every lightness in [0, 100]: the answer for a colour whose crossing the roots
            # miss (white and black themselves, where the bound is touched at t = 0).
            scale[colour] = 0.0
            break
        for piece in range(4):
            start, end = breaks[colour, piece], breaks[colour, piece + 1]
            active = torch.nonzero(end > start)[:, 0]
            if active.numel():
                pairs = colour[active], channel[active], target[active]
                exits = first_crossing(fy, slopes, breaks[:, piece : piece + 2], *pairs)
                scale.scatter_reduce_(0, pairs[0], exits, reduce="amin")
        todo = colour.unique()
    return scale.to(torch.float32 if lab.dtype != torch.float64 else lab.dtype)


def first_crossing(
    fy: torch.Tensor, slopes: torch.Tensor, piece: torch.Tensor, colour: torch.Tensor, channel: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """For each (colour, channel, target) triple, the first ``t`` of the colour's piece ``[start, end]``
    where the linear-RGB channel equals the target (0 or 1), or 1 if it does not there.

    Args:
        fy: (N,); slopes: (2, N) of fx and fz in t; piece: (N, 2) start and end of the piece.
        colour, channel, target: (P,) indices.
    """
    matrix = torch.tensor(XYZ_TO_RGB, dtype=torch.float64, device=fy.device)[channel]  # (P, 3)
    white = WHITE_D65
    fy, slope_x, slope_z = fy[colour], slopes[0, colour], slopes[1, colour]
    start, end = piece[colour, 0], piece[colour, 1]
    middle = (start + end) / 2  # the branches of g are those of the whole piece
    x_poly = segment_polynomials(fy, slope_x, branch_at(fy + slope_x * middle, False)) * white[0]
    z_poly = segment_polynomials(fy, slope_z, branch_at(fy + slope_z * middle, True)) * white[2]
    y = torch.where(fy > LAB_KNEE, fy**3, (fy - 4.0 / 29.0) / LAB_SLOPE) * white[1]
    polynomial = matrix[:, :1] * x_poly + matrix[:, 2:] * z_poly
    polynomial[:, 0] += matrix[:, 1] * y - target.to(fy.dtype)
    roots = cubic_roots(polynomial)
    slack = 1e-9  # a root on a piece's border may come out a rounding error beyond it
    roots = torch.where((roots >= start[:, None] - slack) & (roots <= end[:, None] + slack), roots, 1.0)
    return roots.amin(dim=1).clamp(0, 1)


def gamut_scale_bisection(lab: torch.Tensor, scan_points: int = 4, halvings: int = 16) -> torch.Tensor:
    """``gamut_scale`` as a fixed sequence of tensor operations, for graphs without data-dependent
    control flow (the ONNX colorizer, ``cinn.onnx``): the same ``t``, found by search.

    The segment from grey is first sampled at ``scan_points`` even steps; the first step that leaves
    the gamut brackets the exit, which ``halvings`` bisections narrow to 2^-halvings of the step
    (3.8e-6 of the chroma for the defaults, 6e-4 Lab units at most; each step is one Lab to RGB
    conversion of every colour, most of the ONNX colorizer's time on a colourful photo). This is the
    first exit from grey: where a colour's segment leaves the gamut and re-enters it (through another
    RGB bound than the one violated at ``t = 1``), ``gamut_scale`` keeps a later point, also inside
    the gamut and more colourful; an exit and re-entry within one step of the scan is not seen at all.
    Computed in
    float64, as ``gamut_scale``: in float32 the bound tests alone move ``t`` by up to 1e-4.

    Args:
        lab: (3, N) colours, L in [0, 100].

    Returns:
        t: (N,) in [0, 1]; 1 for a colour inside the gamut.
    """
    lab = lab.double()

    def inside(scale: torch.Tensor) -> torch.Tensor:  # (K, N) -> (K, N) bool
        scaled = torch.stack([lab[0].expand_as(scale), lab[1] * scale, lab[2] * scale])
        linear = lab_to_linear_rgb(scaled)
        return ((linear >= -1e-9) & (linear <= 1 + 1e-9)).all(dim=0)

    steps = torch.arange(1, scan_points + 1, dtype=lab.dtype, device=lab.device)[:, None] / scan_points
    outside = ~inside(steps.expand(-1, lab.shape[1]))  # (scan_points, N)
    # The first step outside (scan_points if none); the exit lies between the step before it and it.
    first = torch.where(outside.any(dim=0), outside.to(torch.uint8).argmax(dim=0), scan_points)
    low = first.to(lab.dtype) / scan_points
    high = torch.clamp(low + 1.0 / scan_points, max=1.0)
    for _ in range(halvings):
        middle = (low + high) / 2
        fits = inside(middle[None])[0]
        low, high = torch.where(fits, middle, low), torch.where(fits, high, middle)
    return torch.where(first == scan_points, torch.ones_like(low), low).float()
