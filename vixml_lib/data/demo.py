"""A bundled, deterministic multimodal product catalogue for trying the workbench offline.

``make_demo_dataset(out_dir, preset="tiny" | "small", seed=0)`` writes a synthetic
dataset in the LF-AmazonTitles layout (see ``METHOD.md``), with product images in the
authors' ``.bin`` + map layout. It is built so that the claims ViXML makes can be tested
on it: a text-only model is capped, image fusion wins, a pretrained text encoder's
knowledge of synonyms helps, and label frequencies are long-tailed.

Generative process
------------------
- **Product types** (24, in 6 categories: furniture, home textiles, kitchen, apparel,
  bags & travel, electronics). Each type has a word used in label titles ("Couch"),
  synonyms a pretrained encoder knows and which queries mostly use ("sofa", "settee"),
  accessory nouns ("cover", "slipcover") and a silhouette drawn in its images (a couch,
  a mug with a handle, a backpack, ...).
- **Brands** are invented names; each brand sells in 1-2 categories and has a palette
  of 5 colours used across its product line.
- **Families** = (brand, material, type), unique. Each family is sold in 2-6 visual
  **variants** (colour x pattern; colours red, blue, green, yellow, black, white,
  orange, purple, pink, grey; patterns plain, striped, dotted, checked). Each variant
  is one label, and with probability ``p_second_edition`` a second label too (same
  look, title with a size suffix such as " - Large").
- **Label titles** are ``"<Brand> <Material> <TypeWord>"`` (+ suffix for the second
  edition); only a fraction ``p_label_colour`` names the colour. So the labels of one
  family share (near-)identical titles and differ only in their images.
- **Images** (``image_size`` px JPEG): the type's silhouette filled with the variant's
  colour and pattern, on a light neutral background, with random position, scale,
  rotation, mirroring, pattern phase and colour noise per view; 0 (``image_count_probs[0]``,
  ~7%), 1, 2 or 3 views per item.
- **Popularity** is long-tailed: families get Zipf weights ``rank**-zipf_exponent``
  (random ranks), variants within a family Dirichlet(``variant_concentration``) weights
  (fairly even, so the family's most popular variant is not a good guess).
- **Queries** (train and test, same distribution): a related product of a sampled
  family variant, e.g. an accessory ("Norvik sofa cover, velvet"). Titles name the brand,
  usually the material, and a synonym of the type (``p_synonym``) or the type word;
  they name the colour with probability ``p_query_colour`` (~20%) and the pattern with
  ``p_query_pattern``. The images show the variant's colour and pattern. Relevant labels:
  all labels of that variant (1-2) plus, for each of up to two related families (same
  brand and category, another type) with probability ``p_related``, the labels of its
  variant with the same colour (same pattern preferred) -- about 2-2.5 labels a query.
- **Self queries**: a fraction of test (``frac_self_test``) and train
  (``frac_self_train``) queries are copies of a label (same uid, title, content and
  image bytes). As in the real LF datasets the (query, itself) pair is not a target and
  is listed in ``filter_labels_test.txt`` / ``filter_labels_train.txt``.

Measured on ``small`` (seed 0; ~20 s of CPU, ~78 MB on disk): 3,000 labels in 552
families (3.9 variants each), 2.2 labels a query; train label frequency max 358,
median 6, 4.5% of labels never in train; items with 0/1/2/3 images ~7/33/30/30%; for
88% of test queries the family has identically titled labels of which one is relevant
and another is not; an oracle knowing the family from the title (uniform over its
labels) gets P@1 0.31, one that picks the family's most frequent train label 0.44.

Consequences: the title identifies the family (brand + material + type) but, in ~80% of
queries, not the variant, so a text-only oracle that knows the family gets P@1 around
1 / (variants per family); images identify type, colour and pattern but not the brand;
both together identify the relevant labels. Tail families never appear in training, so
matching "sofa" to "Couch" there needs prior knowledge of synonyms.

Files (in ``out_dir``): ``trn.json.gz``, ``tst.json.gz``, ``lbl.json.gz`` (one JSON
object a line: ``uid``, ``title``, ``content``, and ``target_ind`` / ``target_rel`` for
queries); ``<split>_imgs_384_3.bin`` (one base64 JPEG a line) and
``<split>_imgs_384_3_map.npy`` (plain int64, ``(n_items, max_images)``, -1 padded);
``filter_labels_test.txt`` / ``filter_labels_train.txt`` (``row label`` lines);
``<split>_attributes.csv`` (hidden ground truth per item, for probes); and
``demo_meta.json``, written last, marking a complete build. The same (preset, seed)
always gives byte-identical files.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import gzip
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ..io_utils import read_json, write_json

__all__ = ["DemoSpec", "PRESETS", "make_demo_dataset", "GENERATOR_VERSION", "META_FILE", "SPLITS", "demo_files"]

GENERATOR_VERSION = 1
META_FILE = "demo_meta.json"
SPLITS = ("trn", "tst", "lbl")


@dataclass(frozen=True)
class DemoSpec:
    """Size and generative knobs of a demo catalogue (see the module docstring)."""

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
            raise ValueError(f"DemoSpec.variants_per_family must be (lo, hi) with 1 <= lo <= hi, got {self.variants_per_family}")
        if hi > self.brand_palette_size * len(_PATTERNS):
            raise ValueError("DemoSpec.variants_per_family upper bound exceeds the distinct colour x pattern looks")
        if len(self.image_count_probs) != self.max_images + 1:
            raise ValueError("DemoSpec.image_count_probs needs max_images + 1 entries (for 0..max_images images)")
        if abs(sum(self.image_count_probs) - 1.0) > 1e-6 or min(self.image_count_probs) < 0:
            raise ValueError("DemoSpec.image_count_probs must be non-negative and sum to 1")
        if self.brand_palette_size > len(_COLOURS):
            raise ValueError(f"DemoSpec.brand_palette_size must be <= {len(_COLOURS)}")


def demo_files(max_images: int = 3) -> list[str]:
    """Names of the files of a demo dataset (besides ``demo_meta.json``)."""
    del max_images  # the authors' file names always say 384_3
    names = [f"{s}.json.gz" for s in SPLITS]
    names += [f"{s}_imgs_384_3.bin" for s in SPLITS]
    names += [f"{s}_imgs_384_3_map.npy" for s in SPLITS]
    names += [f"{s}_attributes.csv" for s in SPLITS]
    names += ["filter_labels_test.txt", "filter_labels_train.txt"]
    return names


# ----------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------

_COLOURS: list[tuple[str, tuple[int, int, int]]] = [
    ("red", (200, 30, 35)),
    ("blue", (35, 75, 205)),
    ("green", (40, 150, 60)),
    ("yellow", (240, 205, 40)),
    ("black", (25, 25, 28)),
    ("white", (246, 246, 244)),
    ("orange", (240, 125, 25)),
    ("purple", (125, 50, 160)),
    ("pink", (240, 130, 180)),
    ("grey", (128, 128, 132)),
]
_LIGHT_COLOURS = {"yellow", "white", "pink"}
_PATTERNS = ["plain", "striped", "dotted", "checked"]
_PATTERN_PROBS = [0.55, 0.15, 0.15, 0.15]

_CATEGORIES: dict[str, list[str]] = {
    "furniture": ["Oak", "Walnut", "Velvet", "Linen", "Leather", "Rattan", "Metal", "Pine"],
    "home textiles": ["Cotton", "Linen", "Wool", "Velvet", "Jute", "Silk", "Bamboo", "Microfiber"],
    "kitchen": ["Ceramic", "Porcelain", "Glass", "Steel", "Bamboo", "Enamel", "Stoneware", "Copper"],
    "apparel": ["Leather", "Canvas", "Suede", "Wool", "Denim", "Nylon", "Fleece", "Cotton"],
    "bags & travel": ["Nylon", "Leather", "Canvas", "Polyester", "Aluminium", "Cork", "Vinyl", "Tweed"],
    "electronics": ["Aluminium", "Plastic", "Silicone", "Carbon", "Wooden", "Titanium", "Rubber", "Steel"],
}

# (key, category, label word, query synonyms, accessory nouns)
_TYPES: list[tuple[str, str, str, list[str], list[str]]] = [
    ("sofa", "furniture", "Couch", ["sofa", "settee"], ["cover", "slipcover", "armrest covers", "throw blanket"]),
    ("armchair", "furniture", "Armchair", ["lounge chair", "easy chair"], ["cover", "seat pad", "footstool"]),
    ("lamp", "furniture", "Lamp", ["light", "lantern"], ["shade", "bulb set", "dimmer switch"]),
    ("table", "furniture", "Side Table", ["end table", "nightstand"], ["tablecloth", "glass top", "felt pads"]),
    ("rug", "home textiles", "Rug", ["carpet", "mat"], ["gripper pad", "runner", "cleaning kit"]),
    ("pillow", "home textiles", "Pillow", ["cushion", "bolster"], ["case", "insert", "zip cover"]),
    ("curtain", "home textiles", "Curtains", ["drapes", "window panels"], ["tie-backs", "rod", "hooks"]),
    ("towel", "home textiles", "Towel", ["bath sheet", "washcloth"], ["hook", "rail", "gift box"]),
    ("mug", "kitchen", "Mug", ["cup", "beaker"], ["coaster", "lid", "sleeve"]),
    ("bottle", "kitchen", "Bottle", ["flask", "canteen"], ["cap", "carry strap", "cleaning brush"]),
    ("teapot", "kitchen", "Teapot", ["tea kettle", "kettle"], ["infuser", "cosy", "trivet"]),
    ("bowl", "kitchen", "Bowl", ["dish", "basin"], ["lid", "stand", "serving spoon"]),
    ("sneakers", "apparel", "Sneakers", ["trainers", "running shoes"], ["laces", "insoles", "shoe bag"]),
    ("boots", "apparel", "Boots", ["booties", "wellingtons"], ["boot trees", "insoles", "waterproofing spray"]),
    ("jacket", "apparel", "Jacket", ["coat", "parka"], ["hood", "hanger", "zip pull"]),
    ("hat", "apparel", "Hat", ["cap", "beanie"], ["hat band", "hat box", "brim clips"]),
    ("backpack", "bags & travel", "Backpack", ["rucksack", "daypack"], ["rain cover", "chest strap", "organizer insert"]),
    ("handbag", "bags & travel", "Handbag", ["purse", "tote"], ["strap", "organizer", "dust bag"]),
    ("suitcase", "bags & travel", "Suitcase", ["luggage", "trolley case"], ["luggage tag", "cover", "lock"]),
    ("umbrella", "bags & travel", "Umbrella", ["parasol", "brolly"], ["sleeve", "stand", "canopy"]),
    ("headphones", "electronics", "Headphones", ["headset", "earphones"], ["ear pads", "carrying case", "cable"]),
    ("speaker", "electronics", "Speaker", ["loudspeaker", "sound box"], ["stand", "wall mount", "charging cable"]),
    ("phonecase", "electronics", "Phone Case", ["cellphone cover", "smartphone cover"], ["screen protector", "lanyard", "ring holder"]),
    ("watch", "electronics", "Watch", ["wristwatch", "timepiece"], ["strap", "charger", "screen protector"]),
]
_CATEGORY_NAMES = list(_CATEGORIES)
_EDITION_SUFFIXES = [" - Large", " - XL", " - Set of 2", " - Deluxe", " - Family Size", " - Compact"]
_ADJECTIVES = ["classic", "compact", "vintage", "modern", "premium", "everyday", "lightweight", "deluxe"]

_ACC_TEMPLATES = ["{brand} {obj} {acc}, {mat}", "{mat} {obj} {acc} for {brand}", "{acc} for {brand} {mat} {obj}", "{brand} {mat} {obj} {acc}"]
_ACC_TEMPLATES_NOMAT = ["{brand} {obj} {acc}", "{acc} for {brand} {obj}"]
_SIM_TEMPLATES = ["{brand} {adj} {mat} {obj}", "{mat} {obj} by {brand}, {adj}"]
_SIM_TEMPLATES_NOMAT = ["{brand} {adj} {obj}"]

_ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "st", "tr", "sk", "fl"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "y"]
_CODAS = ["", "", "n", "r", "l", "k", "s", "m", "x", "nd", "rk"]


PRESETS: dict[str, DemoSpec] = {
    "tiny": DemoSpec(name="tiny", n_labels=150, n_train=600, n_test=200, image_size=32, n_brands=6),
    "small": DemoSpec(name="small", n_labels=3000, n_train=15000, n_test=5000, image_size=64, n_brands=110),
}


def _brand_names(rng: np.random.Generator, n: int) -> list[str]:
    banned = {t[2].lower() for t in _TYPES} | {c for c, _ in _COLOURS}
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        k = int(rng.integers(2, 4))
        s = "".join(_ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(k))
        s += _CODAS[rng.integers(len(_CODAS))]
        if not 4 <= len(s) <= 9 or s in seen or s in banned:
            continue
        seen.add(s)
        names.append(s.capitalize())
    return names


# ----------------------------------------------------------------------------------
# Shapes: each type is a list of (polygon in unit coordinates [-1, 1]^2 with y down,
# fill) primitives drawn in order; fill=False cuts (draws background).
# ----------------------------------------------------------------------------------

def _R(x0, y0, x1, y1):
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)


def _E(cx, cy, rx, ry, a0=0.0, a1=2 * math.pi, n=20):
    t = np.linspace(a0, a1, n, endpoint=abs(a1 - a0 - 2 * math.pi) > 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _P(*pts):
    return np.array(pts, dtype=np.float64)


def _mirror(poly):
    return poly[::-1] * np.array([-1.0, 1.0])


def _shapes() -> dict[str, list[tuple[np.ndarray, bool]]]:
    pi = math.pi
    S: dict[str, list[tuple[np.ndarray, bool]]] = {}
    S["sofa"] = [(_R(-0.85, -0.5, 0.85, 0.05), True), (_R(-1, 0.0, 1, 0.55), True), (_R(-1, -0.15, -0.78, 0.6), True),
                 (_R(0.78, -0.15, 1, 0.6), True), (_R(-0.9, 0.55, -0.78, 0.78), True), (_R(0.78, 0.55, 0.9, 0.78), True)]
    S["armchair"] = [(_R(-0.55, -0.9, 0.55, 0.1), True), (_R(-0.7, 0.0, 0.7, 0.45), True), (_R(-0.78, -0.2, -0.5, 0.5), True),
                     (_R(0.5, -0.2, 0.78, 0.5), True), (_R(-0.68, 0.45, -0.55, 0.88), True), (_R(0.55, 0.45, 0.68, 0.88), True)]
    S["lamp"] = [(_P((-0.35, -0.92), (0.35, -0.92), (0.62, -0.3), (-0.62, -0.3)), True), (_R(-0.07, -0.3, 0.07, 0.72), True),
                 (_E(0, 0.8, 0.45, 0.13), True)]
    S["table"] = [(_R(-0.92, -0.48, 0.92, -0.3), True), (_R(-0.8, -0.3, -0.66, 0.85), True), (_R(0.66, -0.3, 0.8, 0.85), True),
                  (_R(-0.75, 0.28, 0.75, 0.4), True)]
    rug = [(_R(-0.88, -0.62, 0.88, 0.62), True)]
    for y in np.linspace(-0.55, 0.55, 6):
        rug += [(_R(-1.0, y - 0.035, -0.88, y + 0.035), True), (_R(0.88, y - 0.035, 1.0, y + 0.035), True)]
    rug += [(_R(-0.7, -0.45, 0.7, -0.4), False), (_R(-0.7, 0.4, 0.7, 0.45), False)]
    S["rug"] = rug
    S["pillow"] = [(_P((-0.82, -0.82), (0, -0.62), (0.82, -0.82), (0.62, 0), (0.82, 0.82), (0, 0.62), (-0.82, 0.82), (-0.62, 0)), True)]
    left = _P((-0.92, -0.85), (-0.12, -0.85), (-0.38, 0.92), (-0.92, 0.92))
    S["curtain"] = [(_R(-1, -1, 1, -0.88), True), (left, True), (_mirror(left), True)]
    S["towel"] = [(_R(-0.82, -0.55, 0.82, -0.12), True), (_R(-0.76, -0.06, 0.76, 0.3), True), (_R(-0.7, 0.36, 0.7, 0.7), True)]
    S["mug"] = [(_E(0.5, 0.05, 0.36, 0.38), True), (_E(0.5, 0.05, 0.19, 0.21), False), (_R(-0.6, -0.62, 0.36, 0.75), True)]
    S["bottle"] = [(_R(-0.36, -0.35, 0.36, 0.92), True), (_P((-0.36, -0.35), (-0.15, -0.62), (0.15, -0.62), (0.36, -0.35)), True),
                   (_R(-0.14, -0.86, 0.14, -0.55), True), (_R(-0.18, -1.0, 0.18, -0.82), True)]
    S["teapot"] = [(_E(-0.66, 0.1, 0.3, 0.36), True), (_E(-0.66, 0.1, 0.15, 0.21), False),
                   (_P((0.45, 0.05), (0.93, -0.45), (1.0, -0.36), (0.55, 0.38)), True), (_E(0, 0.15, 0.62, 0.5), True),
                   (_E(0, -0.38, 0.26, 0.12), True), (_E(0, -0.53, 0.08, 0.08), True)]
    S["bowl"] = [(_E(0, -0.15, 0.95, 0.75, 0, pi), True), (_R(-0.3, 0.55, 0.3, 0.75), True)]
    S["sneakers"] = [(_P((-0.95, 0.1), (-0.9, -0.3), (-0.5, -0.35), (-0.35, -0.62), (0.05, -0.55), (0.2, -0.2), (0.7, -0.05),
                         (0.95, 0.15), (0.95, 0.35), (-0.95, 0.35)), True), (_R(-0.98, 0.35, 0.98, 0.52), True),
                     (_R(-0.3, -0.3, 0.1, -0.25), False)]
    S["boots"] = [(_P((-0.55, -0.92), (0.1, -0.92), (0.15, 0.1), (0.85, 0.3), (0.92, 0.72), (-0.55, 0.72)), True),
                  (_R(-0.55, 0.72, 0.92, 0.82), True), (_R(-0.55, 0.82, -0.22, 0.92), True)]
    sleeve = _P((-0.45, -0.8), (-0.95, 0.6), (-0.74, 0.72), (-0.38, -0.2))
    S["jacket"] = [(_P((-0.45, -0.8), (-0.15, -0.9), (0, -0.68), (0.15, -0.9), (0.45, -0.8), (0.5, 0.88), (-0.5, 0.88)), True),
                   (sleeve, True), (_mirror(sleeve), True), (_R(-0.02, -0.68, 0.02, 0.88), False)]
    S["hat"] = [(_E(0, 0.12, 0.55, 0.72, pi, 2 * pi), True), (_E(0, 0.16, 0.97, 0.17), True)]
    S["backpack"] = [(_E(0, -0.92, 0.2, 0.14), True), (_E(0, -0.92, 0.1, 0.07), False), (_E(0, -0.55, 0.6, 0.32, pi, 2 * pi), True),
                     (_R(-0.6, -0.56, 0.6, 0.92), True), (_R(-0.45, 0.28, 0.45, 0.34), False)]
    S["handbag"] = [(_E(0, -0.22, 0.48, 0.62, pi, 2 * pi), True), (_E(0, -0.2, 0.34, 0.46, pi, 2 * pi), False),
                    (_P((-0.72, -0.22), (0.72, -0.22), (0.92, 0.8), (-0.92, 0.8)), True)]
    S["suitcase"] = [(_R(-0.22, -0.86, 0.22, -0.6), True), (_R(-0.13, -0.78, 0.13, -0.6), False), (_R(-0.6, -0.62, 0.6, 0.84), True),
                     (_R(-0.27, -0.45, -0.22, 0.7), False), (_R(0.22, -0.45, 0.27, 0.7), False),
                     (_E(-0.45, 0.92, 0.1, 0.08), True), (_E(0.45, 0.92, 0.1, 0.08), True)]
    S["umbrella"] = [(_E(0, 0.05, 0.97, 0.75, pi, 2 * pi), True), (_R(-0.045, 0.0, 0.045, 0.78), True),
                     (_E(-0.13, 0.78, 0.175, 0.17, 0, pi), True), (_E(-0.13, 0.78, 0.085, 0.08, 0, pi), False)]
    S["headphones"] = [(_E(0, 0.05, 0.78, 0.85, pi, 2 * pi), True), (_E(0, 0.05, 0.64, 0.72, pi, 2 * pi), False),
                       (_E(-0.7, 0.2, 0.23, 0.36), True), (_E(0.7, 0.2, 0.23, 0.36), True)]
    S["speaker"] = [(_R(-0.55, -0.92, 0.55, 0.92), True), (_E(0, 0.32, 0.36, 0.36), False), (_E(0, 0.32, 0.2, 0.2), True),
                    (_E(0, -0.45, 0.16, 0.16), False)]
    S["phonecase"] = [(_R(-0.46, -0.92, 0.46, 0.92), True), (_R(-0.36, -0.82, -0.05, -0.45), False)]
    S["watch"] = [(_R(-0.26, -1.0, 0.26, 1.0), True), (_E(0, 0, 0.52, 0.52), True), (_E(0, 0, 0.4, 0.4), False),
                  (_E(0, 0, 0.06, 0.06), True), (_R(-0.03, -0.32, 0.03, 0.0), True), (_R(0.0, -0.03, 0.25, 0.03), True)]
    assert set(S) == {t[0] for t in _TYPES}
    return S


# ----------------------------------------------------------------------------------
# Image rendering
# ----------------------------------------------------------------------------------

class _Renderer:
    """Draws product views: silhouette of the type, variant colour and pattern, jitter."""

    def __init__(self, size: int, quality: int):
        self.size = size
        self.quality = quality
        shapes = _shapes()
        self.shapes = [shapes[t[0]] for t in _TYPES]
        S = size
        yy, xx = np.mgrid[0 : 2 * S, 0 : 2 * S]
        w = max(2, S // 10)  # stripe / check width
        p = max(5, S // 6)  # dot spacing
        r = max(1.2, p * 0.28)
        self.patterns = [
            np.zeros((2 * S, 2 * S), dtype=bool),
            (xx // w) % 2 == 0,
            ((xx % p) - p / 2 + 0.5) ** 2 + ((yy % p) - p / 2 + 0.5) ** 2 <= r * r,
            ((xx // w) + (yy // w)) % 2 == 0,
        ]
        self.pattern_imgs = [Image.fromarray((p * 255).astype(np.uint8), "L") for p in self.patterns]
        self.colours = np.array([c for _, c in _COLOURS], dtype=np.float64)
        self.secondary = np.array([(45.0, 45.0, 50.0) if n in _LIGHT_COLOURS else (238.0, 238.0, 236.0) for n, _ in _COLOURS])

    def render(self, type_idx: int, colour_idx: int, pattern_idx: int, rng: np.random.Generator) -> bytes:
        S = self.size
        u = rng.random(8)
        z = rng.normal(0.0, 1.0, 9)
        # --- geometry jitter: scale, rotation, mirror, position
        scale = (0.30 + 0.13 * u[0]) * S
        ang = -0.35 + 0.7 * u[1]
        room = max(S / 2 - scale, 0.0)
        cx = S / 2 + (1.2 * u[3] - 0.6) * room
        cy = S / 2 + (1.2 * u[4] - 0.6) * room
        c, s = math.cos(ang), math.sin(ang)
        rot = np.array([[c, s], [-s, c]]) * scale
        if u[2] < 0.5:
            rot = rot * np.array([[-1.0], [1.0]])
        off = np.array([cx, cy])
        mask = Image.new("L", (S, S), 0)
        draw = ImageDraw.Draw(mask)
        for poly, fill in self.shapes[type_idx]:
            draw.polygon((poly @ rot + off).ravel().tolist(), fill=255 if fill else 0)
        # --- colours: product colour with brightness and per-channel noise, light grey background
        prim = self.colours[colour_idx] * (0.88 + 0.2 * u[5]) + 7.0 * z[0:3]
        sec = self.secondary[colour_idx] + 6.0 * z[3:6]
        bg = 150.0 + 65.0 * u[6] + 6.0 * z[6:9]  # darker than white products

        cols = np.clip(np.rint(np.stack([bg, prim, sec, prim * 0.6])), 0, 255).astype(int).tolist()
        img = Image.new("RGB", (S, S), tuple(cols[0]))
        img.paste(tuple(cols[1]), mask=mask)
        if pattern_idx:
            ox, oy = int(u[7] * S), int((u[7] * 7919.0) % 1.0 * S)
            pat = self.pattern_imgs[pattern_idx].crop((ox, oy, ox + S, oy + S))
            img.paste(tuple(cols[2]), mask=ImageChops.multiply(mask, pat))
        # darker outline (mask minus its 4-neighbour erosion) so light products stand out
        m = np.asarray(mask) > 0
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        img.paste(tuple(cols[3]), mask=Image.fromarray((m & ~inner).view(np.uint8) * np.uint8(255), "L"))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality, optimize=True)
        return base64.b64encode(buf.getvalue())


# ----------------------------------------------------------------------------------
# Catalogue generation
# ----------------------------------------------------------------------------------

def _pick(rng: np.random.Generator, cdf: np.ndarray) -> int:
    """Index drawn with the probabilities whose cumulative sums are ``cdf`` (fast for scalars)."""
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)


@dataclass
class _Family:
    fid: int
    brand: int
    material: str
    type_idx: int
    category: str
    variants: list[tuple[int, int]]  # (colour index, pattern index)
    variant_labels: list[list[int]]
    variant_weights: np.ndarray
    related: list[int] = dataclasses.field(default_factory=list)


@dataclass
class _Item:
    uid: str
    title: str
    content: str
    fid: int
    variant: int
    edition: int = -1  # labels only
    targets: list[int] = dataclasses.field(default_factory=list)
    title_colour: bool = False
    title_pattern: bool = False
    title_synonym: bool = False
    content_colour: bool = False
    copy_of_label: int = -1
    image_lines: list[bytes] = dataclasses.field(default_factory=list)


class _Builder:
    def __init__(self, spec: DemoSpec, seed: int):
        self.spec = spec
        self.seed = seed
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 7_331])))
        self.uids: set[str] = set()
        self.renderer = _Renderer(spec.image_size, spec.jpeg_quality)
        self.image_count_cdf = np.cumsum(spec.image_count_probs)

    # --- ids
    def uid(self) -> str:
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        while True:
            u = "B0" + "".join(alphabet[i] for i in self.rng.integers(0, len(alphabet), 8))
            if u not in self.uids:
                self.uids.add(u)
                return u

    # --- catalogue
    def build_catalogue(self) -> None:
        sp, rng = self.spec, self.rng
        self.brands = _brand_names(rng, sp.n_brands)
        n_cat = len(_CATEGORY_NAMES)
        self.brand_cats = [
            sorted(rng.choice(n_cat, size=1 + int(rng.random() < 0.5), replace=False).tolist()) for _ in range(sp.n_brands)
        ]
        self.brand_palette = [
            sorted(rng.choice(len(_COLOURS), size=sp.brand_palette_size, replace=False).tolist()) for _ in range(sp.n_brands)
        ]
        types_by_cat = {c: [i for i, t in enumerate(_TYPES) if t[1] == c] for c in _CATEGORY_NAMES}
        self.families: list[_Family] = []
        self.labels: list[_Item] = []
        seen: set[tuple[int, int, str]] = set()
        lo, hi = sp.variants_per_family
        tries = 0
        while len(self.labels) < sp.n_labels:
            tries += 1
            if tries > 1000 * sp.n_labels:
                raise RuntimeError("could not generate enough distinct families; raise n_brands")
            b = int(rng.integers(sp.n_brands))
            cat = _CATEGORY_NAMES[self.brand_cats[b][int(rng.integers(len(self.brand_cats[b])))]]
            t = int(rng.choice(types_by_cat[cat]))
            mats = _CATEGORIES[cat]
            m = mats[int(rng.integers(len(mats)))]
            if (b, t, m) in seen:
                continue
            seen.add((b, t, m))
            fid = len(self.families)
            V = int(rng.integers(lo, hi + 1))
            looks: list[tuple[int, int]] = []
            while len(looks) < V:
                look = (int(rng.choice(self.brand_palette[b])), int(rng.choice(len(_PATTERNS), p=_PATTERN_PROBS)))
                if look not in looks:
                    looks.append(look)
            suffix = _EDITION_SUFFIXES[int(rng.integers(len(_EDITION_SUFFIXES)))]
            fam = _Family(fid, b, m, t, cat, looks, [], rng.dirichlet(np.full(V, sp.variant_concentration)))
            base = f"{self.brands[b]} {m} {_TYPES[t][2]}"
            for v, (ci, pi) in enumerate(looks):
                ids = []
                for e in range(1 + int(rng.random() < sp.p_second_edition)):
                    if len(self.labels) >= sp.n_labels:
                        break
                    title = base + (suffix if e else "")
                    has_col = bool(rng.random() < sp.p_label_colour)
                    if has_col:
                        look_words = _COLOURS[ci][0].capitalize() + ("" if pi == 0 else " " + _PATTERNS[pi].capitalize())
                        title += f", {look_words}"
                    content_col = bool(rng.random() < sp.p_content_colour)
                    content = f"{_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))].capitalize()} {m.lower()} {_TYPES[t][2].lower()} from {self.brands[b]}."
                    if content_col:
                        content += f" Shown in {_COLOURS[ci][0]}{'' if pi == 0 else ' ' + _PATTERNS[pi]}."
                    lab = _Item(self.uid(), title, content, fid, v, edition=e, title_colour=has_col, content_colour=content_col,
                                title_pattern=has_col and pi != 0)
                    ids.append(len(self.labels))
                    self.labels.append(lab)
                fam.variant_labels.append(ids)
            # drop variants that got no label (only possible in the last family)
            keep = [v for v, ids in enumerate(fam.variant_labels) if ids]
            if len(keep) < len(looks):
                fam.variants = [looks[v] for v in keep]
                fam.variant_labels = [fam.variant_labels[v] for v in keep]
                w = fam.variant_weights[keep]
                fam.variant_weights = w / w.sum()
            self.families.append(fam)
        # related families: same brand, same category, another type
        by_brand_cat: dict[tuple[int, str], list[int]] = {}
        for f in self.families:
            by_brand_cat.setdefault((f.brand, f.category), []).append(f.fid)
        for f in self.families:
            f.related = [g for g in by_brand_cat[(f.brand, f.category)] if self.families[g].type_idx != f.type_idx]
        # Zipf popularity over families, random ranks
        nf = len(self.families)
        ranks = rng.permutation(nf) + 1
        w = ranks.astype(np.float64) ** (-sp.zipf_exponent)
        self.family_weights = w / w.sum()
        self.family_cdf = np.cumsum(self.family_weights)

    def _related_labels(self, fam: _Family, v: int) -> list[int]:
        rng = self.rng
        out: list[int] = []
        if not fam.related:
            return out
        ci, pi = fam.variants[v]
        k = min(2, len(fam.related))
        for g in rng.choice(fam.related, size=k, replace=False):
            if rng.random() >= self.spec.p_related:
                continue
            gf = self.families[int(g)]
            same = [w for w, (c2, _) in enumerate(gf.variants) if c2 == ci]
            if not same:
                continue
            exact = [w for w in same if gf.variants[w][1] == pi]
            w = exact[0] if exact else same[int(rng.integers(len(same)))]
            out.extend(gf.variant_labels[w])
        return out

    def make_query(self) -> _Item:
        sp, rng = self.spec, self.rng
        fid = _pick(rng, self.family_cdf)
        fam = self.families[fid]
        v = _pick(rng, np.cumsum(fam.variant_weights))
        targets = sorted(set(fam.variant_labels[v]) | set(self._related_labels(fam, v)))
        _, _, tword, syns, accs = _TYPES[fam.type_idx]
        use_syn = bool(rng.random() < sp.p_synonym)
        noun = syns[int(rng.integers(len(syns)))] if use_syn else tword.lower()
        ci, pi = fam.variants[v]
        col = bool(rng.random() < sp.p_query_colour)
        pat = pi != 0 and bool(rng.random() < sp.p_query_pattern)
        words = ([_COLOURS[ci][0]] if col else []) + ([_PATTERNS[pi]] if pat else []) + [noun]
        obj = " ".join(words)
        no_mat = bool(rng.random() < sp.p_query_no_material)
        accessory = rng.random() < 0.7
        if accessory:
            pool = _ACC_TEMPLATES_NOMAT if no_mat else _ACC_TEMPLATES
        else:
            pool = _SIM_TEMPLATES_NOMAT if no_mat else _SIM_TEMPLATES
        tmpl = pool[int(rng.integers(len(pool)))]
        acc = accs[int(rng.integers(len(accs)))]
        adj = _ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))]
        brand, mat = self.brands[fam.brand], fam.material.lower()
        title = tmpl.format(brand=brand, obj=obj, acc=acc, mat=mat, adj=adj)
        title = title[0].upper() + title[1:]
        content_col = bool(rng.random() < sp.p_content_colour)
        if accessory:
            content = f"{acc.capitalize()} made for the {brand} {mat} {noun}."
        else:
            art = "An" if adj[0] in "aeiou" else "A"
            content = f"{art} {adj} {mat} {noun} in the style of {brand}."
        if content_col:
            content += f" Matches the {_COLOURS[ci][0]}{'' if pi == 0 else ' ' + _PATTERNS[pi]} finish."
        return _Item(self.uid(), title, content, fid, v, targets=targets, title_colour=col, title_pattern=pat,
                     title_synonym=use_syn, content_colour=content_col)

    def make_self_query(self) -> _Item | None:
        rng = self.rng
        lid = int(rng.integers(len(self.labels)))
        lab = self.labels[lid]
        fam = self.families[lab.fid]
        targets = set(fam.variant_labels[lab.variant]) | set(self._related_labels(fam, lab.variant))
        targets.discard(lid)
        if not targets:
            return None
        return _Item(lab.uid, lab.title, lab.content, lab.fid, lab.variant, targets=sorted(targets), title_colour=lab.title_colour,
                     title_pattern=lab.title_pattern, content_colour=lab.content_colour, copy_of_label=lid)

    def make_queries(self, n: int, frac_self: float) -> list[_Item]:
        rng = self.rng
        n_self = int(round(frac_self * n))
        self_rows = set(rng.choice(n, size=n_self, replace=False).tolist()) if n_self else set()
        out = []
        for i in range(n):
            q = None
            if i in self_rows:
                for _ in range(100):
                    q = self.make_self_query()
                    if q is not None:
                        break
            out.append(q if q is not None else self.make_query())
        return out

    # --- images
    def n_images(self) -> int:
        return _pick(self.rng, self.image_count_cdf)

    def render_item(self, item: _Item) -> None:
        fam = self.families[item.fid]
        ci, pi = fam.variants[item.variant]
        item.image_lines = [self.renderer.render(fam.type_idx, ci, pi, self.rng) for _ in range(self.n_images())]


# ----------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------

def _write_jsonl_gz(path: Path, items: list[_Item], with_targets: bool) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        for it in items:
            obj: dict[str, Any] = {"uid": it.uid, "title": it.title, "content": it.content}
            if with_targets:
                obj["target_ind"] = list(it.targets)
                obj["target_rel"] = [1.0] * len(it.targets)
            gz.write(json.dumps(obj, ensure_ascii=False).encode("utf-8"))
            gz.write(b"\n")


def _write_images(out: Path, split: str, items: list[_Item], max_images: int) -> int:
    mp = np.full((len(items), max_images), -1, dtype=np.int64)
    n = 0
    with open(out / f"{split}_imgs_384_3.bin", "wb") as f:
        for i, it in enumerate(items):
            for j, line in enumerate(it.image_lines):
                f.write(line)
                f.write(b"\n")
                mp[i, j] = n
                n += 1
    with open(out / f"{split}_imgs_384_3_map.npy", "wb") as f:
        np.save(f, mp, allow_pickle=False)
    return n


_ATTR_COLUMNS = ["row", "uid", "kind", "category", "type", "family", "brand", "material", "variant", "colour", "pattern",
                 "edition", "n_targets", "title_mentions_colour", "title_mentions_pattern", "title_uses_synonym",
                 "content_mentions_colour", "n_images", "copy_of_label"]


def _write_attributes(path: Path, b: _Builder, items: list[_Item], kind: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(_ATTR_COLUMNS)
        for i, it in enumerate(items):
            fam = b.families[it.fid]
            ci, pi = fam.variants[it.variant]
            w.writerow([i, it.uid, kind, fam.category, _TYPES[fam.type_idx][0], it.fid, b.brands[fam.brand], fam.material.lower(),
                        it.variant, _COLOURS[ci][0], _PATTERNS[pi], it.edition, len(it.targets), int(it.title_colour),
                        int(it.title_pattern), int(it.title_synonym), int(it.content_colour), len(it.image_lines),
                        it.copy_of_label])


def _write_filter(path: Path, items: list[_Item]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, it in enumerate(items):
            if it.copy_of_label >= 0:
                f.write(f"{i} {it.copy_of_label}\n")
                n += 1
    return n


_DESCRIPTION = (
    "Synthetic product catalogue. Families = brand + material + product type (24 types with synonyms, e.g. "
    "Couch/sofa, Sneakers/trainers, Mug/cup); each family is sold in 2-6 visual variants (colour x pattern), each "
    "variant one label (sometimes two: a size edition). Label titles usually omit the colour, so labels of a family "
    "have (near-)identical titles and differ only in their images (type silhouette in the variant's colour and "
    "pattern, jittered per view). Queries are related products (accessories) of a Zipf-popular family variant; their "
    "titles use the brand, the material and mostly a synonym of the type, and name the colour in ~20%; their images "
    "show the variant. Targets: the variant's labels plus same-colour labels of related families of the brand. A few "
    "queries are copies of labels; those self pairs are excluded from targets and listed in filter_labels_*.txt."
)


def _spec_dict(spec: DemoSpec) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _build(out: Path, spec: DemoSpec, seed: int) -> dict[str, Any]:
    b = _Builder(spec, seed)
    b.build_catalogue()
    trn = b.make_queries(spec.n_train, spec.frac_self_train)
    tst = b.make_queries(spec.n_test, spec.frac_self_test)
    for it in b.labels:
        b.render_item(it)
    for items in (trn, tst):
        for it in items:
            if it.copy_of_label >= 0:
                it.image_lines = list(b.labels[it.copy_of_label].image_lines)
            else:
                b.render_item(it)
    splits = {"trn": trn, "tst": tst, "lbl": b.labels}
    counts: dict[str, Any] = {"n_labels": len(b.labels), "n_train": len(trn), "n_test": len(tst),
                              "n_families": len(b.families), "n_brands": len(b.brands), "n_types": len(_TYPES)}
    for split, items in splits.items():
        _write_jsonl_gz(out / f"{split}.json.gz", items, with_targets=split != "lbl")
        counts[f"n_images_{split}"] = _write_images(out, split, items, spec.max_images)
        _write_attributes(out / f"{split}_attributes.csv", b, items, "label" if split == "lbl" else "query")
    counts["n_filter_test"] = _write_filter(out / "filter_labels_test.txt", tst)
    counts["n_filter_train"] = _write_filter(out / "filter_labels_train.txt", trn)
    counts["avg_labels_per_train_query"] = round(float(np.mean([len(q.targets) for q in trn])), 4)
    counts["avg_labels_per_test_query"] = round(float(np.mean([len(q.targets) for q in tst])), 4)
    counts["avg_variants_per_family"] = round(float(np.mean([len(f.variants) for f in b.families])), 4)
    return counts


def _check_existing(out_dir: Path, spec: DemoSpec, seed: int, overwrite: bool) -> bool:
    """True when ``out_dir`` already holds this exact dataset; raise when it holds another."""
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a directory")
    marker = out_dir / META_FILE
    if not marker.exists():
        if any(out_dir.iterdir()):
            raise FileExistsError(
                f"{out_dir}: directory is not empty and holds no {META_FILE}, so it is not a demo dataset; "
                f"refusing to replace it (even with overwrite=True). Choose another directory or empty it."
            )
        return False
    try:
        meta = read_json(marker)
    except (OSError, ValueError):
        meta = {}
    same = (
        meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("preset") == spec.name
        and meta.get("seed") == seed
        and meta.get("spec") == _spec_dict(spec)
    )
    complete = same and all(
        (out_dir / name).is_file() and (out_dir / name).stat().st_size == size for name, size in meta.get("files", {}).items()
    ) and set(meta.get("files", {})) == set(demo_files(spec.max_images))
    if complete:
        return True
    if overwrite:
        return False
    if same:
        why = "files listed in its marker are missing or have changed size"
    else:
        why = (f"it was made with preset={meta.get('preset')!r}, seed={meta.get('seed')!r}, "
               f"generator_version={meta.get('generator_version')!r}")
        if meta.get("preset") == spec.name and meta.get("seed") == seed:
            why += " but different spec fields"
    raise FileExistsError(
        f"{out_dir}: holds a demo dataset that does not match preset={spec.name!r}, seed={seed} "
        f"(generator_version={GENERATOR_VERSION}): {why}. Pass overwrite=True to rebuild it, or use another directory."
    )


def make_demo_dataset(out_dir: str | os.PathLike, preset: str | DemoSpec = "tiny", seed: int = 0,
                      overwrite: bool = False) -> Path:
    """Build the demo catalogue ``preset`` ("tiny", "small" or a :class:`DemoSpec`) in ``out_dir``.

    Deterministic: the same (preset, seed) gives byte-identical files. When ``out_dir``
    already holds a complete build of the same preset and seed (its ``demo_meta.json``
    says so and all files are there), it is returned as is. A build of another preset
    or seed raises ``FileExistsError`` unless ``overwrite=True``. The dataset is built
    in a temporary sibling directory and renamed into place at the end, so an
    interrupted build leaves nothing half-written. Returns ``Path(out_dir)``.
    """
    if isinstance(preset, DemoSpec):
        spec = preset
    else:
        if preset not in PRESETS:
            raise ValueError(f"unknown demo preset {preset!r}; choose one of {sorted(PRESETS)} or pass a DemoSpec")
        spec = PRESETS[preset]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    out_dir = Path(out_dir)
    if _check_existing(out_dir, spec, seed, overwrite):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        counts = _build(tmp, spec, seed)
        files = {name: (tmp / name).stat().st_size for name in demo_files(spec.max_images)}
        meta = {
            "generator": "vixml_lib.data.demo",
            "generator_version": GENERATOR_VERSION,
            "preset": spec.name,
            "seed": seed,
            "spec": _spec_dict(spec),
            "counts": counts,
            "files": files,
            "description": _DESCRIPTION,
        }
        write_json(tmp / META_FILE, meta)  # last: marks the build complete
        os.chmod(tmp / META_FILE, 0o644)  # mkstemp/mkdtemp create private files
        os.chmod(tmp, 0o755)
        trash = None
        if out_dir.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, trash / "old")
        try:
            os.replace(tmp, out_dir)
        except OSError:
            # another process won the race: accept its build if it is the one we wanted
            if _check_existing(out_dir, spec, seed, overwrite=False):
                return out_dir
            raise
        finally:
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
