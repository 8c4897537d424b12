"""Reference photographs for the synthetic benchmark: only images shipped inside installed
packages, each with its source and licence as the shipping package documents it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Photo:
    name: str
    loader: str  # "skimage:<function>" or "matplotlib:<sample file>"
    source: str
    licence: str


# scikit-image's `cell` (a flat grey microscopy frame) was in the first build and was removed: it
# is not a photograph, and its pristine version looks degraded to any no-reference model (the
# first pretraining run scored it 34 against an FR label of 74; README, "Synthetic benchmark").
PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "skimage:astronaut", "NASA, Eileen Collins portrait (flickr r9qvLn)", "public domain"),
    Photo("chelsea", "skimage:chelsea", "Stefan van der Walt", "CC0"),
    Photo("coffee", "skimage:coffee", "Rachel Michetti", "CC0"),
    Photo("hubble_deep_field", "skimage:hubble_deep_field", "NASA / Hubble", "public domain"),
    Photo("immunohistochemistry", "skimage:immunohistochemistry", "scikit-image sample data", "no known copyright restrictions"),
    Photo("motorcycle", "skimage:stereo_motorcycle", "Middlebury 2014 stereo data set (left view), via scikit-image",
          "research data set distributed with scikit-image (BSD-3 package)"),
    Photo("retina", "skimage:retina", "Wikimedia Commons, fundus photograph (Häggström)", "CC0"),
    Photo("rocket", "skimage:rocket", "SpaceX, DSCOVR launch", "public domain"),
    Photo("brick", "skimage:brick", "CC0Textures Bricks25", "CC0"),
    Photo("camera", "skimage:camera", "Lav Varshney", "CC0"),
    Photo("coins", "skimage:coins", "Brooklyn Museum open collection", "no known copyright restrictions"),
    Photo("grass", "skimage:grass", "DeviantArt linolafett Grass-01", "CC0"),
    Photo("gravel", "skimage:gravel", "CC0Textures Gravel04", "CC0"),
    Photo("grace_hopper", "matplotlib:grace_hopper.jpg", "US Navy portrait of Grace Hopper, via matplotlib", "public domain"),
)


def load_photo(photo: Photo) -> np.ndarray:
    """The photograph as HxWx3 uint8 RGB (grey images replicated to three channels)."""
    kind, ref = photo.loader.split(":", 1)
    if kind == "skimage":
        import skimage.data

        img = getattr(skimage.data, ref)()
        if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
            img = img[0]
    elif kind == "matplotlib":
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data(ref)) as im:
            img = np.asarray(im.convert("RGB"))
    else:
        raise ValueError(f"unknown photo loader {photo.loader!r}")
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))
