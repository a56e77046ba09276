"""GPU throughput of the formula encoders: images/s and achieved TFLOP/s, training and inference.

Variants: float32 (cuDNN convs in TF32, torch's default); bf16 autocast + channels_last; the same under
torch.compile. Training = forward + backward + SGD step of the encoder alone (loss = mean of the output);
TFLOP/s counts 3x the forward FLOPs for a training step (torch.utils.flop_counter, multiply and add counted
separately). Without CUDA the script says it was skipped and exits 0.

    python benchmarks/gpu.py [--batch 32] [--size 128x316] [--no-compile] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, median_ms, table  # noqa: E402

from backbones import build_backbone, build_on_meta  # noqa: E402
from backbones.core import count_flops  # noqa: E402

MODELS = {
    "resnet34 /16": ("resnet34", {"in_channels": 1, "out_channels": 684, "output_stride": 16}),
    "resnet50 /16": ("resnet50", {"in_channels": 1, "out_channels": 684, "output_stride": 16}),
    "resnet50 (1, 1, 2, 2)": ("resnet50", {"in_channels": 1, "out_channels": 684, "strides": [1, 1, 2, 2]}),
    "densenet121 /16": ("densenet121", {"in_channels": 1, "out_channels": 684, "output_stride": 16}),
    "densenet_hmer": ("densenet_hmer", {}),
}


def run(batch: int, height: int, width: int, compile_too: bool, repeats: int) -> List[Dict[str, object]]:
    rows = []
    variants = [("float32 (TF32 convs)", False, False), ("bf16 + channels_last", True, False)]
    if compile_too:
        variants.append(("bf16 + channels_last + compile", True, True))
    for label, (name, kwargs) in MODELS.items():
        flops = count_flops(build_on_meta(name, **kwargs), (1, 1, height, width))
        for variant, fast, compiled in variants:
            torch.manual_seed(0)
            model = build_backbone(name, **kwargs).cuda()
            x = torch.randn(batch, 1, height, width, device="cuda")
            if fast:
                model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            torch._dynamo.reset()  # Backbone.forward is one code object: each model would count as a recompile
            runner = torch.compile(model) if compiled else model
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

            def train_step(runner=runner, x=x, optimizer=optimizer, fast=fast):
                with torch.autocast("cuda", torch.bfloat16, enabled=fast):
                    loss = runner(x).float().mean()
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            model.train()
            train_ms = median_ms(train_step, warmup=3, repeats=repeats, cuda=True)
            model.eval()
            if compiled:
                torch._dynamo.reset()
                runner = torch.compile(model)  # compiled again for eval mode and no_grad

            def infer(runner=runner, x=x, fast=fast):
                with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=fast):
                    runner(x)

            infer_ms = median_ms(infer, warmup=3, repeats=repeats, cuda=True)
            rows.append({
                "model": label, "variant": variant,
                "train img/s": batch / train_ms * 1000, "train TFLOP/s": 3 * flops * batch / train_ms / 1e9,
                "infer img/s": batch / infer_ms * 1000, "infer TFLOP/s": flops * batch / infer_ms / 1e9,
                "GFLOPs/img": flops / 1e9,
            })  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr)
            del model, runner, optimizer
            torch.cuda.empty_cache()
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", default="128x316")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        message = "skipped: CUDA is not available on this machine"
        print(json.dumps({"skipped": message}) if args.json else message)
        return
    height, width = map(int, args.size.split("x"))
    rows = run(args.batch, height, width, not args.no_compile, args.repeats)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(header(f"GPU throughput, batch {args.batch} of 1x{height}x{width}"))
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
