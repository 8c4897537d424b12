"""Decoding image bytes that come from untrusted users: limits first, then a restricted decode.

Used by the server's preprocess model (one call per image, errors per image). Every rejection is
an ImageRejected whose code a client can act on; the text travels as "CODE: message".

    EMPTY               no bytes
    TOO_MANY_BYTES      over Limits.max_bytes
    UNSUPPORTED_FORMAT  not one of ALLOWED_FORMATS (decided from the content, never the name)
    TOO_MANY_PIXELS     width x height over Limits.max_pixels: checked from the header, before a
                        single pixel is decoded (decompression bombs)
    TOO_SMALL           shorter side under Limits.min_side (no meaningful quality to judge)
    BAD_ASPECT          longer / shorter side over Limits.max_aspect (the crop grid would upscale a
                        sliver into a huge image)
    CORRUPT             the decoder failed: truncated, malformed, or hostile

Odd but valid images are normalised, not rejected: 16-bit and 32-bit integer and float
greyscale are scaled to 8 bits, CMYK / YCbCr / palette / 1-bit are converted, alpha is composited
on white, EXIF orientation is applied (a broken EXIF block is ignored), and animations are judged
by their first frame.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")   # no EPS (Ghostscript), PSD, PDF, ...
# Magic numbers of the allowed formats: a file that starts like one but will not open is CORRUPT,
# anything else UNSUPPORTED_FORMAT. The client checks the same before sending.
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def sniff_format(data: bytes) -> str | None:
    """The allowed format the first bytes announce, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def looks_allowed(data: bytes) -> bool:
    return sniff_format(data) is not None


CODES = ("EMPTY", "TOO_MANY_BYTES", "UNSUPPORTED_FORMAT", "TOO_MANY_PIXELS", "TOO_SMALL", "BAD_ASPECT", "CORRUPT")


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 50_000_000        # a 8660 x 5773 photograph; decoded RGB is then 150 MB
    min_side: int = 16
    max_aspect: float = 20.0


@dataclass(frozen=True)
class RequestLimits:
    """Per request: what one call to the ensemble may carry. A request over these is refused
    whole with INVALID_ARG naming the limit (clients split their jobs below them); the server
    scores crops in chunks, so its memory does not grow with max_images."""
    max_images: int = 512
    max_bytes: int = 256 * 1024 * 1024

    def refusal(self, n_images: int, n_bytes: int) -> str | None:
        """Why a request of this size is refused, or None."""
        if n_images == 0:
            return "the request has no images"
        if n_images > self.max_images:
            return (f"the request has {n_images} images; at most {self.max_images} per request: "
                    f"split it into requests of {self.max_images} images or fewer")
        if n_bytes > self.max_bytes:
            return (f"the request carries {n_bytes} bytes; at most {self.max_bytes} per request: "
                    "split it into smaller requests")
        return None


class ImageRejected(ValueError):
    def __init__(self, code: str, message: str):
        assert code in CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if mode == "F":
            top = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        elif mode.startswith("I;16"):
            top = 65535.0
        else:   # 32-bit integer: 16-bit data in practice, 8-bit if it fits
            top = 65535.0 if arr.size and arr.max() > 255 else 255.0
        gray = np.clip(np.nan_to_num(arr / top * 255.0), 0, 255).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def decode_untrusted(data: bytes, limits: Limits = Limits()) -> np.ndarray:
    """H x W x 3 uint8 RGB, or ImageRejected."""
    if not data:
        raise ImageRejected("EMPTY", "no bytes")
    if len(data) > limits.max_bytes:
        raise ImageRejected("TOO_MANY_BYTES", f"{len(data)} bytes > limit {limits.max_bytes}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # our own pixel limit decides
        warnings.simplefilter("ignore", UserWarning)   # "Corrupt EXIF data" and kin: handled below
        try:
            im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except UnidentifiedImageError:
            if looks_allowed(data):
                raise ImageRejected("CORRUPT", "starts like an allowed format but cannot be opened") from None
            raise ImageRejected("UNSUPPORTED_FORMAT", f"not one of {', '.join(ALLOWED_FORMATS)}") from None
        except Image.DecompressionBombError as e:
            raise ImageRejected("TOO_MANY_PIXELS", str(e)) from None
        except Exception as e:   # Pillow raises many types on malformed headers
            raise ImageRejected("CORRUPT", f"{type(e).__name__}: {e}") from None
        with im:
            w, h = im.size
            if w * h > limits.max_pixels:
                raise ImageRejected("TOO_MANY_PIXELS", f"{w}x{h} = {w * h} pixels > limit {limits.max_pixels}")
            if min(w, h) < limits.min_side:
                raise ImageRejected("TOO_SMALL", f"{w}x{h}: shorter side under {limits.min_side} pixels")
            if max(w, h) / min(w, h) > limits.max_aspect:
                raise ImageRejected("BAD_ASPECT", f"{w}x{h}: aspect ratio over {limits.max_aspect:g}")
            try:
                im.load()
                try:
                    oriented = ImageOps.exif_transpose(im)
                except Exception:   # a malformed EXIF block is not worth rejecting the photograph
                    oriented = im
                rgb = _to_rgb(oriented)
            except Image.DecompressionBombError as e:
                raise ImageRejected("TOO_MANY_PIXELS", str(e)) from None
            except Exception as e:
                raise ImageRejected("CORRUPT", f"{type(e).__name__}: {e}") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] * rgb.shape[1] > limits.max_pixels:
        raise ImageRejected("CORRUPT", f"decoded to an unexpected array {rgb.shape}")
    return rgb
