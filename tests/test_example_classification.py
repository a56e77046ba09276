"""examples/classification: transfer learning with pretrained=..., the CIFAR stem, ImageFolder data."""

import importlib.util
from pathlib import Path

import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# Loaded under its own name: examples/formula_recognition also has a train.py.
_SPEC = importlib.util.spec_from_file_location("classification_train", ROOT / "examples/classification/train.py")
_MODULE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_MODULE)
main = _MODULE.main


def test_cifar_stem_on_synthetic_data_learns(tmp_path):
    result = main(["--synthetic", "64", "--size", "32", "--stem", "cifar", "--epochs", "2", "--lr", "3e-3",
                   "--out", str(tmp_path)])  # fmt: skip
    assert result["grid"] == [4, 4]
    history = result["history"]
    assert history[-1]["loss"] < history[0]["loss"] and (tmp_path / "classifier.pth").exists()


def test_image_folder_with_pretrained_file_and_frozen_stages(tmp_path):
    for label, colour in (("daisy", (255, 255, 0)), ("rose", (200, 0, 30))):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (40 + i, 36), colour).save(tmp_path / "data" / label / f"{i}.png")
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    result = main(["--data", str(tmp_path / "data"), "--backbone", "resnet18", "--pretrained", str(weights),
                   "--frozen-stages", "4", "--size", "32", "--epochs", "1",
                   "--out", str(tmp_path / "out")])  # fmt: skip
    assert result["grid"] == [1, 1] and len(result["history"]) == 1
    state = torch.load(tmp_path / "out" / "classifier.pth", weights_only=True)
    assert torch.equal(state["backbone.conv1.weight"], torch.load(weights, weights_only=True)["conv1.weight"])
