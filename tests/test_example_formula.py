"""examples/formula_recognition: data loader, synthetic data, a smoke run, checkpoint reload, DDP on CPU."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "formula_recognition"
sys.path.insert(0, str(EXAMPLE))

from data import FormulaDataset, SizeBatchSampler, collate  # noqa: E402
from model import Recognizer, encoder_kwargs  # noqa: E402
from synth import VOCABULARY, write_dataset  # noqa: E402
from train import edit_distance, load_checkpoint, main  # noqa: E402


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth"), 6, seed=3, height_range=(20, 30), max_tokens=6)


def _crohme_folder(root: Path, as_tar: bool) -> Path:
    """The CROHME 2014 layout: off_image_test/<id>_0.bmp in a tar.gz, captions, a dictionary."""
    (root / "dictionary.txt").write_text("x\t0\n+\t1\n2\t2\n\\frac\t3\n{\t4\n}\t5\n<eol>\t6\n")
    (root / "caption.txt").write_text("18_em_0\tx + 2\n18_em_1\t\\frac { x } { 2 }\n18_em_2\tx\n")
    images = root / "off_image_test"
    images.mkdir()
    for key, (h, w) in {"18_em_0": (30, 70), "18_em_1": (61, 33), "18_em_2": (20, 20)}.items():
        array = np.zeros((h, w), dtype=np.uint8)
        array[h // 3 : h // 2, 2:-2] = 255
        Image.fromarray(array).save(images / f"{key}_0.bmp")
    if as_tar:
        with tarfile.open(root / "images.tar.gz", "w:gz") as archive:
            archive.add(images, arcname="off_image_test")
    else:
        images.rename(root / "images")
    return root


@pytest.mark.parametrize("as_tar", [True, False])
def test_crohme_layout_loader(tmp_path, as_tar):
    dataset = FormulaDataset(_crohme_folder(tmp_path, as_tar))
    assert len(dataset) == 3 and not dataset.skipped
    vocabulary = dataset.vocabulary
    assert vocabulary.tokens[:2] == ["<pad>", "<sos>"]
    assert vocabulary.decode(vocabulary.encode(["x", "+"])) == ["x", "+"]
    items = [dataset[i] for i in range(3)]
    images, mask, targets, keys = collate(items)
    assert images.shape == (3, 1, 61, 70) and mask.shape == (3, 61, 70) and mask.dtype == torch.bool
    first = keys.index("18_em_0")
    assert not mask[first, :30, :70].any() and mask[first, 30:].all()
    assert images[first, 0, 30:].abs().sum() == 0 and images.max() == 1.0
    assert targets[keys.index("18_em_1")].tolist()[-1] == vocabulary.eos
    half = FormulaDataset(tmp_path, scale=0.5)
    assert half.samples[0].image.shape == (15, 35)


def test_size_batches_shard_across_ranks():
    sizes = [(20 + i, 30 + 7 * i) for i in range(23)]
    batches = [list(SizeBatchSampler(sizes, 4, rank=r, world_size=2, seed=1)) for r in (0, 1)]
    assert len(batches[0]) == len(batches[1]) == 3
    seen = [i for rank in batches for batch in rank for i in batch]
    assert len(seen) == len(set(seen)) and all(len(b) <= 4 for rank in batches for b in rank)
    assert len(list(SizeBatchSampler(sizes, 4, max_pixels=2 * 50 * 200))) > 6  # the pixel cap splits batches


def test_synthetic_formulas_are_in_the_crohme_vocabulary(synthetic):
    crohme = set("\\geq \\sqrt \\leq / \\infty ( , 0 \\cdot 8 \\sigma < \\pm \\log \\pi \\int \\sum \\frac".split())
    assert crohme & set(VOCABULARY) == crohme
    dataset = FormulaDataset(synthetic)
    assert len(dataset) == 6
    for sample in dataset.samples:
        assert sample.image.dtype == np.uint8 and 20 <= sample.image.shape[0] <= 60 and sample.image.max() > 100


def test_encoder_spec_strings():
    assert encoder_kwargs("resnet50:strides=1x1x2x2") == {
        "name": "resnet50", "in_channels": 1, "out_channels": 684, "strides": (1, 1, 2, 2)
    }  # fmt: skip
    assert encoder_kwargs("densenet_hmer") == {"name": "densenet_hmer", "in_channels": 1}
    assert encoder_kwargs("resnet34")["output_stride"] == 16
    assert encoder_kwargs("timm:resnet18d") == {
        "name": "timm:resnet18d", "in_channels": 1, "out_channels": 684, "output_stride": 16, "dilate": True
    }  # fmt: skip


def test_edit_distance():
    assert edit_distance([1, 2, 3], [1, 3]) == 1 and edit_distance([], [4, 5]) == 2 and edit_distance([7], [7]) == 0


def test_smoke_two_encoders_train_save_reload(synthetic, tmp_path):
    out = tmp_path / "runs"
    argv = ["--train", str(synthetic), "--steps", "2", "--batch-size", "2", "--val-fraction", "0.34",
            "--eval-every", "1", "--log-every", "1", "--out", str(out), "--quiet", "--test", str(synthetic),
            "--test-scale", "1.0", "--encoders", "densenet_hmer,resnet18:strides=1x1x2x2"]  # fmt: skip
    results = main(argv)
    assert [r["steps"] for r in results] == [2, 2]
    for result in results:
        assert np.isfinite(result["val"]["loss"]) and 0 <= result["test"]["exprate"] <= 1
    assert "| `resnet18:strides=1x1x2x2` |" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").stat().st_size > 0
    folder = out / "resnet18_strides_1x1x2x2"
    assert (folder / "curves.png").stat().st_size > 0
    model, vocabulary = load_checkpoint(folder)
    again, _ = load_checkpoint(folder)
    dataset = FormulaDataset(synthetic, vocabulary)
    images, mask, targets, _ = collate([dataset[0], dataset[1]])
    with torch.no_grad():
        assert torch.equal(model(images, mask, targets), again(images, mask, targets))
    predictions = model.greedy(images, mask, max_len=5)
    assert len(predictions) == 2 and all(len(p) <= 5 for p in predictions)
    history = json.loads((folder / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2] and "exprate" in history[-1]


def test_recognizer_shapes():
    model = Recognizer("resnet18", 20, d_model=32, num_layers=1, nhead=2, dim_feedforward=64).eval()
    images, mask = torch.zeros(2, 1, 40, 90), torch.zeros(2, 40, 90, dtype=torch.bool)
    mask[1, :, 50:] = True
    memory, memory_mask = model.encode(images, mask)
    assert memory.shape == (2, 3 * 6, 32) and memory_mask.shape == (2, 18) and memory_mask[1].sum() == 3 * 2
    assert model(images, mask, torch.ones(2, 7, dtype=torch.long)).shape == (2, 7, 20)


def test_one_ddp_step_with_two_gloo_processes(synthetic, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
               str(EXAMPLE / "train.py"), "--train", str(synthetic), "--steps", "1", "--batch-size", "1",
               "--encoder", "resnet18", "--val-fraction", "0", "--out", str(tmp_path), "--quiet",
               "--threads", "1"]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    (saved,) = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps"] == 1 and (tmp_path / "resnet18" / "model.safetensors").exists()
