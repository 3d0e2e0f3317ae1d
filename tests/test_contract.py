"""The invertible-block contract, passed by every block and by the whole ConditionalGlow."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cinn import ConditionalGlow, GlowConfig
from cinn.blocks import (
    ActNorm,
    AffineCouplingSettings,
    ConditionalAffineCoupling,
    ConditionalSplineCoupling,
    FixedOrthogonalMixing,
    HaarDownsampling,
    InvertibleConv1x1LU,
    InvertibleSequential,
    SplineCouplingSettings,
)
from cinn.blocks.condition import constant_map_convolution
from cinn.glow import COUPLINGS


class FlatGlow(nn.Module):
    """Adapts ConditionalGlow's list of latents to the single-tensor contract: z = concat(flat zs)."""

    def __init__(self, glow: ConditionalGlow, height: int, width: int):
        super().__init__()
        self.glow = glow
        self.shapes = glow.latent_shapes(height, width)

    def forward(self, x, c):
        zs, logdet = self.glow(x, c)
        return torch.cat([z.flatten(1) for z in zs], dim=1), logdet

    def inverse(self, y, c):
        sizes = [torch.Size(shape).numel() for shape in self.shapes]
        zs = [part.reshape(-1, *shape) for part, shape in zip(y.split(sizes, dim=1), self.shapes, strict=True)]
        return self.glow.inverse(zs, c)


@dataclass
class Case:
    name: str
    build: Callable[[int], nn.Module]  # seed -> module
    x_shape: tuple[int, ...]  # without batch
    condition_shapes: tuple[tuple[int, ...], ...] = ()  # without batch; several for the glow
    global_channels: int = 0

    @property
    def conditional(self) -> bool:
        return bool(self.condition_shapes)

    def condition(self, batch: int, generator: torch.Generator, dtype=torch.float32):
        tensors = [torch.randn(batch, *shape, generator=generator, dtype=dtype) for shape in self.condition_shapes]
        if self.global_channels:
            tensors.append(torch.randn(batch, self.global_channels, generator=generator, dtype=dtype))
        if isinstance(self.build(0), FlatGlow):
            return tensors
        return tensors[0] if tensors else None


def actnorm(seed: int) -> ActNorm:
    block = ActNorm(4)
    block.initialize_from(torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(seed)) * 3 + 1)
    return block


def glow(config: GlowConfig, conditions: tuple[int, ...], global_channels: int, size: int):
    return lambda seed: FlatGlow(
        ConditionalGlow(GlowConfig(**{**config.__dict__, "seed": seed}), conditions, global_channels=global_channels),
        size,
        size,
    )


