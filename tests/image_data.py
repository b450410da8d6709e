"""Small images and tables shared by the image tests (test_image_sources, test_image_download)."""
import csv
import io

import numpy as np
from PIL import Image


def gradient(w, h, seed=0):
    """A smooth RGB image (JPEG keeps it close), different for each seed."""
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = np.array([(37 * seed) % 200 + 20, (91 * seed) % 200 + 20, (53 * seed) % 200 + 20], dtype=float)
    arr = base * 0.6 + 80 * x + 60 * y * np.array([1.0, -0.5, 0.3])
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encoded(img, fmt):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def mad(a, b):
    """Mean absolute pixel difference of two same-size images."""
    assert a.size == b.size, (a.size, b.size)
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b.convert("RGB"), dtype=float)).mean())


def thumb(img, size=384):
    t = img.convert("RGB").copy()
    t.thumbnail((size, size))
    return t


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path
