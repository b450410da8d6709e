"""Drawing the demo product images: one silhouette per product type, filled with the
variant's colour and pattern, jittered per view, encoded as base64 JPEG lines.

A view (``image_size`` px square) shows the type's silhouette filled with the variant's
colour (brightness and per-channel noise) and pattern (striped, dotted or checked in a
secondary colour, random phase), with a darker outline, on a light neutral background,
at a random position, scale, rotation and mirroring.

Shapes: each type is a list of (polygon in unit coordinates [-1, 1]^2 with y down, fill)
primitives drawn in order; fill=False cuts (draws background).
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from .vocabulary import COLOURS, LIGHT_COLOURS, TYPES

__all__ = ["Renderer"]


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
    S["sofa"] = [(_R(-0.85, -0.5, 0.85, 0.05), True), (_R(-1, 0.0, 1, 0.55), True),
                 (_R(-1, -0.15, -0.78, 0.6), True), (_R(0.78, -0.15, 1, 0.6), True),
                 (_R(-0.9, 0.55, -0.78, 0.78), True), (_R(0.78, 0.55, 0.9, 0.78), True)]
    S["armchair"] = [(_R(-0.55, -0.9, 0.55, 0.1), True), (_R(-0.7, 0.0, 0.7, 0.45), True),
                     (_R(-0.78, -0.2, -0.5, 0.5), True), (_R(0.5, -0.2, 0.78, 0.5), True),
                     (_R(-0.68, 0.45, -0.55, 0.88), True), (_R(0.55, 0.45, 0.68, 0.88), True)]
    S["lamp"] = [(_P((-0.35, -0.92), (0.35, -0.92), (0.62, -0.3), (-0.62, -0.3)), True),
                 (_R(-0.07, -0.3, 0.07, 0.72), True), (_E(0, 0.8, 0.45, 0.13), True)]
    S["table"] = [(_R(-0.92, -0.48, 0.92, -0.3), True), (_R(-0.8, -0.3, -0.66, 0.85), True),
                  (_R(0.66, -0.3, 0.8, 0.85), True), (_R(-0.75, 0.28, 0.75, 0.4), True)]
    rug = [(_R(-0.88, -0.62, 0.88, 0.62), True)]
    for y in np.linspace(-0.55, 0.55, 6):
        rug += [(_R(-1.0, y - 0.035, -0.88, y + 0.035), True), (_R(0.88, y - 0.035, 1.0, y + 0.035), True)]
    rug += [(_R(-0.7, -0.45, 0.7, -0.4), False), (_R(-0.7, 0.4, 0.7, 0.45), False)]
    S["rug"] = rug
    S["pillow"] = [(_P((-0.82, -0.82), (0, -0.62), (0.82, -0.82), (0.62, 0), (0.82, 0.82), (0, 0.62), (-0.82, 0.82),
                       (-0.62, 0)), True)]
    left = _P((-0.92, -0.85), (-0.12, -0.85), (-0.38, 0.92), (-0.92, 0.92))
    S["curtain"] = [(_R(-1, -1, 1, -0.88), True), (left, True), (_mirror(left), True)]
    S["towel"] = [(_R(-0.82, -0.55, 0.82, -0.12), True), (_R(-0.76, -0.06, 0.76, 0.3), True),
                  (_R(-0.7, 0.36, 0.7, 0.7), True)]
    S["mug"] = [(_E(0.5, 0.05, 0.36, 0.38), True), (_E(0.5, 0.05, 0.19, 0.21), False),
                (_R(-0.6, -0.62, 0.36, 0.75), True)]
    S["bottle"] = [(_R(-0.36, -0.35, 0.36, 0.92), True),
                   (_P((-0.36, -0.35), (-0.15, -0.62), (0.15, -0.62), (0.36, -0.35)), True),
                   (_R(-0.14, -0.86, 0.14, -0.55), True), (_R(-0.18, -1.0, 0.18, -0.82), True)]
    S["teapot"] = [(_E(-0.66, 0.1, 0.3, 0.36), True), (_E(-0.66, 0.1, 0.15, 0.21), False),
                   (_P((0.45, 0.05), (0.93, -0.45), (1.0, -0.36), (0.55, 0.38)), True), (_E(0, 0.15, 0.62, 0.5), True),
                   (_E(0, -0.38, 0.26, 0.12), True), (_E(0, -0.53, 0.08, 0.08), True)]
    S["bowl"] = [(_E(0, -0.15, 0.95, 0.75, 0, pi), True), (_R(-0.3, 0.55, 0.3, 0.75), True)]
    S["sneakers"] = [(_P((-0.95, 0.1), (-0.9, -0.3), (-0.5, -0.35), (-0.35, -0.62), (0.05, -0.55), (0.2, -0.2),
                         (0.7, -0.05), (0.95, 0.15), (0.95, 0.35), (-0.95, 0.35)), True),
                     (_R(-0.98, 0.35, 0.98, 0.52), True), (_R(-0.3, -0.3, 0.1, -0.25), False)]
    S["boots"] = [(_P((-0.55, -0.92), (0.1, -0.92), (0.15, 0.1), (0.85, 0.3), (0.92, 0.72), (-0.55, 0.72)), True),
                  (_R(-0.55, 0.72, 0.92, 0.82), True), (_R(-0.55, 0.82, -0.22, 0.92), True)]
    sleeve = _P((-0.45, -0.8), (-0.95, 0.6), (-0.74, 0.72), (-0.38, -0.2))
    S["jacket"] = [(_P((-0.45, -0.8), (-0.15, -0.9), (0, -0.68), (0.15, -0.9), (0.45, -0.8), (0.5, 0.88),
                       (-0.5, 0.88)), True),
                   (sleeve, True), (_mirror(sleeve), True), (_R(-0.02, -0.68, 0.02, 0.88), False)]
    S["hat"] = [(_E(0, 0.12, 0.55, 0.72, pi, 2 * pi), True), (_E(0, 0.16, 0.97, 0.17), True)]
    S["backpack"] = [(_E(0, -0.92, 0.2, 0.14), True), (_E(0, -0.92, 0.1, 0.07), False),
                     (_E(0, -0.55, 0.6, 0.32, pi, 2 * pi), True), (_R(-0.6, -0.56, 0.6, 0.92), True),
                     (_R(-0.45, 0.28, 0.45, 0.34), False)]
    S["handbag"] = [(_E(0, -0.22, 0.48, 0.62, pi, 2 * pi), True), (_E(0, -0.2, 0.34, 0.46, pi, 2 * pi), False),
                    (_P((-0.72, -0.22), (0.72, -0.22), (0.92, 0.8), (-0.92, 0.8)), True)]
    S["suitcase"] = [(_R(-0.22, -0.86, 0.22, -0.6), True), (_R(-0.13, -0.78, 0.13, -0.6), False),
                     (_R(-0.6, -0.62, 0.6, 0.84), True), (_R(-0.27, -0.45, -0.22, 0.7), False),
                     (_R(0.22, -0.45, 0.27, 0.7), False), (_E(-0.45, 0.92, 0.1, 0.08), True),
                     (_E(0.45, 0.92, 0.1, 0.08), True)]
    S["umbrella"] = [(_E(0, 0.05, 0.97, 0.75, pi, 2 * pi), True), (_R(-0.045, 0.0, 0.045, 0.78), True),
                     (_E(-0.13, 0.78, 0.175, 0.17, 0, pi), True), (_E(-0.13, 0.78, 0.085, 0.08, 0, pi), False)]
    S["headphones"] = [(_E(0, 0.05, 0.78, 0.85, pi, 2 * pi), True), (_E(0, 0.05, 0.64, 0.72, pi, 2 * pi), False),
                       (_E(-0.7, 0.2, 0.23, 0.36), True), (_E(0.7, 0.2, 0.23, 0.36), True)]
    S["speaker"] = [(_R(-0.55, -0.92, 0.55, 0.92), True), (_E(0, 0.32, 0.36, 0.36), False),
                    (_E(0, 0.32, 0.2, 0.2), True), (_E(0, -0.45, 0.16, 0.16), False)]
    S["phonecase"] = [(_R(-0.46, -0.92, 0.46, 0.92), True), (_R(-0.36, -0.82, -0.05, -0.45), False)]
    S["watch"] = [(_R(-0.26, -1.0, 0.26, 1.0), True), (_E(0, 0, 0.52, 0.52), True), (_E(0, 0, 0.4, 0.4), False),
                  (_E(0, 0, 0.06, 0.06), True), (_R(-0.03, -0.32, 0.03, 0.0), True), (_R(0.0, -0.03, 0.25, 0.03), True)]
    assert set(S) == {t[0] for t in TYPES}
    return S


class Renderer:
    """Draws product views: silhouette of the type, variant colour and pattern, jitter."""

    def __init__(self, size: int, quality: int):
        self.size = size
        self.quality = quality
        shapes = _shapes()
        self.shapes = [shapes[t[0]] for t in TYPES]
        S = size
        yy, xx = np.mgrid[0 : 2 * S, 0 : 2 * S]
        w = max(2, S // 10)  # stripe / check width
        p = max(5, S // 6)  # dot spacing
        r = max(1.2, p * 0.28)
        patterns = [  # (2S, 2S) masks, cropped at a random offset per view
            np.zeros((2 * S, 2 * S), dtype=bool),
            (xx // w) % 2 == 0,
            ((xx % p) - p / 2 + 0.5) ** 2 + ((yy % p) - p / 2 + 0.5) ** 2 <= r * r,
            ((xx // w) + (yy // w)) % 2 == 0,
        ]
        self.pattern_imgs = [Image.fromarray((p * 255).astype(np.uint8), "L") for p in patterns]
        self.colours = np.array([c for _, c in COLOURS], dtype=np.float64)  # (n_colours, 3)
        self.secondary = np.array([(45.0, 45.0, 50.0) if n in LIGHT_COLOURS else (238.0, 238.0, 236.0)
                                   for n, _ in COLOURS])  # (n_colours, 3) pattern colour

    def render(self, type_idx: int, colour_idx: int, pattern_idx: int, rng: np.random.Generator) -> bytes:
        """One jittered view of the type in the variant's colour and pattern, as a base64 JPEG line."""
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

