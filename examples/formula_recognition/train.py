"""Train and evaluate the formula recognizer with any encoder; compare encoders under one budget.

    # one encoder, synthetic printed formulas generated on the fly (cached under --out)
    python examples/formula_recognition/train.py --synthetic 6000 --encoder resnet34 --minutes 10 --out runs/r34
    # the comparison: same data, seed and time budget for each encoder, a Markdown table at the end
    python examples/formula_recognition/train.py --synthetic 6000 --minutes 10 --out runs/compare \\
        --encoders densenet_hmer,resnet18,resnet34 --test path/to/crohme14_test --test-scale 0.5
    # evaluate saved checkpoints on real images
    python examples/formula_recognition/train.py --eval-only runs/compare/resnet18 --test path/to/crohme14_test
    # DDP (gloo on CPU, nccl + SyncBatchNorm on GPU)
    torchrun --nproc-per-node 2 examples/formula_recognition/train.py --synthetic 2000 --encoder resnet18 --steps 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import FormulaDataset, SizeBatchSampler, Vocabulary, collate  # noqa: E402
from model import Recognizer, encoder_kwargs  # noqa: E402


def edit_distance(a: List[int], b: List[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


@torch.no_grad()
def evaluate(model: Recognizer, dataset, device: torch.device, batch_size: int = 16, limit: Optional[int] = None):
    """ExpRate (exact match), ExpRate<=1 error, token error rate (edit distance / reference tokens)."""
    model.eval()
    indices = list(range(len(dataset)))[: limit or len(dataset)]
    subset = Subset(dataset, indices)
    sizes = [tuple(dataset.samples[i].image.shape) for i in indices]
    loader = DataLoader(subset, batch_sampler=SizeBatchSampler(sizes, batch_size, shuffle=False), collate_fn=collate)
    exact = within_one = errors = reference_tokens = total = 0
    for images, mask, targets, _ in loader:
        predictions = model.greedy(images.to(device), mask.to(device), max_len=targets.shape[1] + 10)
        for predicted, target in zip(predictions, targets.tolist()):
            reference = [t for t in target if t not in (model.pad, model.eos)]
            distance = edit_distance(predicted, reference)
            exact += distance == 0
            within_one += distance <= 1
            errors += distance
            reference_tokens += len(reference)
            total += 1
    model.train()
    return {"exprate": exact / max(total, 1), "exprate_le1": within_one / max(total, 1),
            "ter": errors / max(reference_tokens, 1), "images": total}  # fmt: skip


def save_checkpoint(model: Recognizer, vocabulary: Vocabulary, folder: Path, extra: Dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"encoder": model.encoder_spec, "tokens": vocabulary.tokens, **extra}
    (folder / "config.json").write_text(json.dumps(config, indent=1))


def load_checkpoint(folder: Path, device: str = "cpu"):
    """-> (Recognizer in eval mode, Vocabulary) from ``save_checkpoint``'s folder."""
    from safetensors.torch import load_file

    config = json.loads((Path(folder) / "config.json").read_text())
    vocabulary = Vocabulary(config["tokens"])
    model = Recognizer(config["encoder"], len(vocabulary), sos=vocabulary.sos, eos=vocabulary.eos, pad=vocabulary.pad)
    model.load_state_dict(load_file(str(Path(folder) / "model.safetensors"), device=device))
    return model.to(device).eval(), vocabulary


