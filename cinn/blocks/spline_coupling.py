"""Conditional rational-quadratic spline coupling (Durkan et al. 2019, "Neural Spline Flows")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cinn.blocks.coupling import ConditionalCoupling
from cinn.config import bounded, positive

# Each bin keeps at least this share of the interval's width and height, and each knot this slope:
# a collapsed bin would make the map (or its inverse) arbitrarily steep and the log-det unbounded.
MIN_BIN_SIZE = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(u + DERIVATIVE_SHIFT) + MIN_DERIVATIVE is 1 at u = 0: zero coefficients give slope 1 everywhere.
DERIVATIVE_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


@dataclass(frozen=True)
class SplineCouplingSettings:
    """Settings of ``ConditionalSplineCoupling`` (a recipe's ``flow.coupling_settings``).

    Attributes:
        bins: bins of each spline (at most 100, so that the minimum bin size leaves room to learn).
        bound: the splines map [-bound, bound] onto itself; outside it they are the identity.
    """

    bins: int = bounded(8, 1, 100)
    bound: float = positive(3.0)


class ConditionalSplineCoupling(ConditionalCoupling):
    """Each element of a half goes through its own monotone rational-quadratic spline, whose knots and
    slopes the subnetwork computes from the other half and ``c``::

        y1 = RQS(x1; theta1(x2, c)),  y2 = RQS(x2; theta2(y1, c))

    ``bins`` bins on [-bound, bound] with identity tails outside (Durkan et al. 2019, section 3.1):
    ``bins`` widths, ``bins`` heights and ``bins - 1`` inner slopes per element; the slopes at
    ``+-bound`` are 1, so the map is continuously differentiable. Zero coefficients (the subnetworks'
    initial output) give equal bins and slope 1: the identity. See ``ConditionalCoupling`` for the
    arguments.
    """

    Settings = SplineCouplingSettings

    @property
    def coefficients_per_element(self) -> int:
        return 3 * self.settings.bins - 1

    def _spline(self, x: torch.Tensor, coefficients: torch.Tensor, inverse: bool):
        batch, channels = x.shape[:2]
        bins = self.settings.bins
        # (B, C * (3K - 1), H, W) -> (B, C, H, W, 3K - 1): the coefficients of each element last.
        coefficients = coefficients.reshape(batch, channels, 3 * bins - 1, *x.shape[2:]).movedim(2, -1)
        widths, heights, slopes = coefficients.split((bins, bins, bins - 1), dim=-1)
        y, log_slope = rational_quadratic_spline(x, widths, heights, slopes, self.settings.bound, inverse)
        return y, log_slope.flatten(1).sum(1)

    def transform(self, x: torch.Tensor, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._spline(x, coefficients, inverse=False)

    def inverse_transform(self, y: torch.Tensor, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._spline(y, coefficients, inverse=True)


def knots(unnormalised: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., K) unnormalised bin sizes -> knot positions (..., K + 1) from -bound to bound exactly, and
    the bin sizes (..., K), each at least ``MIN_BIN_SIZE`` of the interval."""
    bins = unnormalised.shape[-1]
    shares = MIN_BIN_SIZE + (1.0 - MIN_BIN_SIZE * bins) * torch.softmax(unnormalised, dim=-1)
    inner = -bound + 2.0 * bound * torch.cumsum(shares, dim=-1)[..., :-1]
    ends = torch.full_like(inner[..., :1], bound)
    positions = torch.cat([-ends, inner, ends], dim=-1)
    return positions, positions[..., 1:] - positions[..., :-1]


def position_in_bin(
    rise: torch.Tensor, height: torch.Tensor, secant: torch.Tensor, slope_low: torch.Tensor, curvature: torch.Tensor
) -> torch.Tensor:
    """The relative position xi in [0, 1] at which a bin's forward map rises ``rise`` above its lower
    knot: the forward formula solved for xi is a xi^2 + b xi + c = 0 (Durkan et al. 2019, appendix A),
    its root written as 2c / (-b - sqrt(.)), which does not cancel when a is near 0."""
    a = height * (secant - slope_low) + rise * curvature
    b = height * slope_low - rise * curvature
    c = -secant * rise
    discriminant = (b.square() - 4.0 * a * c).clamp_min(0.0)
    return 2.0 * c / (-b - discriminant.sqrt())


def log_bin_slope(
    xi: torch.Tensor, secant: torch.Tensor, slope_low: torch.Tensor, slope_high: torch.Tensor, curvature: torch.Tensor
) -> torch.Tensor:
    """log of the forward map's derivative at relative position ``xi`` of its bin (Durkan et al., eq. 5)."""
    denominator = secant + curvature * xi * (1.0 - xi)
    derivative = secant.square() * (
        slope_high * xi.square() + 2.0 * secant * xi * (1.0 - xi) + slope_low * (1.0 - xi).square()
    )
    return derivative.log() - 2.0 * denominator.log()


def rational_quadratic_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    slopes: torch.Tensor,
    bound: float,
    inverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The monotone rational-quadratic spline of Durkan et al. 2019 (after Gregory & Delbourgo 1982),
    element by element, identity outside [-bound, bound].

    Args:
        x: (...) points (outputs of the spline when ``inverse``).
        widths, heights: (..., K) unnormalised bin widths and heights (softmax, then a minimum size).
        slopes: (..., K - 1) unnormalised slopes at the inner knots (softplus, then a minimum).
        bound: half-width of the interval the spline maps onto itself.
        inverse: evaluate the inverse map.

    Returns:
        the mapped points (...) and log |d output / d input| (...) of the direction that ran.
    """
    x_knots, bin_widths = knots(widths, bound)
    y_knots, bin_heights = knots(heights, bound)
    ones = torch.ones_like(slopes[..., :1])
    slopes = torch.cat([ones, MIN_DERIVATIVE + F.softplus(slopes + DERIVATIVE_SHIFT), ones], dim=-1)

    inside = (x >= -bound) & (x <= bound)
    value = torch.where(inside, x, torch.zeros_like(x))  # outside: any point inside, its result unused
    # The bin of each element: the number of inner knots at or below it (knots of the input side).
    search_knots = (y_knots if inverse else x_knots)[..., 1:-1].contiguous()
    index = torch.searchsorted(search_knots, value[..., None].contiguous(), right=True)

    def of_bin(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.gather(-1, index)[..., 0]

    x_low, width, y_low, height = of_bin(x_knots), of_bin(bin_widths), of_bin(y_knots), of_bin(bin_heights)
    slope_low, slope_high = of_bin(slopes[..., :-1]), of_bin(slopes[..., 1:])
    secant = height / width
    curvature = slope_low + slope_high - 2.0 * secant
    if inverse:
        xi = position_in_bin(value - y_low, height, secant, slope_low, curvature)
        mapped = x_low + xi * width
    else:
        xi = (value - x_low) / width
        mapped = y_low + height * (secant * xi.square() + slope_low * xi * (1.0 - xi)) / (
            secant + curvature * xi * (1.0 - xi)
        )
    log_slope = log_bin_slope(xi, secant, slope_low, slope_high, curvature)
    if inverse:
        log_slope = -log_slope
    return torch.where(inside, mapped, x), torch.where(inside, log_slope, torch.zeros_like(log_slope))
