"""Turning paths, bytes and PIL images into the encoded bytes the server decodes."""
from __future__ import annotations

import io
import os
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
DEFAULT_MAX_BYTES = 32 * 1024 * 1024  # the server's limit per image (qfm_preprocess max_image_bytes)
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024  # per request; the server refuses requests over 256 MiB

# Magic numbers of the formats the server decodes (its allow-list, training/image_guard.py).
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def sniff_format(data: bytes) -> str | None:
    """The image format from the first bytes, or None when it is not one the server accepts."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def to_bytes(item) -> bytes:
    """Encoded image bytes from a path, bytes, or a PIL image (PNG-encoded, lossless)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, (str, os.PathLike)):
        return Path(item).read_bytes()
    if hasattr(item, "save") and hasattr(item, "mode"):  # a PIL image, without importing Pillow
        buf = io.BytesIO()
        item.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"cannot score a {type(item).__name__}: pass a path, bytes or a PIL image")


def item_name(item, index: int) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"#{index}"


def walk_images(paths) -> list[Path]:
    """Image files under the given files and folders, sorted, each listed once."""
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return sorted(dict.fromkeys(found))
