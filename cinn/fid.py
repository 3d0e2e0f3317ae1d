"""Inception-v3 pool3 features for the Fréchet Inception Distance, from local weights only.

Nothing is downloaded: the caller supplies a torchvision ``inception_v3`` state dict (e.g. the
``IMAGENET1K_V1`` weights saved with ``torch.save(model.state_dict(), path)``). FIDs computed with
these weights are comparable with each other, not with published numbers, which use the TF-FID
Inception port (Heusel et al. 2017).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file
from torch import nn

from cinn.errors import UsageError

INCEPTION_SIDE = 299
FEATURE_DIMENSION = 2048
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class InceptionFeatures(nn.Module):
    """sRGB images -> the 2048 average-pooled ("pool3") features of Inception v3.

    Args:
        weights: a ``.pt``/``.pth`` (``torch.save`` of a state dict) or ``.safetensors`` file holding
            torchvision's ``inception_v3`` weights, auxiliary classifier included.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        ValueError: the file does not hold an Inception v3 state dict.
    """

    def __init__(self, weights: str | os.PathLike):
        super().__init__()
        # transform_input=True is how torchvision runs its ImageNet weights (ported from TF, which
        # expects [-1, 1] input): it maps ImageNet-normalised input to that range.
        network = torchvision.models.inception_v3(
            weights=None, aux_logits=True, init_weights=False, transform_input=True
        )
        try:
            network.load_state_dict(_read_state_dict(weights))
        except (RuntimeError, KeyError, AttributeError) as error:
            summary = str(error).splitlines()[0]
            raise UsageError(f"'{weights}' is not a torchvision inception_v3 state dict ({summary}).") from None
        network.fc = nn.Identity()  # the input of the classifier is the pool3 feature vector
        self.network = network.eval()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """rgb: (B, 3, H, W) sRGB in [0, 1], any size -> features (B, 2048)."""
        rgb = rgb.to(self.mean.device, self.mean.dtype)
        resized = F.interpolate(rgb, size=(INCEPTION_SIDE, INCEPTION_SIDE), mode="bilinear", antialias=True)
        return self.network.eval()((resized - self.mean) / self.std)


def _read_state_dict(weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or torch file; only tensors are unpickled."""
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"Inception weights '{weights}' do not exist.")
    if str(weights).endswith(".safetensors"):
        return load_file(weights)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or non-torch file fails in many different ways
        raise UsageError(f"'{weights}' cannot be read as a torch state dict ({type(error).__name__}).") from None
    if not isinstance(state, dict):
        raise UsageError(f"'{weights}' holds a {type(state).__name__}, not a state dict.")
    return state
