"""Reference photographs for the synthetic benchmark: only images shipped inside installed
packages, each with its source and licence as the shipping package documents it."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Photo:
    name: str
    loader: str  # "skimage:<function>", "matplotlib:<sample file>" or "debian:<package>:<file>"
    source: str
    licence: str
    # False: never drawn for the held-out split. Photos added after the first build are train-only,
    # so the held-out photographs (and every figure measured on them) stay exactly as they were.
    holdout: bool = True


def debian_photo(name: str, package: str, inner: str, label: str, author: str, licence: str,
                 holdout: bool = True) -> Photo:
    """A photograph shipped in a Debian package, fetched into the cache by `debian_package_file`."""
    return Photo(name, f"debian:{package}:{inner}", f"Debian {package}, {label} ({author})", licence, holdout)


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
) + tuple(
    # Debian's mate-backgrounds 1.26.0: photographs under GPL-2+ (authors in its copyright file).
    # Used only to generate the local, git-ignored cache; never redistributed by this project.
    debian_photo(f"mate_{name.lower()}", "mate-backgrounds", f"usr/share/backgrounds/mate/nature/{name}.jpg",
                 f"nature/{name}.jpg", author, "GPL-2+")
    for name, author in (("Aqua", "Charles Barbin"), ("Blinds", "Lennart Poettering, Andrea Cimitan"),
                         ("Dune", "Marco Cogoni, Hylke Bons"), ("FreshFlower", "Jens Ansorg"),
                         ("Garden", "Charles Barbin"), ("GreenMeadow", "Timothy Schellhase, Lapo Calamandrei"),
                         ("LadyBird", "Charles Barbin"), ("RainDrops", "blackcombwhistler07"),
                         ("Storm", "Sergey Nazarov"), ("TwoWings", "Charles Barbin, Hylke Bons"),
                         ("Wood", "Jean-Francois Fortin Tam"), ("YellowFlower", "Charles Barbin"))
) + tuple(
    # Debian's plasma-workspace-wallpapers 5.27.5: the photographs among KDE's wallpapers (the
    # rest are illustrations), licences from each wallpaper's metadata.json. Train-only (added in
    # the fourth build: more content variety, since the held-out error is content read as damage).
    debian_photo(f"kde_{name.lower()}", "plasma-workspace-wallpapers",
                 f"usr/share/wallpapers/{name}/contents/images/{size}.jpg", name, author, licence, holdout=False)
    for name, author, size, licence in (
        ("BytheWater", "Maciej Wiklo", "2560x1600", "LGPL-3"),
        ("ColdRipple", "Risto Saukonpää", "2560x1600", "LGPL-3"),
        ("ColorfulCups", "Dmitri Popov", "2560x1600", "LGPL-3"),
        ("DarkestHour", "Risto Saukonpää", "2560x1600", "LGPL-3"),
        ("EveningGlow", "Ian Hex", "2560x1600", "LGPL-3"),
        ("FallenLeaf", "Martin Klapetek", "2560x1600", "LGPL-3"),
        ("Grey", "Sigi Sagi", "2560x1600", "LGPL-3"),
        ("Kite", "Risto Saukonpää", "2560x1600", "LGPL-3"),
        ("OneStandsOut", "Risto Saukonpää", "2560x1600", "LGPL-3"),
        ("Path", "Risto Saukonpää", "2560x1600", "LGPL-3"),
        ("summer_1am", "Risto Saukonpää", "2560x1600", "LGPL-3"),
        ("Volna", "Nikita Babin", "5120x2880", "CC-BY-SA-4.0"),
    )
)

DEBIAN_CACHE = Path(__file__).resolve().parents[3] / "data_cache" / "debian"


def debian_package_file(package: str, inner: str) -> Path:
    """A file from a Debian package, fetched with `apt-get download` and unpacked with dpkg-deb
    into the cache (no root needed, nothing installed system-wide)."""
    root = DEBIAN_CACHE / package
    target = root / inner
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["apt-get", "download", package], cwd=root, capture_output=True, text=True)
    if r.returncode != 0 and os.geteuid() == 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        r = subprocess.run(["apt-get", "download", package], cwd=root, capture_output=True, text=True)
    debs = sorted(root.glob(f"{package}_*.deb"))
    if r.returncode != 0 or not debs:
        raise RuntimeError(f"cannot fetch Debian package {package} ({r.stderr.strip()[-300:]}); "
                           "run `apt-get update` once, then retry")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    if not target.exists():
        raise FileNotFoundError(f"{package} has no {inner}")
    return target


def load_photo(photo: Photo) -> np.ndarray:
    """The photograph as HxWx3 uint8 RGB (grey images replicated to three channels)."""
    kind, ref = photo.loader.split(":", 1)
    if kind == "skimage":
        import skimage.data

        img = getattr(skimage.data, ref)()
        if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
            img = img[0]
    elif kind == "debian":
        from PIL import Image

        package, inner = ref.split(":", 1)
        with Image.open(debian_package_file(package, inner)) as im:
            img = np.asarray(im.convert("RGB"))
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
