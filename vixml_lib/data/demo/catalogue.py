"""Sampling the demo catalogue: brands, product families and their visual variants, the
labels, the train / test queries with their relevant labels, and the images of every item.

Generative process
------------------
- **Product types** (24, in 6 categories: furniture, home textiles, kitchen, apparel,
  bags & travel, electronics; see :mod:`.vocabulary`). Each type has a word used in label
  titles ("Couch"), synonyms a pretrained encoder knows and which queries mostly use
  ("sofa", "settee"), accessory nouns ("cover", "slipcover") and a silhouette drawn in its
  images (see :mod:`.drawing`).
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
- **Images**: 0 (``image_count_probs[0]``, ~7%), 1, 2 or 3 views per item, each drawn
  by :class:`.drawing.Renderer` in the variant's colour and pattern.
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

All draws come from one generator seeded with ``(seed, 7331)``, in a fixed order: the
catalogue, the train queries, the test queries, then the images (labels, train, test).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .drawing import Renderer
from .spec import DemoSpec
from .vocabulary import (
    ACC_TEMPLATES,
    ACC_TEMPLATES_NOMAT,
    ADJECTIVES,
    CATEGORIES,
    CATEGORY_NAMES,
    COLOURS,
    EDITION_SUFFIXES,
    PATTERN_PROBS,
    PATTERNS,
    SIM_TEMPLATES,
    SIM_TEMPLATES_NOMAT,
    TYPES,
    brand_names,
)

__all__ = ["Builder", "Family", "Item"]


def _pick(rng: np.random.Generator, cdf: np.ndarray) -> int:
    """Index drawn with the probabilities whose cumulative sums are ``cdf`` (fast for scalars)."""
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)


@dataclass
class Family:
    """A (brand, material, type) product line and its variants."""

    fid: int
    brand: int
    material: str
    type_idx: int
    category: str
    variants: list[tuple[int, int]]  # (colour index, pattern index)
    variant_labels: list[list[int]]  # label ids of each variant (1-2)
    variant_weights: np.ndarray  # (n_variants,) popularity within the family
    related: list[int] = dataclasses.field(default_factory=list)  # same brand and category, another type


@dataclass
class Item:
    """A label or a query, with the hidden ground truth written to ``<split>_attributes.csv``."""

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


class Builder:
    """Samples a whole catalogue from ``spec`` and ``seed`` (:meth:`sample`)."""

    def __init__(self, spec: DemoSpec, seed: int):
        self.spec = spec
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 7_331])))
        self.uids: set[str] = set()
        self.renderer = Renderer(spec.image_size, spec.jpeg_quality)
        self.image_count_cdf = np.cumsum(spec.image_count_probs)

    def sample(self) -> dict[str, list[Item]]:
        """The catalogue, the queries and all images: ``{"trn": queries, "tst": queries, "lbl": labels}``."""
        sp = self.spec
        self.build_catalogue()
        trn = self.make_queries(sp.n_train, sp.frac_self_train)
        tst = self.make_queries(sp.n_test, sp.frac_self_test)
        for it in self.labels:
            self.render_item(it)
        for items in (trn, tst):
            for it in items:
                if it.copy_of_label >= 0:
                    it.image_lines = list(self.labels[it.copy_of_label].image_lines)
                else:
                    self.render_item(it)
        return {"trn": trn, "tst": tst, "lbl": self.labels}

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
        """Brands, families and labels, related families and family popularity."""
        sp, rng = self.spec, self.rng
        self.brands = brand_names(rng, sp.n_brands)
        n_cat = len(CATEGORY_NAMES)
        self.brand_cats = [
            sorted(rng.choice(n_cat, size=1 + int(rng.random() < 0.5), replace=False).tolist())
            for _ in range(sp.n_brands)
        ]
        self.brand_palette = [
            sorted(rng.choice(len(COLOURS), size=sp.brand_palette_size, replace=False).tolist())
            for _ in range(sp.n_brands)
        ]
        self.families: list[Family] = []
        self.labels: list[Item] = []
        self._sample_families()
        self._link_related_families()
        self._set_family_popularity()

    def _sample_families(self) -> None:
        """Distinct (brand, type, material) families, with their labels, until there are ``n_labels`` labels."""
        sp, rng = self.spec, self.rng
        types_by_cat = {c: [i for i, t in enumerate(TYPES) if t[1] == c] for c in CATEGORY_NAMES}
        seen: set[tuple[int, int, str]] = set()
        tries = 0
        while len(self.labels) < sp.n_labels:
            tries += 1
            if tries > 1000 * sp.n_labels:
                raise RuntimeError("could not generate enough distinct families; raise n_brands")
            b = int(rng.integers(sp.n_brands))
            cat = CATEGORY_NAMES[self.brand_cats[b][int(rng.integers(len(self.brand_cats[b])))]]
            t = int(rng.choice(types_by_cat[cat]))
            mats = CATEGORIES[cat]
            m = mats[int(rng.integers(len(mats)))]
            if (b, t, m) in seen:
                continue
            seen.add((b, t, m))
            self.families.append(self._make_family(b, cat, t, m))

    def _make_family(self, b: int, cat: str, t: int, m: str) -> Family:
        """A family's distinct looks, their popularity and labels (appended to ``self.labels``)."""
        sp, rng = self.spec, self.rng
        lo, hi = sp.variants_per_family
        fid = len(self.families)
        V = int(rng.integers(lo, hi + 1))
        looks: list[tuple[int, int]] = []
        while len(looks) < V:
            look = (int(rng.choice(self.brand_palette[b])), int(rng.choice(len(PATTERNS), p=PATTERN_PROBS)))
            if look not in looks:
                looks.append(look)
        suffix = EDITION_SUFFIXES[int(rng.integers(len(EDITION_SUFFIXES)))]
        fam = Family(fid, b, m, t, cat, looks, [], rng.dirichlet(np.full(V, sp.variant_concentration)))
        for v in range(len(looks)):
            fam.variant_labels.append(self._make_variant_labels(fam, v, suffix))
        # drop variants that got no label (only possible in the last family)
        keep = [v for v, ids in enumerate(fam.variant_labels) if ids]
        if len(keep) < len(looks):
            fam.variants = [looks[v] for v in keep]
            fam.variant_labels = [fam.variant_labels[v] for v in keep]
            w = fam.variant_weights[keep]
            fam.variant_weights = w / w.sum()
        return fam

    def _make_variant_labels(self, fam: Family, v: int, suffix: str) -> list[int]:
        """The 1-2 labels (editions) of variant ``v``, appended to ``self.labels``; their ids."""
        sp, rng = self.spec, self.rng
        ci, pi = fam.variants[v]
        brand, m, word = self.brands[fam.brand], fam.material, TYPES[fam.type_idx][2]
        ids = []
        for e in range(1 + int(rng.random() < sp.p_second_edition)):
            if len(self.labels) >= sp.n_labels:
                break
            title = f"{brand} {m} {word}" + (suffix if e else "")
            has_col = bool(rng.random() < sp.p_label_colour)
            if has_col:
                look_words = COLOURS[ci][0].capitalize() + ("" if pi == 0 else " " + PATTERNS[pi].capitalize())
                title += f", {look_words}"
            content_col = bool(rng.random() < sp.p_content_colour)
            adj = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))].capitalize()
            content = f"{adj} {m.lower()} {word.lower()} from {brand}."
            if content_col:
                content += f" Shown in {COLOURS[ci][0]}{'' if pi == 0 else ' ' + PATTERNS[pi]}."
            lab = Item(self.uid(), title, content, fam.fid, v, edition=e, title_colour=has_col,
                       content_colour=content_col, title_pattern=has_col and pi != 0)
            ids.append(len(self.labels))
            self.labels.append(lab)
        return ids

    def _link_related_families(self) -> None:
        """Related families: same brand, same category, another type."""
        by_brand_cat: dict[tuple[int, str], list[int]] = {}
        for f in self.families:
            by_brand_cat.setdefault((f.brand, f.category), []).append(f.fid)
        for f in self.families:
            f.related = [g for g in by_brand_cat[(f.brand, f.category)] if self.families[g].type_idx != f.type_idx]

    def _set_family_popularity(self) -> None:
        """Zipf popularity over families, random ranks: ``self.family_cdf``, (n_families,)."""
        ranks = self.rng.permutation(len(self.families)) + 1
        w = ranks.astype(np.float64) ** (-self.spec.zipf_exponent)
        self.family_cdf = np.cumsum(w / w.sum())

    # --- queries
    def _related_labels(self, fam: Family, v: int) -> list[int]:
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

    def make_query(self) -> Item:
        sp, rng = self.spec, self.rng
        fid = _pick(rng, self.family_cdf)
        fam = self.families[fid]
        v = _pick(rng, np.cumsum(fam.variant_weights))
        targets = sorted(set(fam.variant_labels[v]) | set(self._related_labels(fam, v)))
        _, _, tword, syns, accs = TYPES[fam.type_idx]
        use_syn = bool(rng.random() < sp.p_synonym)
        noun = syns[int(rng.integers(len(syns)))] if use_syn else tword.lower()
        ci, pi = fam.variants[v]
        col = bool(rng.random() < sp.p_query_colour)
        pat = pi != 0 and bool(rng.random() < sp.p_query_pattern)
        words = ([COLOURS[ci][0]] if col else []) + ([PATTERNS[pi]] if pat else []) + [noun]
        obj = " ".join(words)
        no_mat = bool(rng.random() < sp.p_query_no_material)
        accessory = rng.random() < 0.7
        if accessory:
            pool = ACC_TEMPLATES_NOMAT if no_mat else ACC_TEMPLATES
        else:
            pool = SIM_TEMPLATES_NOMAT if no_mat else SIM_TEMPLATES
        tmpl = pool[int(rng.integers(len(pool)))]
        acc = accs[int(rng.integers(len(accs)))]
        adj = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
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
            content += f" Matches the {COLOURS[ci][0]}{'' if pi == 0 else ' ' + PATTERNS[pi]} finish."
        return Item(self.uid(), title, content, fid, v, targets=targets, title_colour=col, title_pattern=pat,
                    title_synonym=use_syn, content_colour=content_col)

    def make_self_query(self) -> Item | None:
        rng = self.rng
        lid = int(rng.integers(len(self.labels)))
        lab = self.labels[lid]
        fam = self.families[lab.fid]
        targets = set(fam.variant_labels[lab.variant]) | set(self._related_labels(fam, lab.variant))
        targets.discard(lid)
        if not targets:
            return None
        return Item(lab.uid, lab.title, lab.content, lab.fid, lab.variant, targets=sorted(targets),
                    title_colour=lab.title_colour, title_pattern=lab.title_pattern,
                    content_colour=lab.content_colour, copy_of_label=lid)

    def make_queries(self, n: int, frac_self: float) -> list[Item]:
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

    def render_item(self, item: Item) -> None:
        fam = self.families[item.fid]
        ci, pi = fam.variants[item.variant]
        item.image_lines = [self.renderer.render(fam.type_idx, ci, pi, self.rng) for _ in range(self.n_images())]
