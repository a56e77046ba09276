"""CROHME-layout data: images (a folder or a .tar[.gz]) + ``caption.txt`` + ``dictionary.txt``.

``caption.txt`` has one ``<id>\\t<space-separated LaTeX tokens>`` line per image; the image of ``<id>`` is
any file whose name starts with ``<id>`` (CROHME 2014's ``off_image_test/18_em_0_0.bmp`` for ``18_em_0``).
``dictionary.txt`` has ``<token>\\t<index>`` lines. Images are white strokes on black (0 = background), so
batches are padded with zeros and a bool mask ``[N, H, W]`` marks the padding (True = pad, BTTR/CoMER style).
"""

from __future__ import annotations

import io
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg")
PAD, SOS, EOS = "<pad>", "<sos>", "<eol>"


class Vocabulary:
    """Token <-> index. Index 0 is ``<pad>``, then ``<sos>``, then the dictionary (whose ``<eol>`` ends captions)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = [PAD, SOS] + [t for t in tokens if t not in (PAD, SOS)]
        if EOS not in self.tokens:
            self.tokens.append(EOS)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad, self.sos, self.eos = self.index[PAD], self.index[SOS], self.index[EOS]

    @classmethod
    def from_file(cls, path: Path) -> Vocabulary:
        lines = [line.split("\t")[0].strip() for line in Path(path).read_text().splitlines() if line.strip()]
        return cls(lines)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> List[int]:
        unknown = [t for t in tokens if t not in self.index]
        if unknown:
            raise KeyError(f"tokens not in the dictionary: {unknown}")
        return [self.index[t] for t in tokens] + [self.eos]

    def decode(self, indices: Sequence[int]) -> List[str]:
        out = []
        for i in indices:
            if i == self.eos:
                break
            if i not in (self.pad, self.sos):
                out.append(self.tokens[i])
        return out


def read_captions(path: Path) -> Dict[str, List[str]]:
    captions = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            key, _, text = line.partition("\t")
            captions[key.strip()] = text.split()
    return captions


def _image_blobs(images: Path) -> Dict[str, bytes]:
    """File stem -> encoded bytes, from a folder or a tar(.gz)."""
    blobs = {}
    if images.is_dir():
        for path in images.rglob("*"):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                blobs[path.stem] = path.read_bytes()
    else:
        with tarfile.open(images) as archive:
            for member in archive.getmembers():
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    blobs[Path(member.name).stem] = archive.extractfile(member).read()
    return blobs


def _match(key: str, stems: Dict[str, bytes]) -> Optional[str]:
    if key in stems:
        return key
    for suffix in ("_0", "_1"):
        if key + suffix in stems:
            return key + suffix
    return None


@dataclass
class Sample:
    key: str
    image: np.ndarray  # uint8 [H, W], strokes bright on a dark background
    tokens: List[str]


class FormulaDataset(Dataset):
    """One CROHME-layout folder. ``scale`` resizes every image; ``max_size`` drops larger ones.

    Items are ``(image [1, H, W] float in [0, 1], target indices [T] ending with <eol>, key)``.
    """

    def __init__(
        self,
        root: Path,
        vocabulary: Optional[Vocabulary] = None,
        *,
        scale: float = 1.0,
        max_size: Tuple[int, int] = (10_000, 10_000),
        invert: bool = False,
    ) -> None:
        root = Path(root)
        self.vocabulary = vocabulary or Vocabulary.from_file(root / "dictionary.txt")
        captions = read_captions(root / "caption.txt")
        images = next((root / n for n in ("images", "images.tar.gz", "images.tar") if (root / n).exists()), None)
        if images is None:
            raise FileNotFoundError(f"{root} has no images folder, images.tar.gz or images.tar")
        blobs = _image_blobs(images)
        self.samples: List[Sample] = []
        self.skipped: List[str] = []
        for key, tokens in captions.items():
            stem = _match(key, blobs)
            if stem is None or any(t not in self.vocabulary.index for t in tokens):
                self.skipped.append(key)
                continue
            image = Image.open(io.BytesIO(blobs[stem])).convert("L")
            if scale != 1.0:
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
            if invert:
                array = 255 - array
            if array.shape[0] > max_size[0] or array.shape[1] > max_size[1]:
                self.skipped.append(key)
                continue
            self.samples.append(Sample(key, array, tokens))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor, str]:
        sample = self.samples[index]
        image = torch.from_numpy(sample.image.copy()).float().div_(255).unsqueeze(0)
        return image, torch.tensor(self.vocabulary.encode(sample.tokens)), sample.key


def collate(items: Sequence[Tuple[Tensor, Tensor, str]], pad_index: int = 0):
    """-> images ``[N, 1, H, W]`` (zero-padded), mask ``[N, H, W]`` (True = pad), targets ``[N, T]``, keys."""
    height = max(image.shape[1] for image, _, _ in items)
    width = max(image.shape[2] for image, _, _ in items)
    length = max(len(target) for _, target, _ in items)
    images = torch.zeros(len(items), 1, height, width)
    mask = torch.ones(len(items), height, width, dtype=torch.bool)
    targets = torch.full((len(items), length), pad_index, dtype=torch.long)
    for i, (image, target, _) in enumerate(items):
        h, w = image.shape[1:]
        images[i, :, :h, :w] = image
        mask[i, :h, :w] = False
        targets[i, : len(target)] = target
    return images, mask, targets, [key for _, _, key in items]


class SizeBatchSampler(Sampler[List[int]]):
    """Batches of similar image area (less padding), at most ``max_pixels`` padded pixels each, shuffled.

    With ``world_size > 1`` each rank takes every ``world_size``-th batch (DDP); all ranks see the same number.
    """

    def __init__(
        self,
        sizes: Sequence[Tuple[int, int]],
        batch_size: int,
        *,
        max_pixels: int = 10**7,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.sizes, self.batch_size, self.max_pixels = list(sizes), batch_size, max_pixels
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size

    def _batches(self) -> List[List[int]]:
        order = sorted(range(len(self.sizes)), key=lambda i: (self.sizes[i][0] * self.sizes[i][1], i))
        batches, current, height, width = [], [], 0, 0
        for index in order:
            h, w = self.sizes[index]
            grown = (len(current) + 1) * max(height, h) * max(width, w)
            if current and (len(current) == self.batch_size or grown > self.max_pixels):
                batches.append(current)
                current, height, width = [], 0, 0
            current.append(index)
            height, width = max(height, h), max(width, w)
        if current:
            batches.append(current)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(batches)
        usable = len(batches) - len(batches) % self.world_size if len(batches) >= self.world_size else len(batches)
        return batches[:usable][self.rank :: self.world_size]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
