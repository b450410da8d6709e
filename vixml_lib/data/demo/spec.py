"""The knobs of a demo catalogue (:class:`DemoSpec`) and the two presets, ``tiny`` (tests,
seconds) and ``small`` (the demo run)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from .vocabulary import COLOURS, PATTERNS

__all__ = ["DemoSpec", "PRESETS", "resolve_spec", "spec_dict"]


@dataclass(frozen=True)
class DemoSpec:
    """Size and generative knobs of a demo catalogue (see :mod:`vixml_lib.data.demo.catalogue`)."""

    name: str
    n_labels: int
    n_train: int
    n_test: int
    image_size: int
    n_brands: int
    max_images: int = 3
    variants_per_family: tuple[int, int] = (2, 6)  # inclusive range
    p_second_edition: float = 0.4
    brand_palette_size: int = 5
    zipf_exponent: float = 0.8
    variant_concentration: float = 2.0  # Dirichlet parameter of variant popularity within a family
    image_count_probs: tuple[float, ...] = (0.07, 0.33, 0.30, 0.30)  # 0, 1, 2, 3 images
    p_label_colour: float = 0.1
    p_query_colour: float = 0.2
    p_query_pattern: float = 0.1
    p_query_no_material: float = 0.1
    p_synonym: float = 0.75
    p_related: float = 0.6
    p_content_colour: float = 0.5
    frac_self_test: float = 0.04
    frac_self_train: float = 0.02
    jpeg_quality: int = 90

    def __post_init__(self):
        for f in ("n_labels", "n_train", "n_test", "image_size", "n_brands", "max_images", "brand_palette_size"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"DemoSpec.{f} must be >= 1, got {getattr(self, f)}")
        if self.image_size < 16:
            raise ValueError(f"DemoSpec.image_size must be >= 16, got {self.image_size}")
        lo, hi = self.variants_per_family
        if not 1 <= lo <= hi:
            raise ValueError(
                f"DemoSpec.variants_per_family must be (lo, hi) with 1 <= lo <= hi, got {self.variants_per_family}")
        if hi > self.brand_palette_size * len(PATTERNS):
            raise ValueError("DemoSpec.variants_per_family upper bound exceeds the distinct colour x pattern looks")
        if len(self.image_count_probs) != self.max_images + 1:
            raise ValueError("DemoSpec.image_count_probs needs max_images + 1 entries (for 0..max_images images)")
        if abs(sum(self.image_count_probs) - 1.0) > 1e-6 or min(self.image_count_probs) < 0:
            raise ValueError("DemoSpec.image_count_probs must be non-negative and sum to 1")
        if self.brand_palette_size > len(COLOURS):
            raise ValueError(f"DemoSpec.brand_palette_size must be <= {len(COLOURS)}")


PRESETS: dict[str, DemoSpec] = {
    "tiny": DemoSpec(name="tiny", n_labels=150, n_train=600, n_test=200, image_size=32, n_brands=6),
    "small": DemoSpec(name="small", n_labels=3000, n_train=15000, n_test=5000, image_size=64, n_brands=110),
}


def resolve_spec(preset: str | DemoSpec) -> DemoSpec:
    """``preset`` itself when it is a :class:`DemoSpec`, else the preset of that name (``ValueError`` if none)."""
    if isinstance(preset, DemoSpec):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown demo preset {preset!r}; choose one of {sorted(PRESETS)} or pass a DemoSpec")
    return PRESETS[preset]


def spec_dict(spec: DemoSpec) -> dict[str, Any]:
    """The spec as plain JSON values (tuples as lists), as stored in ``demo_meta.json``."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))
