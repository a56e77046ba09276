"""Synthetic printed formulas in the CROHME layout, rendered with matplotlib's mathtext.

Random expressions over the CROHME 2014 vocabulary (fractions, roots, scripts, sums, functions, greek),
random math font set, size and stroke, a small random rotation/shear, elastic noise, and the CROHME look:
white strokes on black. Writes ``images/<id>.png``, ``caption.txt`` and ``dictionary.txt``::

    python examples/formula_recognition/synth.py --out runs/synth --count 6000 --seed 0
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path
from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DIGITS = list("0123456789")
LETTERS = list("abcdefghijklmnopqrstuvwxyz".replace("w", "")) + list("ABCEFGHILMNPRSTVXY") + ["w"]
LETTERS = [t for t in LETTERS if t not in ("D", "K", "O", "Q", "U", "W", "Z")]
GREEK = ["\\alpha", "\\beta", "\\gamma", "\\theta", "\\lambda", "\\mu", "\\pi", "\\sigma", "\\phi", "\\Delta"]
RELATIONS = ["=", "<", ">", "\\leq", "\\geq", "\\neq", "\\in", "\\rightarrow"]
OPERATORS = ["+", "-", "\\times", "\\div", "\\pm", "\\cdot", "/"]
FUNCTIONS = ["\\sin", "\\cos", "\\tan", "\\log"]
FONTSETS = ["cm", "stix", "stixsans", "dejavusans", "dejavuserif"]
# Everything the generator can emit; all are in CROHME 2014's dictionary.
VOCABULARY = sorted(
    set(DIGITS + LETTERS + GREEK + RELATIONS + OPERATORS + FUNCTIONS)
    | {"^", "_", "{", "}", "(", ")", "[", "]", "\\frac", "\\sqrt", "\\sum", "\\int", "\\lim", "\\infty", "!", ","}
    | {"\\ldots", "\\prime", "|"}
)


class FormulaGrammar:
    """Random token sequences of bounded length (``max_tokens``), CROHME-style spacing."""

    def __init__(self, rng: random.Random, max_tokens: int = 24) -> None:
        self.rng, self.max_tokens = rng, max_tokens

    def atom(self) -> List[str]:
        r = self.rng.random()
        if r < 0.35:
            return [self.rng.choice(LETTERS)]
        if r < 0.65:
            return list(str(self.rng.randint(0, 99 if self.rng.random() < 0.3 else 9)))
        if r < 0.8:
            return [self.rng.choice(GREEK)]
        if r < 0.85:
            return ["\\infty"]
        return [self.rng.choice(LETTERS)]

    def term(self, depth: int) -> List[str]:
        r = self.rng.random()
        if depth <= 0 or r < 0.45:
            return self.atom()
        if r < 0.58:
            return self.atom() + [self.rng.choice("^_"), "{"] + self.expression(depth - 1, 2) + ["}"]
        if r < 0.68:
            return ["\\frac", "{"] + self.expression(depth - 1, 3) + ["}", "{"] + self.expression(depth - 1, 3) + ["}"]
        if r < 0.75:
            return ["\\sqrt", "{"] + self.expression(depth - 1, 3) + ["}"]
        if r < 0.83:
            left, right = self.rng.choice([("(", ")"), ("[", "]"), ("|", "|")])
            return [left] + self.expression(depth - 1, 3) + [right]
        if r < 0.9:
            return [self.rng.choice(FUNCTIONS)] + self.atom()
        if r < 0.95:
            big = self.rng.choice(["\\sum", "\\int"])
            return [big, "_", "{"] + self.atom() + ["}", "^", "{"] + self.atom() + ["}"] + self.atom()
        return self.atom() + [self.rng.choice(["!", "\\prime"])]

    def expression(self, depth: int, terms: int) -> List[str]:
        tokens = self.term(depth)
        for _ in range(self.rng.randint(0, terms - 1)):
            tokens += [self.rng.choice(OPERATORS if self.rng.random() < 0.8 else [","])] + self.term(depth)
        return tokens

    def formula(self) -> List[str]:
        while True:
            tokens = self.expression(2, 3)
            if self.rng.random() < 0.35:
                tokens += [self.rng.choice(RELATIONS)] + self.expression(1, 2)
            if len(tokens) <= self.max_tokens:
                return tokens


def render(tokens: List[str], rng: random.Random, height_range=(40, 80)) -> np.ndarray:
    """uint8 ``[H, W]`` white-on-black image of ``tokens`` (mathtext), height in ``height_range``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import mathtext, rcParams
    from matplotlib.font_manager import FontProperties

    rcParams["mathtext.fontset"] = rng.choice(FONTSETS)
    buffer = io.BytesIO()
    latex = " ".join(t if t != "\\prime" else "^{\\prime}" for t in tokens)
    mathtext.math_to_image(f"${latex}$", buffer, prop=FontProperties(size=rng.uniform(14, 22)), dpi=100, format="png")
    image = Image.open(buffer).convert("L")
    array = 255 - np.asarray(image, dtype=np.uint8)  # white strokes on black
    ys, xs = np.nonzero(array > 20)
    array = array[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] if len(ys) else array
    target_height = rng.randint(*height_range)
    scale = target_height / max(array.shape[0], 1) * min(1.0, 1.0 + 0.5 * (array.shape[0] < 20))
    size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
    image = Image.fromarray(array).resize(size, Image.BILINEAR)
    margin = 4 + round(0.03 * size[0])  # room for the rotation at the ends of long formulas
    return _distort(np.pad(np.asarray(image), ((margin, margin), (4, 4))), rng)


