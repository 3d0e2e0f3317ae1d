"""Invertible blocks: `forward(x, c=None) -> (y, logdet)` and `inverse(y, c=None) -> (x, logdet)`."""

from cinn.blocks.actnorm import ActNorm, data_dependent_init
from cinn.blocks.affine_coupling import AffineCouplingSettings, ConditionalAffineCoupling, soft_clamp
from cinn.blocks.base import Condition, InvertibleModule
from cinn.blocks.condition import ConditionedSubnet
from cinn.blocks.coupling import ConditionalCoupling
from cinn.blocks.haar import HaarDownsampling
from cinn.blocks.lu_conv import InvertibleConv1x1LU
from cinn.blocks.orthogonal import FixedOrthogonalMixing
from cinn.blocks.sequential import InvertibleSequential
from cinn.blocks.spline_coupling import ConditionalSplineCoupling, SplineCouplingSettings

__all__ = [
    "ActNorm",
    "AffineCouplingSettings",
    "Condition",
    "ConditionalAffineCoupling",
    "ConditionalCoupling",
    "ConditionalSplineCoupling",
    "ConditionedSubnet",
    "FixedOrthogonalMixing",
    "HaarDownsampling",
    "InvertibleConv1x1LU",
    "InvertibleModule",
    "InvertibleSequential",
    "SplineCouplingSettings",
    "data_dependent_init",
    "soft_clamp",
]
