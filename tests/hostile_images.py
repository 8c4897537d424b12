"""A generated corpus of hostile and odd image files, each with the outcome the server owes it.

`corpus()` returns [(name, bytes, expected)] where expected is "ok" (a finite score) or the
per-image error code of core/qfm_core/image_guard.py; "ok|CORRUPT" where a decoder may legitimately
either recover or refuse. Everything is built in memory from a seeded photograph-like picture;
bombs are crafted headers (a huge declared size over a few bytes of data), so the corpus itself
is small (about 35 MB, most of it the one over-the-byte-limit file).
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from qfm_core.image_guard import Limits


def _picture(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth colour gradients plus texture: something with a quality to judge."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / 23.0), 128 + 100 * np.cos(y / 31.0), 128 + 80 * np.sin((x + y) / 41.0)], 2)
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img, "RGB")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, idat: bytes, extra: bytes = b"", color_type: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """Patch the SOF0/SOF2 frame header of a JPEG to declare another size."""
    out = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = out.find(marker)
        if i >= 0:
            out[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
    raise ValueError("no SOF marker")


def _exif_orientation(im: Image.Image, value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return _save(im, "JPEG", quality=90, exif=exif.tobytes())


def corpus() -> list[tuple[str, bytes, str]]:
    limits = Limits()
    pic = _picture(320, 240)
    jpeg = _save(pic, "JPEG", quality=90)
    png = _save(pic, "PNG")
    gray16 = Image.fromarray(np.asarray(pic.convert("L"), np.uint16) * 257)   # mode I;16
    floaty = Image.fromarray(np.asarray(pic.convert("L"), np.float32) / 255.0)   # mode F
    rgba = pic.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))))
    frames = [_picture(160, 120, seed=s) for s in range(3)]
    anim_gif = io.BytesIO()
    frames[0].save(anim_gif, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    apng = io.BytesIO()
    frames[0].save(apng, format="PNG", save_all=True, append_images=frames[1:], duration=80)
    palette_t = pic.convert("P", palette=Image.Palette.ADAPTIVE)
    palette_t.info["transparency"] = 0
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF                                     # inside IHDR's CRC
    flipped = bytearray(jpeg)
    rng = np.random.default_rng(3)
    for pos in rng.integers(len(jpeg) // 3, len(jpeg) - 10, 40):
        flipped[pos] ^= 0x5A
    ztxt_bomb = _png(64, 64, zlib.compress(b"\x00" * (65 * 64)),
                     extra=_png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (64 << 20), 9)))
    over_pixels = int((limits.max_pixels + 1) ** 0.5) + 1
    cases = [
        # valid, common
        ("jpeg_baseline", jpeg, "ok"),
        ("jpeg_progressive", _save(pic, "JPEG", quality=85, progressive=True), "ok"),
        ("jpeg_low_quality", _save(pic, "JPEG", quality=5), "ok"),
        ("jpeg_grayscale", _save(pic.convert("L"), "JPEG"), "ok"),
        ("jpeg_cmyk", _save(pic.convert("CMYK"), "JPEG"), "ok"),
        ("png_rgb", png, "ok"),
        ("png_grayscale", _save(pic.convert("L"), "PNG"), "ok"),
        ("png_1bit", _save(pic.convert("1"), "PNG"), "ok"),
        ("png_palette", _save(pic.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "ok"),
        ("png_palette_transparency", _save(palette_t, "PNG"), "ok"),
        ("png_rgba_alpha", _save(rgba, "PNG"), "ok"),
        ("png_la_alpha", _save(rgba.convert("LA"), "PNG"), "ok"),
        ("png_16bit_gray", _save(gray16, "PNG"), "ok"),
        ("png_animated_apng", apng.getvalue(), "ok"),
        ("gif_animated", anim_gif.getvalue(), "ok"),
        ("gif_still", _save(pic.convert("P"), "GIF"), "ok"),
        ("webp_lossy", _save(pic, "WEBP", quality=60), "ok"),
        ("webp_lossless", _save(pic, "WEBP", lossless=True), "ok"),
        ("bmp_rgb", _save(pic, "BMP"), "ok"),
        ("tiff_rgb", _save(pic, "TIFF"), "ok"),
        ("tiff_cmyk", _save(pic.convert("CMYK"), "TIFF"), "ok"),
        ("tiff_16bit_gray", _save(gray16, "TIFF"), "ok"),
        ("tiff_float32", _save(floaty, "TIFF"), "ok"),
        ("jpeg_exif_rotated_90", _exif_orientation(pic, 6), "ok"),
        ("jpeg_exif_mirrored", _exif_orientation(pic, 2), "ok"),
        ("jpeg_exif_garbage", _save(pic, "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + b"\x13" * 40), "ok"),
        ("size_min_side_16", _save(_picture(16, 300), "PNG"), "ok"),
        ("aspect_exactly_20", _save(_picture(16, 320), "PNG"), "ok"),
        ("large_12mp_jpeg", _save(_picture(4000, 3000), "JPEG", quality=80), "ok"),
        # shape limits
        ("size_1x1", _save(_picture(1, 1), "PNG"), "TOO_SMALL"),
        ("size_15x400", _save(_picture(15, 400), "PNG"), "TOO_SMALL"),
        ("aspect_16x2000", _save(_picture(2000, 16), "PNG"), "BAD_ASPECT"),
        ("aspect_30x1200", _save(_picture(30, 1200), "JPEG"), "BAD_ASPECT"),
        # decompression bombs: huge declared sizes over little data
        ("bomb_png_60mp_header", _png(over_pixels, over_pixels, zlib.compress(b"\x00" * 1000)), "TOO_MANY_PIXELS"),
        ("bomb_png_4gp_header", _png(65535, 65535, zlib.compress(b"\x00" * 1000)), "TOO_MANY_PIXELS"),
        ("bomb_jpeg_sof_65500", _jpeg_with_size(jpeg, 65500, 65500), "TOO_MANY_PIXELS"),
        ("bomb_gif_screen_65535", b"GIF89a" + struct.pack("<HH", 65535, 65535) + _save(pic.convert("P"), "GIF")[10:],
         "TOO_MANY_PIXELS"),
        ("bomb_bmp_header", _save(pic, "BMP")[:18] + struct.pack("<ii", 40000, 40000) + _save(pic, "BMP")[26:],
         "TOO_MANY_PIXELS"),
        ("bomb_png_ztxt_64mb", ztxt_bomb, "ok|CORRUPT"),
        # broken files
        ("jpeg_truncated_half", jpeg[: len(jpeg) // 2], "CORRUPT"),
        ("jpeg_soi_only", b"\xff\xd8\xff", "CORRUPT"),
        ("jpeg_bit_flips", bytes(flipped), "ok|CORRUPT"),
        ("png_truncated", png[: len(png) // 3], "CORRUPT"),
        ("png_signature_only", b"\x89PNG\r\n\x1a\n", "CORRUPT"),
        ("png_bad_crc", bytes(bad_crc), "CORRUPT"),
        ("png_empty_idat", _png(64, 64, b""), "CORRUPT"),
        ("gif_truncated", anim_gif.getvalue()[:40], "CORRUPT"),
        ("webp_truncated", _save(pic, "WEBP")[:60], "CORRUPT"),
        # not images, or formats outside the allow-list
        ("empty", b"", "EMPTY"),
        ("random_bytes", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), "UNSUPPORTED_FORMAT"),
        ("text", b"hello, this is not an image\n" * 20, "UNSUPPORTED_FORMAT"),
        ("html", b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", "UNSUPPORTED_FORMAT"),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>', "UNSUPPORTED_FORMAT"),
        ("pdf", b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "UNSUPPORTED_FORMAT"),
        ("eps_ghostscript", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n", "UNSUPPORTED_FORMAT"),
        ("ppm_allowed_by_pillow", _save(pic, "PPM"), "UNSUPPORTED_FORMAT"),
        ("ico_allowed_by_pillow", _save(pic.resize((64, 64)), "ICO"), "UNSUPPORTED_FORMAT"),
        ("tga_allowed_by_pillow", _save(pic, "TGA"), "UNSUPPORTED_FORMAT"),
        # bytes
        ("over_byte_limit", b"\xff\xd8\xff\xe0" + b"\x00" * (limits.max_bytes + 16), "TOO_MANY_BYTES"),
    ]
    names = [c[0] for c in cases]
    assert len(names) == len(set(names))
    return cases


def matches(expected: str, code: str | None) -> bool:
    """Whether an outcome (None = scored) is one the corpus allows."""
    return (code or "ok") in expected.split("|")