def _distort(array: np.ndarray, rng: random.Random) -> np.ndarray:
    """Random rotation/shear and a smooth elastic displacement (grid_sample), values kept in 0..255."""
    image = torch.from_numpy(array.astype(np.float32) / 255)[None, None]
    h, w = array.shape
    angle, shear = np.deg2rad(rng.uniform(-2, 2)), rng.uniform(-0.15, 0.15)
    theta = torch.tensor(
        [[np.cos(angle), -np.sin(angle) * h / w + shear, 0.0], [np.sin(angle) * w / h, np.cos(angle), 0.0]],
        dtype=torch.float32,
    )[None]
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    generator = torch.Generator().manual_seed(rng.randint(0, 2**31))
    noise = torch.randn(1, 2, max(2, h // 12), max(2, w // 12), generator=generator) * rng.uniform(0.0, 2.0)
    displacement = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    grid = grid + displacement.permute(0, 2, 3, 1) * torch.tensor([2.0 / w, 2.0 / h])
    warped = F.grid_sample(image, grid, align_corners=False, padding_mode="zeros")
    return (warped[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_dataset(out: Path, count: int, seed: int = 0, height_range=(40, 80), max_tokens: int = 24) -> Path:
    """Render ``count`` formulas into ``out`` in the CROHME layout; returns ``out``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    grammar = FormulaGrammar(rng, max_tokens)
    lines = []
    for i in range(count):
        tokens = grammar.formula()
        key = f"synth_{seed}_{i:06d}"
        Image.fromarray(render(tokens, rng, height_range)).save(out / "images" / f"{key}.png")
        lines.append(f"{key}\t{' '.join(tokens)}")
    (out / "caption.txt").write_text("\n".join(lines) + "\n")
    (out / "dictionary.txt").write_text("".join(f"{t}\t{i}\n" for i, t in enumerate(VOCABULARY + ["<eol>"])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", default="40x80", help="min x max image height in pixels")
    args = parser.parse_args()
    low, high = map(int, args.height.split("x"))
    write_dataset(args.out, args.count, args.seed, (low, high))
    print(f"wrote {args.count} formulas to {args.out}")


if __name__ == "__main__":
    main()
