"""KADID-style distortions: 15 types x 5 levels, each a pure function of (image, level, rng).

Levels run from barely visible (1) to severe (5). Parameters are ours, chosen so that the five
levels spread over the whole quality range for 288-pixel images.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from scipy import ndimage

Distortion = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
DISTORTIONS: dict[str, Distortion] = {}
N_LEVELS = 5


def register(name: str, params: tuple):
    """Register a distortion whose level L (1..5) uses params[L-1]."""
    assert len(params) == N_LEVELS

    def wrap(fn):
        DISTORTIONS[name] = lambda img, level, rng: fn(img, params[level - 1], rng)
        return fn

    return wrap


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _codec_roundtrip(img: np.ndarray, **save_kwargs) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, **save_kwargs)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


@register("gaussian_blur", (0.6, 1.2, 2.0, 3.2, 5.0))
def gaussian_blur(img, sigma, rng):
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))


@register("lens_blur", (1, 2, 3, 5, 7))
def lens_blur(img, radius, rng):
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    return _to_u8(ndimage.convolve(img.astype(np.float32), disk[..., None], mode="reflect"))


@register("motion_blur", (3, 6, 10, 15, 22))
def motion_blur(img, length, rng):
    angle = rng.uniform(0, 180)
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    k = ndimage.rotate(k, angle, reshape=False, order=1)
    k /= k.sum()
    return _to_u8(ndimage.convolve(img.astype(np.float32), k[..., None], mode="reflect"))


@register("white_noise", (4, 9, 16, 26, 40))
def white_noise(img, sigma, rng):
    return _to_u8(img + rng.normal(0, sigma, img.shape))


@register("impulse_noise", (0.004, 0.012, 0.03, 0.06, 0.11))
def impulse_noise(img, p, rng):
    out = img.copy()
    mask = rng.random(img.shape[:2])
    out[mask < p / 2] = 0
    out[mask > 1 - p / 2] = 255
    return out


@register("multiplicative_noise", (0.05, 0.1, 0.18, 0.28, 0.42))
def multiplicative_noise(img, sigma, rng):
    return _to_u8(img * (1 + rng.normal(0, sigma, img.shape)))


@register("jpeg", (55, 30, 15, 8, 3))
def jpeg(img, quality, rng):
    return _codec_roundtrip(img, format="JPEG", quality=quality)


@register("webp", (40, 20, 8, 3, 0))
def webp(img, quality, rng):
    return _codec_roundtrip(img, format="WEBP", quality=quality)


@register("jpeg2000", (25, 60, 120, 250, 500))
def jpeg2000(img, ratio, rng):
    return _codec_roundtrip(img, format="JPEG2000", quality_mode="rates", quality_layers=[ratio])


@register("contrast_decrease", (0.75, 0.55, 0.4, 0.27, 0.15))
def contrast_decrease(img, factor, rng):
    return np.asarray(ImageEnhance.Contrast(Image.fromarray(img)).enhance(factor))


@register("brighten", (0.8, 0.65, 0.5, 0.38, 0.27))
def brighten(img, gamma, rng):
    return _to_u8(255.0 * (img / 255.0) ** gamma)


@register("darken", (1.3, 1.7, 2.2, 2.9, 3.8))
def darken(img, gamma, rng):
    return _to_u8(255.0 * (img / 255.0) ** gamma)


@register("desaturate", (0.7, 0.5, 0.3, 0.15, 0.0))
def desaturate(img, factor, rng):
    # On the grey photos of the set this is the identity: their labels stay near 100, as they should.
    return np.asarray(ImageEnhance.Color(Image.fromarray(img)).enhance(factor))


@register("pixelate", (2, 3, 5, 7, 10))
def pixelate(img, block, rng):
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, w // block), max(1, h // block)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST))


@register("quantize", (48, 24, 12, 7, 4))
def quantize(img, colors, rng):
    return np.asarray(Image.fromarray(img).quantize(colors, method=Image.Quantize.MEDIANCUT,
                                                    dither=Image.Dither.NONE).convert("RGB"))


def apply(name: str, img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    if name not in DISTORTIONS:
        raise KeyError(f"unknown distortion {name!r}; known: {sorted(DISTORTIONS)}")
    if not 1 <= level <= N_LEVELS:
        raise ValueError(f"level must be 1..{N_LEVELS}, got {level}")
    out = DISTORTIONS[name](img, level, rng)
    assert out.shape == img.shape and out.dtype == np.uint8, name
    return out