def plot_curves(history: List[Dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([h["step"] for h in history], [h["loss"] for h in history])
    left.set(xlabel="step", ylabel="training loss", yscale="log", title=title)
    evals = [h for h in history if "exprate" in h]
    right.plot([h["step"] for h in evals], [100 * h["exprate"] for h in evals], marker="o", label="ExpRate")
    right.plot([h["step"] for h in evals], [100 * h["ter"] for h in evals], marker="x", label="token error rate")
    right.set(xlabel="step", ylabel="% (validation)", ylim=(0, 100))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_comparison(histories: Dict[str, List[Dict]], path: Path) -> None:
    """One figure: training loss and validation ExpRate against training minutes, one line per encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for spec, history in histories.items():
        left.plot([h["seconds"] / 60 for h in history], [h["loss"] for h in history], label=spec)
        evals = [h for h in history if "exprate" in h]
        right.plot([h["seconds"] / 60 for h in evals], [100 * h["exprate"] for h in evals], marker="o", label=spec)
    left.set(xlabel="training minutes", ylabel="training loss", yscale="log")
    right.set(xlabel="training minutes", ylabel="validation ExpRate %")
    left.legend()
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _distributed() -> tuple:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train_one(args, spec: str, train_set, val_set, test_set, folder: Path) -> Dict:
    rank, world = _distributed()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = torch.device(args.device)
    v = vocabulary = train_set.dataset.vocabulary if isinstance(train_set, Subset) else train_set.vocabulary
    model = Recognizer(spec, len(v), sos=v.sos, eos=v.eos, pad=v.pad, pretrained=args.pretrained).to(device)
    if world > 1 and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer, scheduler = _optimizer(args, model)
    sampler, loader = _loader(args, train_set, rank, world)
    budget = args.minutes * 60 if args.minutes else float("inf")
    total_steps = args.steps or 10**9
    bar = _progress(args, spec, rank, total_steps)
    history: List[Dict] = []
    step_times: List[float] = []
    start, step, epoch, running = time.time(), 0, 0, []
    evaluating = 0.0  # seconds spent on validation, not counted against the budget
    done = False
    while not done:
        sampler.set_epoch(epoch)
        for images, mask, targets, _ in loader:
            tick = time.perf_counter()
            images, mask, targets = images.to(device), mask.to(device), targets.to(device)
            logits = ddp(images, mask, targets)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=v.pad)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            step_times.append(time.perf_counter() - tick)
            running.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            stop = torch.tensor(float(step >= total_steps or time.time() - start - evaluating >= budget))
            if world > 1:
                dist.all_reduce(stop, op=dist.ReduceOp.MAX)
            seconds = round(time.time() - start - evaluating)
            record = {"step": step, "loss": statistics.fmean(running), "seconds": seconds}
            if step % args.log_every == 0 or stop:
                history.append(record)
                running = []
            if rank == 0 and val_set is not None and (step % args.eval_every == 0 or stop):
                tock = time.time()
                history[-1].update(evaluate(model, val_set, device, limit=args.val_limit))
                evaluating += time.time() - tock
                bar.write(f"step {step}: {json.dumps(history[-1])}")
            if stop:
                done = True
                break
        epoch += 1
    bar.close()
    result = {"encoder": spec, "steps": step, "train_seconds": round(time.time() - start - evaluating),
              "ms_per_step": 1000 * statistics.median(step_times[1:] or step_times)}  # fmt: skip
    if rank == 0:
        _report(args, spec, model, vocabulary, result, history, val_set, test_set, device, folder)
    return result


def _optimizer(args, model: torch.nn.Module):
    """AdamW with a linear warm-up over the first tenth of the steps (at most 100)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = max(1, min(100, args.steps // 10 if args.steps else 100))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))


def _progress(args, spec: str, rank: int, total_steps: int):
    from tqdm import tqdm

    total = None if args.minutes else total_steps
    return tqdm(total=total, desc=spec, disable=rank != 0 or args.quiet, unit="step")


def _loader(args, train_set, rank: int, world: int):
    """The size-bucketed sampler over this rank's share of train_set, and its DataLoader."""
    base = train_set.dataset if isinstance(train_set, Subset) else train_set
    indices = train_set.indices if isinstance(train_set, Subset) else range(len(base))
    sizes = [tuple(base.samples[i].image.shape) for i in indices]
    sampler = SizeBatchSampler(sizes, args.batch_size, max_pixels=args.max_pixels, seed=args.seed,
                               rank=rank, world_size=world)  # fmt: skip
    return sampler, DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=0)


def _report(args, spec, model, vocabulary, result, history, val_set, test_set, device, folder: Path) -> None:
    """Sizes, the last validation, the test set's figures, the checkpoint, the curves and the history (rank 0)."""
    result["params_encoder"] = sum(p.numel() for p in model.encoder.parameters())
    result["params_total"] = sum(p.numel() for p in model.parameters())
    result["gflops_encoder"] = encoder_gflops(spec, args.flops_size)
    result["val"] = history[-1] if val_set is not None else {}
    if test_set is not None:
        result["test"] = evaluate(model, test_set, device)
    save_checkpoint(model, vocabulary, folder, {"result": result, "history": history})
    plot_curves(history, folder / "curves.png", spec)
    (folder / "history.json").write_text(json.dumps(history, indent=1))


def encoder_gflops(spec: str, size: str) -> float:
    from backbones import build_on_meta
    from backbones.core import count_flops

    kwargs = encoder_kwargs(spec)
    model = build_on_meta(kwargs.pop("name"), **kwargs)
    height, width = map(int, size.split("x"))
    return count_flops(model, (1, 1, height, width)) / 1e9


def comparison_table(results: List[Dict], flops_size: str) -> str:
    header = (f"| encoder | encoder params | GFLOPs @ 1x1x{flops_size} | ms / train step | steps | "
              "val ExpRate | val TER | CROHME14 ExpRate | CROHME14 ExpRate<=1 | CROHME14 TER |")  # fmt: skip
    lines = [header, "|" + "---|" * 10]
    for r in results:
        test = r.get("test", {})
        cells = [
            f"`{r['encoder']}`", f"{r['params_encoder'] / 1e6:.2f} M", f"{r['gflops_encoder']:.2f}",
            f"{r['ms_per_step']:.0f}", str(r["steps"]),
            f"{100 * r['val'].get('exprate', float('nan')):.1f} %", f"{100 * r['val'].get('ter', float('nan')):.1f} %",
            f"{100 * test['exprate']:.1f} %" if test else "-", f"{100 * test['exprate_le1']:.1f} %" if test else "-",
            f"{100 * test['ter']:.1f} %" if test else "-",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in spec)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, help="CROHME-layout training folder")
    parser.add_argument("--synthetic", type=int, default=0, help="generate this many printed formulas (cached)")
    parser.add_argument("--synthetic-height", default="40x80", help="their height range")
    parser.add_argument("--synthetic-max-tokens", type=int, default=24, help="their longest caption")
    parser.add_argument("--val-fraction", type=float, default=0.05)
    parser.add_argument("--val-limit", type=int, default=300, help="validation images per evaluation")
    parser.add_argument("--test", type=Path, help="CROHME-layout folder evaluated at the end (e.g. CROHME 2014)")
    parser.add_argument("--test-scale", type=float, default=0.5, help="resize factor for the test images")
    parser.add_argument("--encoder", default="densenet_hmer", help="a backbones spec, e.g. resnet50:strides=1x1x2x2")
    parser.add_argument("--strides", help="per-stage strides for --encoder, e.g. 1,1,2,2")
    parser.add_argument("--encoders", help="comma-separated specs: train each with the same budget and compare")
    parser.add_argument("--pretrained", default=False, help="passed to build_backbone (a tag or a file)")
    parser.add_argument("--minutes", type=float, default=0.0, help="time budget per encoder")
    parser.add_argument("--steps", type=int, default=0, help="step budget per encoder")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-pixels", type=int, default=16 * 80 * 480)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--flops-size", default="64x256", help="HxW of the GFLOPs column")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/formula"))
    parser.add_argument("--eval-only", type=Path, nargs="*", help="checkpoint folders to evaluate on --test")
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval_only:
        results = []
        for folder in args.eval_only:
            model, vocabulary = load_checkpoint(folder, args.device)
            test_set = FormulaDataset(args.test, vocabulary, scale=args.test_scale)
            metrics = evaluate(model, test_set, torch.device(args.device))
            print(json.dumps({"checkpoint": str(folder), **metrics, "skipped": len(test_set.skipped)}))
            results.append(metrics)
        return results
    if not args.steps and not args.minutes:
        raise SystemExit("give a budget: --steps N or --minutes M")
    rank, _ = _distributed()
    train_root = args.train
    if args.synthetic:
        from synth import write_dataset

        name = f"synthetic-{args.synthetic}-{args.synthetic_height}-{args.synthetic_max_tokens}-seed{args.seed}"
        train_root = args.out / name
        if rank == 0 and not (train_root / "caption.txt").exists():
            low, high = map(int, args.synthetic_height.split("x"))
            write_dataset(train_root, args.synthetic, args.seed, (low, high), args.synthetic_max_tokens)
        if dist.is_initialized():
            dist.barrier()
    if train_root is None:
        raise SystemExit("give --train DIR or --synthetic N")
    dataset = FormulaDataset(train_root)
    order = list(range(len(dataset)))
    random.Random(args.seed).shuffle(order)
    n_val = int(len(order) * args.val_fraction)
    train_set, val_set = Subset(dataset, order[n_val:]), (Subset(dataset, order[:n_val]) if n_val else None)
    if val_set is not None:
        val_set.samples = [dataset.samples[i] for i in val_set.indices]  # for evaluate()'s size batching
    test_set = FormulaDataset(args.test, dataset.vocabulary, scale=args.test_scale) if args.test else None
    specs = args.encoders.split(",") if args.encoders else [args.encoder]
    if args.strides and not args.encoders:
        specs = [f"{args.encoder}{':' if ':' not in args.encoder else ','}strides={args.strides.replace(',', 'x')}"]
    results = []
    for spec in specs:
        results.append(train_one(args, spec, train_set, val_set, test_set, args.out / _slug(spec)))
    if rank == 0:
        table = comparison_table(results, args.flops_size)
        (args.out / "comparison.md").write_text(table + "\n")
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        histories = {s: json.loads((args.out / _slug(s) / "history.json").read_text()) for s in specs}
        plot_comparison(histories, args.out / "comparison.png")
        if not args.quiet:
            print(table)
    if dist.is_initialized():
        dist.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
