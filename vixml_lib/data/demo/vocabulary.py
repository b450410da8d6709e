"""Words of the demo catalogue: colours, patterns, categories with their materials, the 24
product types (label word, query synonyms, accessory nouns), title templates, and the
generator of invented brand names.

Everything here is a constant except :func:`brand_names`; the order of every list is part
of the generated data (indices into them are drawn), so changing one changes the dataset.
"""
from __future__ import annotations

import numpy as np

# (name, RGB) of the variant colours
COLOURS: list[tuple[str, tuple[int, int, int]]] = [
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
LIGHT_COLOURS = {"yellow", "white", "pink"}  # drawn with a dark secondary (pattern) colour
PATTERNS = ["plain", "striped", "dotted", "checked"]
PATTERN_PROBS = [0.55, 0.15, 0.15, 0.15]

# category -> materials
CATEGORIES: dict[str, list[str]] = {
    "furniture": ["Oak", "Walnut", "Velvet", "Linen", "Leather", "Rattan", "Metal", "Pine"],
    "home textiles": ["Cotton", "Linen", "Wool", "Velvet", "Jute", "Silk", "Bamboo", "Microfiber"],
    "kitchen": ["Ceramic", "Porcelain", "Glass", "Steel", "Bamboo", "Enamel", "Stoneware", "Copper"],
    "apparel": ["Leather", "Canvas", "Suede", "Wool", "Denim", "Nylon", "Fleece", "Cotton"],
    "bags & travel": ["Nylon", "Leather", "Canvas", "Polyester", "Aluminium", "Cork", "Vinyl", "Tweed"],
    "electronics": ["Aluminium", "Plastic", "Silicone", "Carbon", "Wooden", "Titanium", "Rubber", "Steel"],
}
CATEGORY_NAMES = list(CATEGORIES)

# (key, category, label word, query synonyms, accessory nouns)
TYPES: list[tuple[str, str, str, list[str], list[str]]] = [
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
    ("backpack", "bags & travel", "Backpack", ["rucksack", "daypack"],
     ["rain cover", "chest strap", "organizer insert"]),
    ("handbag", "bags & travel", "Handbag", ["purse", "tote"], ["strap", "organizer", "dust bag"]),
    ("suitcase", "bags & travel", "Suitcase", ["luggage", "trolley case"], ["luggage tag", "cover", "lock"]),
    ("umbrella", "bags & travel", "Umbrella", ["parasol", "brolly"], ["sleeve", "stand", "canopy"]),
    ("headphones", "electronics", "Headphones", ["headset", "earphones"], ["ear pads", "carrying case", "cable"]),
    ("speaker", "electronics", "Speaker", ["loudspeaker", "sound box"], ["stand", "wall mount", "charging cable"]),
    ("phonecase", "electronics", "Phone Case", ["cellphone cover", "smartphone cover"],
     ["screen protector", "lanyard", "ring holder"]),
    ("watch", "electronics", "Watch", ["wristwatch", "timepiece"], ["strap", "charger", "screen protector"]),
]
EDITION_SUFFIXES = [" - Large", " - XL", " - Set of 2", " - Deluxe", " - Family Size", " - Compact"]
ADJECTIVES = ["classic", "compact", "vintage", "modern", "premium", "everyday", "lightweight", "deluxe"]

# query title templates: accessories of a product, or similar products; with / without the material
ACC_TEMPLATES = ["{brand} {obj} {acc}, {mat}", "{mat} {obj} {acc} for {brand}", "{acc} for {brand} {mat} {obj}",
                 "{brand} {mat} {obj} {acc}"]
ACC_TEMPLATES_NOMAT = ["{brand} {obj} {acc}", "{acc} for {brand} {obj}"]
SIM_TEMPLATES = ["{brand} {adj} {mat} {obj}", "{mat} {obj} by {brand}, {adj}"]
SIM_TEMPLATES_NOMAT = ["{brand} {adj} {obj}"]

# syllables of the invented brand names
_ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl",
           "st", "tr", "sk", "fl"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "y"]
_CODAS = ["", "", "n", "r", "l", "k", "s", "m", "x", "nd", "rk"]


def brand_names(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct invented brand names of 4-9 letters (2-3 syllables), capitalised."""
    banned = {t[2].lower() for t in TYPES} | {c for c, _ in COLOURS}
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
