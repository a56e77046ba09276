"""Transfer learning: a pretrained backbone + global pooling + a linear head (the classic flower/CIFAR use).

# an ImageFolder (one sub-folder per class), ImageNet weights, the body frozen up to stage 2
python examples/classification/train.py --data flowers/ --backbone resnet50 --pretrained True --frozen-stages 2
# CIFAR-style 32x32 images with the 3x3 stem (native /8: a 4x4 grid), random init, synthetic data
python examples/classification/train.py --synthetic 512 --backbone resnet18 --stem cifar --size 32 --epochs 3
# weights from a local file (torchvision's or timm's layout)
python examples/classification/train.py --data flowers/ --backbone resnet18 --pretrained resnet18-f37072fd.pth
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset, random_split
from tqdm import tqdm

from backbones import build_backbone
from backbones.registry import parse_value


class Classifier(nn.Module):
    """``[N, 3, H, W]`` -> backbone ``[N, C, h, w]`` -> mean over h, w -> linear -> ``[N, classes]``."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.backbone(x).mean(dim=(2, 3))))


def synthetic_shapes(count: int, size: int, num_classes: int = 4, seed: int = 0) -> TensorDataset:
    """Noisy images of one of ``num_classes`` patterns (stripes at class-specific angles and colours)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = torch.empty(count, 3, size, size)
    for i, label in enumerate(labels.tolist()):
        angle = torch.tensor(label * 3.14159 / num_classes) + 0.2 * torch.randn(1, generator=generator)
        phase = torch.rand(1, generator=generator) * 6.28
        stripes = torch.sin(8 * (xs * torch.cos(angle) + ys * torch.sin(angle)) + phase)
        colour = torch.tensor([(label + 1) % 2, (label // 2) % 2, 0.5]).view(3, 1, 1)
        images[i] = stripes * colour + 0.5 * torch.randn(3, size, size, generator=generator)
    return TensorDataset(images, labels)


def image_folder(root: Path, size: int) -> Dataset:
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    return datasets.ImageFolder(str(root), transform=transform)


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += (model(images).argmax(1) == labels).sum().item()
        total += len(labels)
    model.train()
    return correct / max(total, 1)


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="an ImageFolder root")
    parser.add_argument("--synthetic", type=int, default=0, help="use this many synthetic images instead")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--pretrained", default="False", help="False, True, a weight tag or a file")
    parser.add_argument("--stem", default=None, help="ResNets: imagenet or cifar (3x3/1 stem for 32x32)")
    parser.add_argument("--frozen-stages", type=int, default=-1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=Path("runs/classification"))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.synthetic:
        dataset, num_classes = synthetic_shapes(args.synthetic, args.size), 4
    elif args.data:
        dataset = image_folder(args.data, args.size)
        num_classes = len(dataset.classes)
    else:
        raise SystemExit("give --data DIR (an ImageFolder) or --synthetic N")
    n_val = max(1, len(dataset) // 5)
    train_set, val_set = random_split(dataset, [len(dataset) - n_val, n_val], torch.Generator().manual_seed(0))
    options = {"stem": args.stem} if args.stem else {}
    pretrained = parse_value(args.pretrained) if args.pretrained in ("True", "False") else args.pretrained
    backbone = build_backbone(args.backbone, pretrained=pretrained, frozen_stages=args.frozen_stages, **options)
    model = Classifier(backbone, num_classes)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_set, batch_size=args.batch_size)
    history = []
    for epoch in range(args.epochs):
        losses = []
        progress = tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False, disable=args.quiet)
        for images, labels in progress:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            progress.set_postfix(loss=f"{loss.item():.3f}")
        epoch_loss = sum(losses) / len(losses)
        history.append({"epoch": epoch + 1, "loss": epoch_loss, "val_accuracy": accuracy(model, val_loader)})
        print(f"epoch {epoch + 1}/{args.epochs}  loss {epoch_loss:.4f}  val accuracy {history[-1]['val_accuracy']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "classifier.pth")
    result = {"backbone": args.backbone, "grid": list(backbone.output_size(args.size, args.size)), "history": history}
    (args.out / "result.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