SMALL_GLOW = GlowConfig(steps_per_level=(2, 2, 2), hidden_channels=(8, 8, 8))
SPLINE = SplineCouplingSettings(bins=4, bound=1.5)
CASES = [
    Case("coupling", lambda s: ConditionalAffineCoupling(4, 3, 8), (4, 4, 4), ((3, 4, 4),)),
    Case(
        "coupling_odd",
        lambda s: ConditionalAffineCoupling(3, 2, 8, AffineCouplingSettings(clamp=0.8)),
        (3, 4, 4),
        ((2, 4, 4),),
    ),
    Case("coupling_unconditional", lambda s: ConditionalAffineCoupling(4, 0, 8), (4, 4, 4)),
    # bound 1.5: x ~ N(0, 1) reaches the identity tails as well as the splines.
    Case("spline", lambda s: ConditionalSplineCoupling(4, 3, 8, SPLINE), (4, 4, 4), ((3, 4, 4),)),
    Case("spline_odd_unconditional", lambda s: ConditionalSplineCoupling(3, 0, 8, SPLINE), (3, 4, 4)),
    Case("orthogonal", lambda s: FixedOrthogonalMixing(4, seed=s), (4, 4, 4)),
    Case("actnorm", actnorm, (4, 4, 4)),
    Case("lu_conv", lambda s: InvertibleConv1x1LU(4, seed=s), (4, 4, 4)),
    Case("haar", lambda s: HaarDownsampling(), (2, 4, 4)),
    Case("haar_rescaled", lambda s: HaarDownsampling(scale=0.5), (2, 4, 4)),
    Case(
        "sequential",
        lambda s: InvertibleSequential(ActNorm(4), InvertibleConv1x1LU(4, seed=s), ConditionalAffineCoupling(4, 2, 8)),
        (4, 4, 4),
        ((2, 4, 4),),
    ),
    Case("glow", glow(SMALL_GLOW, (3, 4, 5), 0, 8), (2, 8, 8), ((3, 8, 8), (4, 4, 4), (5, 2, 2))),
    Case(
        "glow_actnorm_lu_global",
        glow(GlowConfig((1, 2, 1), (8, 8, 8), mixing="lu", actnorm=True), (3, 4, 5), 6, 8),
        (2, 8, 8),
        ((3, 8, 8), (4, 4, 4), (5, 2, 2)),
        global_channels=6,
    ),
    Case(
        "glow_spline_global",
        glow(GlowConfig((1, 2, 1), (8, 8, 8), coupling="spline", coupling_settings={"bins": 3}), (3, 4, 5), 6, 8),
        (2, 8, 8),
        ((3, 8, 8), (4, 4, 4), (5, 2, 2)),
        global_channels=6,
    ),
]


def randomized(case: Case, seed: int = 0, dtype=torch.float32) -> nn.Module:
    """Builds the block and perturbs every parameter so that no block is the identity."""
    torch.manual_seed(seed)
    module = case.build(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return module.to(dtype)


def inputs(case: Case, batch: int = 3, seed: int = 1, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *case.x_shape, generator=generator, dtype=dtype)
    return x, case.condition(batch, generator, dtype)


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request) -> Case:
    return request.param


def test_round_trip_and_logdets_cancel(case):
    module = randomized(case)
    x, c = inputs(case)
    y, logdet = module(x, c)
    assert logdet.shape == (x.shape[0],) and y.dtype == x.dtype
    assert y.shape[0] == x.shape[0] and y[0].numel() == x[0].numel()
    x_back, logdet_inverse = module.inverse(y, c)
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logdet + logdet_inverse, torch.zeros_like(logdet), atol=1e-4, rtol=0)
    # The other way: from a random latent to data and back.
    y_random = torch.randn_like(y)
    x_random, _ = module.inverse(y_random, c)
    torch.testing.assert_close(module(x_random, c)[0], y_random, atol=1e-5, rtol=1e-5)


def test_logdet_matches_autograd_jacobian(case):
    module = randomized(case, dtype=torch.float64)
    x, c = inputs(case, batch=1, dtype=torch.float64)
    for direction, point in (("forward", x), ("inverse", module(x, c)[0].detach())):
        run = module if direction == "forward" else module.inverse

        def flat(v, run=run, point=point):
            return run(v.reshape(point.shape), c)[0].reshape(-1)

        jacobian = torch.autograd.functional.jacobian(flat, point.reshape(-1))
        sign, logabsdet = torch.linalg.slogdet(jacobian)
        assert sign != 0
        torch.testing.assert_close(run(point, c)[1][0], logabsdet, atol=1e-8, rtol=1e-8)


