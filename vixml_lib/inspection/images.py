"""Item images for the query figures: :class:`ItemImages` (the first images of test
queries and labels, read lazily) and the image tiles :func:`vixml_lib.inspection.plots.plot_query`
draws them in (matplotlib axes, passed in by the caller)."""
from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class ItemImages:
    """First images of test queries and labels, read lazily from the dataset's ``.bin``
    files (``open_image_source``); a dataset without images gives none (placeholders)."""

    def __init__(self, data_dir: str | Path, max_per_item: int = 3):
        self.data_dir = Path(data_dir)
        self.max_per_item = max_per_item
        self._sources: dict[str, Any] = {}

    def source(self, split: str):
        if split not in self._sources:
            from ..images.sources import open_image_source

            try:
                self._sources[split] = open_image_source(self.data_dir, split)
            except FileNotFoundError as e:
                log.warning("no images for %s: %s", split, e)
                self._sources[split] = None
        return self._sources[split]

    def get(self, split: str, item: int, n: int | None = None) -> list:
        src = self.source(split)
        if src is None or item >= src.n_items:
            return []
        rows = [int(j) for j in src.image_map[int(item)] if j >= 0][: n or self.max_per_item]
        out = []
        for j in rows:
            try:
                out.append(src.load(j))
            except Exception as e:  # noqa: BLE001 - a corrupt image is shown as missing
                log.warning("%s image %d of item %d unreadable: %s", split, j, item, e)
        return out


def first_image(images: ItemImages | None, split: str, item: int):
    """The first image of ``item`` (None without images)."""
    return (images.get(split, item, 1) or [None])[0] if images is not None else None


def tile(ax, img, caption: str, head: str = "", colour: str | None = None, width: int = 22):
    """Draw ``img`` (or a "no image" placeholder) into ``ax`` with a coloured frame, a
    heading and a caption of at most three wrapped lines."""
    ax.set_xticks([])
    ax.set_yticks([])
    if img is not None:
        ax.imshow(img)
    else:
        ax.imshow(np.full((8, 8, 3), 235, np.uint8))
        ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7, color="#777777", transform=ax.transAxes)
    for sp_ in ax.spines.values():
        sp_.set_color(colour or "#bbbbbb")
        sp_.set_linewidth(3 if colour else 0.8)
    if head:
        ax.set_title(head, fontsize=8, color=colour or "black", pad=3)
    ax.set_xlabel("\n".join(textwrap.wrap(caption, width)[:3]), fontsize=7)


def blank(ax):
    ax.axis("off")
