"""Image sizes read from file headers (no decoding), from a folder or a .tar/.tar.gz archive."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import List, Tuple, Union

from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "image_sizes"]

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _size(source: Union[Path, io.BytesIO]) -> Tuple[int, int]:
    with Image.open(source) as image:
        width, height = image.size
    return height, width


def image_sizes(path: Union[str, Path]) -> List[Tuple[int, int]]:
    """``(H, W)`` of every image under ``path`` (a folder, searched recursively, or a tar archive)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        sizes = [_size(p) for p in files]
    elif path.is_file() and tarfile.is_tarfile(path):
        sizes = []
        with tarfile.open(path) as archive:
            for member in archive:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    data = archive.extractfile(member)
                    sizes.append(_size(io.BytesIO(data.read() if data else b"")))
    else:
        raise ValueError("must be a folder of images or a .tar/.tar.gz archive of them")
    if not sizes:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return sizes
