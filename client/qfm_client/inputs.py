"""Turning paths, bytes and PIL images into the encoded bytes the server decodes."""
from __future__ import annotations

import io
import os
from pathlib import Path

from qfm_core.image_guard import Limits, sniff_format  # noqa: F401  (the server's allow-list, re-exported)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
DEFAULT_MAX_BYTES = Limits().max_bytes  # the server's limit per image
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024  # per request: well under the server's RequestLimits


def to_bytes(item) -> bytes:
    """Encoded image bytes from bytes or a PIL image (PNG-encoded, lossless). Paths and URLs are
    read by qfm_client.sources.read_many."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
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