def test_batch_independence(case):
    module = randomized(case)
    x, c = inputs(case, batch=4)
    y, logdet = module(x, c)
    for i in range(4):
        c_i = [t[i : i + 1] for t in c] if isinstance(c, list) else (None if c is None else c[i : i + 1])
        y_i, logdet_i = module(x[i : i + 1], c_i)
        torch.testing.assert_close(y_i, y[i : i + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logdet_i, logdet[i : i + 1], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", [case for case in CASES if case.conditional], ids=lambda case: case.name)
def test_condition_changes_output(case):
    module = randomized(case)
    x, c = inputs(case)
    _, other = inputs(case, seed=7)
    difference = (module(x, c)[0] - module(x, other)[0]).abs().max()
    assert difference > 1e-3


def test_gradients_reach_input_and_every_parameter(case):
    module = randomized(case)
    x, c = inputs(case)
    x.requires_grad_(True)
    y, logdet = module(x, c)
    (y.pow(2).sum() - logdet.sum()).backward()
    # d(sum y^2)/dx = 2 J^T y, checked against the autograd Jacobian of the block itself.
    jacobian = torch.autograd.functional.jacobian(lambda value: module(value, c)[0], x.detach())
    expected = 2 * torch.einsum("...,...ijkl->ijkl", y.detach(), jacobian)
    if case.name.startswith("haar") or case.name in ("orthogonal", "lu_conv", "actnorm"):  # logdet is free of x
        torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-5)
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


def test_state_dict_round_trip(case):
    module = randomized(case, seed=0)
    if not module.state_dict():  # Haar: a fixed linear map, nothing to save; said, not silently passed
        assert case.name.startswith("haar") and not list(module.parameters())
        return
    fresh = case.build(123)  # another seed: buffers such as rotations must come from the state dict
    fresh.load_state_dict(module.state_dict())
    x, c = inputs(case)
    y, logdet = module(x, c)
    y_fresh, logdet_fresh = fresh(x, c)
    torch.testing.assert_close(y_fresh, y)
    torch.testing.assert_close(logdet_fresh, logdet)
    for a, b in zip(module.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_new_couplings_start_as_identity():
    coupling = ConditionalAffineCoupling(4, 3, 8)
    x, c = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5)
    y, logdet = coupling(x, c)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))


@pytest.mark.parametrize("name", sorted(COUPLINGS))
def test_every_registered_coupling_starts_as_identity(name):
    """Zero coefficients, the subnetworks' initial output, are the identity (inside and outside a spline's bound)."""
    coupling = COUPLINGS[name](4, 3, 8)
    x, c = 4 * torch.randn(2, 4, 5, 5, dtype=torch.float64), torch.randn(2, 3, 5, 5, dtype=torch.float64)
    y, logdet = coupling.to(torch.float64)(x, c)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(logdet, torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)


