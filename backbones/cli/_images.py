"""Image sizes read from file headers (no decoding), from a folder or a .tar/.tar.gz archive."""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path
from typing import List, Tuple, Union

from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "image_sizes"]

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _size(source: Union[Path, io.BytesIO], name: str) -> Tuple[int, int]:
    try:
        with Image.open(source) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name} is not a readable image ({error.__class__.__name__}: {error})") from None
    return height, width


_DAMAGED = (tarfile.TarError, OSError, EOFError, zlib.error)


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except _DAMAGED as error:
        raise ValueError(f"the archive is damaged or truncated ({error.__class__.__name__}: {error})") from None


def image_sizes(path: Union[str, Path]) -> List[Tuple[int, int]]:
    """``(H, W)`` of every image under ``path`` (a folder, searched recursively, or a tar archive)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        sizes = [_size(p, str(p)) for p in files]
    elif path.is_file() and _is_tar(path):
        sizes = []
        try:
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                        data = archive.extractfile(member)
                        member_name = f"archive member {member.name}"
                        sizes.append(_size(io.BytesIO(data.read() if data else b""), member_name))
        except _DAMAGED as error:
            raise ValueError(f"the archive is damaged or truncated ({error.__class__.__name__}: {error})") from None
    else:
        raise ValueError("must be a folder of images or a .tar/.tar.gz archive of them")
    if not sizes:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return sizes
