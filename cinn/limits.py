"""How much one colorization request may ask: photo size, shape and number of samples.

The model works at a fixed short side, so memory grows with the photo's pixels (each full-size
sample is upsampled, converted and encoded) and a sliver of a photo becomes a huge working image
(a 5000x1 PNG of 86 bytes would be 320000x64 pixels). The same limits guard the command line, the
Python API and the web app; the size is read from the file header, before anything is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from cinn.errors import UsageError

MAX_WORKING_SIDE = 1024  # lightness short side the model may be run at; far beyond any training size


@dataclass(frozen=True)
class PhotoLimits:
    """Largest request served; every value can be raised (``--max-megapixels`` and friends).

    Attributes:
        max_megapixels: pixels of the photo, in millions.
        max_aspect_ratio: long side over short side.
        max_samples: colorizations of one photo in one call.
    """

    max_megapixels: float = 50.0
    max_aspect_ratio: float = 10.0
    max_samples: int = 64
    name: str = "the limit"  # how messages call a limit ("this page's limit" in the web app)
    flags: bool = True  # whether messages name the command-line flag that raises a limit

    def __post_init__(self) -> None:
        if not (self.max_megapixels > 0 and self.max_aspect_ratio >= 1 and self.max_samples >= 1):
            raise UsageError(
                f"limits must be positive (megapixels {self.max_megapixels}, aspect ratio "
                f"{self.max_aspect_ratio} >= 1, samples {self.max_samples} >= 1)"
            )

    def size_problem(self, width: int, height: int) -> str | None:
        """Why a ``width`` x ``height`` photo is refused, or None if it is served."""
        if width < 1 or height < 1:
            return f"it has no pixels ({width}x{height})"
        if width * height > self.max_megapixels * 1e6:
            problem = f"it has {width}x{height} pixels, more than {self.name} of {self.max_megapixels:g} megapixels"
            return problem + self.flag_hint("--max-megapixels")
        if max(width, height) > self.max_aspect_ratio * min(width, height):
            problem = f"its {width}x{height} pixels are longer than {self.name} of {self.max_aspect_ratio:g} to 1"
            return problem + self.flag_hint("--max-aspect-ratio")
        return None

    def flag_hint(self, flag: str) -> str:
        return f" (raise it with {flag})" if self.flags else ""

    def check_samples(self, count: int) -> None:
        """``UsageError`` unless 1 <= count <= max_samples."""
        if not 1 <= count <= self.max_samples:
            raise UsageError(
                f"the number of samples must be between 1 and {self.max_samples}, got {count}"
                + self.flag_hint("--max-samples")
            )


def working_size(height: int, width: int, short_side: int, multiple: int) -> tuple[int, int]:
    """(h, w) near the photo's aspect ratio with the short side ~``short_side``, multiples of ``multiple``."""
    scale = short_side / min(height, width)
    return tuple(max(multiple, multiple * round(side * scale / multiple)) for side in (height, width))