def test_actnorm_initialisation_is_explicit_and_saved():
    glow_model = ConditionalGlow(GlowConfig((1, 1), (8, 8), actnorm=True), (2, 2))
    x = 5 + 3 * torch.randn(16, 2, 8, 8)
    c = [torch.randn(16, 2, 8, 8), torch.randn(16, 2, 4, 4)]
    before = glow_model(x, c)[0]
    assert torch.equal(glow_model(x, c)[0][0], before[0]), "forward must not initialise ActNorm"
    glow_model.initialize(x, c)
    first_actnorm = glow_model.levels[0].blocks[0]
    assert bool(first_actnorm.initialized)
    normalised = (x + first_actnorm.bias) * first_actnorm.log_scale.exp()
    torch.testing.assert_close(normalised.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(normalised.std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-3, rtol=0)
    reloaded = ConditionalGlow(GlowConfig((1, 1), (8, 8), actnorm=True), (2, 2))
    reloaded.load_state_dict(glow_model.state_dict())
    assert bool(reloaded.levels[0].blocks[0].initialized)
    torch.testing.assert_close(reloaded(x, c)[0][0], glow_model(x, c)[0][0])


@pytest.mark.parametrize("name", ["coupling", "spline", "glow_actnorm_lu_global", "glow_spline_global"])
def test_shared_conditions_equal_repeated_ones(name):
    """Conditions of batch B / n serve n consecutive samples each, exactly as if repeat_interleave'd."""
    case = next(case for case in CASES if case.name == name)
    module = randomized(case)
    x, c = inputs(case, batch=6)
    tensors = c if isinstance(c, list) else [c]

    def unwrap(conditions):
        return conditions if isinstance(c, list) else conditions[0]

    shared = [t[:2] for t in tensors]
    repeated = [t.repeat_interleave(3, dim=0) for t in shared]
    y, logdet = module(x, unwrap(shared))
    y_repeated, logdet_repeated = module(x, unwrap(repeated))
    torch.testing.assert_close(y, y_repeated, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logdet, logdet_repeated, atol=1e-4, rtol=1e-5)
    x_back, _ = module.inverse(y_repeated, unwrap(shared))
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot share"):
        module(x, unwrap([t[:4] for t in tensors]))


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_constant_map_convolution_equals_convolving_the_broadcast_map(kernel):
    generator = torch.Generator().manual_seed(kernel)
    vector = torch.randn(2, 6, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 6, kernel, kernel, generator=generator, dtype=torch.float64)
    for size in [(1, 1), (2, 7), (5, 4)]:
        broadcast = vector[:, :, None, None].expand(-1, -1, *size)
        reference = F.conv2d(broadcast, weight, padding=kernel // 2)
        result = constant_map_convolution(vector, weight, size, (kernel // 2, kernel // 2))
        torch.testing.assert_close(result, reference, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="same"):
        constant_map_convolution(vector, weight, (4, 4), (0, 0) if kernel > 1 else (1, 1))


def test_coupling_with_a_global_vector_equals_its_broadcast_concatenation():
    """c = (map, vector) is the vector broadcast over the map and concatenated after its channels:
    same output, inverse and gradients for the map, the vector and the weights."""
    torch.manual_seed(0)
    coupling = ConditionalAffineCoupling(4, 3 + 5, 8)
    with torch.no_grad():
        for parameter in coupling.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    x = torch.randn(4, 4, 3, 5)
    condition_map = torch.randn(2, 3, 3, 5, requires_grad=True)  # each condition serves two samples
    vector = torch.randn(2, 5, requires_grad=True)

    def loss_and_gradients(c):
        y, logdet = coupling(x, c)
        loss = (y**2).sum() + logdet.sum()
        return y, logdet, torch.autograd.grad(loss, [condition_map, vector, *coupling.parameters()])

    concatenated = torch.cat([condition_map, vector[:, :, None, None].expand(-1, -1, 3, 5)], dim=1)
    y, logdet, gradients = loss_and_gradients((condition_map, vector))
    y_ref, logdet_ref, gradients_ref = loss_and_gradients(concatenated)
    torch.testing.assert_close(y, y_ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logdet, logdet_ref, atol=1e-5, rtol=1e-6)
    for gradient, gradient_ref in zip(gradients, gradients_ref, strict=True):
        torch.testing.assert_close(gradient, gradient_ref, atol=1e-5, rtol=1e-5)
    x_back, _ = coupling.inverse(y.detach(), (condition_map, vector))
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="expected 8 condition channels"):
        coupling(x, (condition_map, vector[:, :4]))


def test_the_soft_clamp_bounds_every_log_scale():
    """Whatever the subnetworks output, each element's log-scale stays within the clamp (cINN, Sec. 3).
    With the last layers' weights blown up, the scales read off the Jacobian reach the bound but never
    pass it: y1 = x1 * exp(s1(x2, c)) + t1, so dy1/dx1 is exp(s1) element by element."""
    torch.manual_seed(0)
    coupling = ConditionalAffineCoupling(4, 3, 8, AffineCouplingSettings(clamp=0.8))
    with torch.no_grad():
        torch.nn.init.normal_(coupling.subnet_first[-1].weight, std=1000.0)
    x1, x2 = torch.randn(2, 2, 5, 5, requires_grad=True), torch.randn(2, 2, 5, 5)
    y, _ = coupling(torch.cat([x1, x2], dim=1), torch.randn(2, 3, 5, 5))
    (scales,) = torch.autograd.grad(y[:, :2].sum(), x1)
    log_scales = scales.log().abs()
    assert log_scales.max() <= 0.8 + 1e-6 and log_scales.max() > 0.7
