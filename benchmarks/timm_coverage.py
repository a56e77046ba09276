"""Which timm models get the whole contract: every architecture below in five configurations, on the meta device.

Each configuration is built with ``build_backbone("timm:<name>", ...)`` on the meta device and checked with
``backbones.testing.assert_contract`` (forward shapes == output_size == the ceil grid, masks == slicing) at odd
sizes from its ``min_input_size`` up. PASS: the contract holds. REFUSED: the build said no with a ValueError naming
the model and the reason. FAIL: anything else (another exception, a broken contract).

    python benchmarks/timm_coverage.py [--models a,b] [--configs native,os16] [--json]
    python benchmarks/timm_coverage.py --sample 150 --seed 1 --configs native,os16,"os16 dilate"  # timm at random
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header  # noqa: E402

from backbones import build_on_meta  # noqa: E402
from backbones.testing import assert_contract  # noqa: E402

# (family, timm name, kind): kind is "cnn" or "transformer"
ARCHITECTURES = [
    ("resnet", "resnet18", "cnn"), ("resnet", "resnet50d", "cnn"), ("resnext", "resnext26ts", "cnn"),
    ("senet", "seresnet50", "cnn"), ("res2net", "res2net50_26w_4s", "cnn"), ("resnest", "resnest14d", "cnn"),
    ("convnext", "convnext_atto", "cnn"), ("convnext", "convnext_nano", "cnn"),
    ("convnextv2", "convnextv2_atto", "cnn"),
    ("efficientnet", "efficientnet_b0", "cnn"), ("efficientnet", "tf_efficientnet_b0", "cnn"),
    ("efficientnet", "efficientnet_lite0", "cnn"), ("efficientnetv2", "tf_efficientnetv2_b0", "cnn"),
    ("mobilenetv2", "mobilenetv2_050", "cnn"), ("mobilenetv3", "mobilenetv3_small_050", "cnn"),
    ("mobilenetv3", "mobilenetv3_large_100", "cnn"), ("mobilenetv4", "mobilenetv4_conv_small", "cnn"),
    ("lcnet (PP-LCNet)", "lcnet_050", "cnn"), ("lcnet (PP-LCNet)", "lcnet_100", "cnn"),
    ("mnasnet", "mnasnet_small", "cnn"),
    ("ghostnet", "ghostnet_100", "cnn"), ("regnet", "regnetx_002", "cnn"), ("regnet", "regnety_002", "cnn"),
    ("cspnet", "cspresnet50", "cnn"), ("cspnet", "cspdarknet53", "cnn"), ("dla", "dla34", "cnn"),
    ("dpn", "dpn68", "cnn"),
    ("densenet", "densenet121", "cnn"), ("vgg", "vgg11", "cnn"), ("hrnet", "hrnet_w18_small", "cnn"),
    ("rexnet", "rexnet_100", "cnn"), ("hardcorenas", "hardcorenas_a", "cnn"), ("mixnet", "mixnet_s", "cnn"),
    ("nfnet", "nf_resnet26", "cnn"), ("byobnet", "gernet_s", "cnn"), ("repvgg", "repvgg_a0", "cnn"),
    ("hgnet (PP-HGNet)", "hgnetv2_b0", "cnn"), ("xception", "xception41", "cnn"), ("inception", "inception_v3", "cnn"),
    ("tresnet", "tresnet_m", "cnn"), ("repvit", "repvit_m1", "cnn"), ("fastvit", "fastvit_t8", "cnn"),
    ("efficientvit", "efficientvit_b0", "cnn"), ("inception_next", "inception_next_tiny", "cnn"),
    ("mobilevit", "mobilevit_xxs", "transformer"), ("edgenext", "edgenext_xx_small", "transformer"),
    ("vit", "vit_tiny_patch16_224", "transformer"), ("vit", "vit_small_patch16_224", "transformer"),
    ("deit", "deit_tiny_patch16_224", "transformer"), ("eva", "eva02_tiny_patch14_224", "transformer"),
    ("beit", "beit_base_patch16_224", "transformer"), ("swin", "swin_tiny_patch4_window7_224", "transformer"),
    ("pvt_v2", "pvt_v2_b0", "transformer"), ("metaformer", "poolformer_s12", "transformer"),
    ("metaformer", "caformer_s18", "transformer"), ("metaformer", "convformer_s18", "transformer"),
    ("efficientformer", "efficientformerv2_s0", "transformer"), ("focalnet", "focalnet_tiny_srf", "transformer"),
    ("davit", "davit_tiny", "transformer"), ("coatnet", "coatnet_0_rw_224", "transformer"),
    ("maxvit", "maxvit_tiny_tf_224", "transformer"), ("tiny_vit", "tiny_vit_5m_224", "transformer"),
    ("deit3", "deit3_small_patch16_224", "transformer"), ("dinov2", "vit_small_patch14_dinov2", "transformer"),
    ("flexivit", "flexivit_small", "transformer"), ("naflexvit", "naflexvit_base_patch16_gap", "transformer"),
    ("cait", "cait_xxs24_224", "transformer"), ("xcit", "xcit_nano_12_p16_224", "transformer"),
    ("twins", "twins_svt_small", "transformer"), ("mvitv2", "mvitv2_tiny", "transformer"),
    ("hiera", "hiera_tiny_224", "transformer"),
]  # fmt: skip
CONFIGS = {
    "native": {},
    "os16": {"output_stride": 16},
    "os8": {"output_stride": 8},
    "os32x4": {"output_stride": (32, 4)},
    "os16 dilate": {"output_stride": 16, "dilate": True},
}


def check(name: str, options: Dict) -> Dict[str, str]:
    start = time.perf_counter()
    try:
        encoder = build_on_meta(f"timm:{name}", **options)
        low = max(encoder.min_input_size, 17)
        sizes = [(low, low + 14), (low + 20, 3 * low + 1), (low + 47, 2 * low + 61)]
        assert_contract(encoder, sizes)
        verdict, reason = "PASS", ""
    except ValueError as error:
        verdict, reason = "REFUSED", str(error).split("\n")[0]
    except Exception as error:  # a raw error from inside timm, or a broken contract: what must not happen
        verdict, reason = "FAIL", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return {"verdict": verdict, "reason": reason[:300], "seconds": round(time.perf_counter() - start, 2)}


def sample_architectures(count: int, seed: int) -> List[Tuple[str, str, str]]:
    """``count`` of timm's names drawn at random (the largest variants left out: the sweep is about arithmetic)."""
    import timm

    large = ("huge", "giant", "gigantic", "large", "_xl", "xxl", "7b", "so400m", "bigG", "_g_", "_e_", "_518", "_448")
    names = [name for name in timm.list_models() if not any(part in name for part in large)]
    return [(name.split("_")[0], name, "sampled") for name in random.Random(seed).sample(names, count)]


def run(
    names: List[str], configs: List[str], architectures: Sequence[Tuple[str, str, str]] = ARCHITECTURES
) -> List[Dict]:
    rows = []
    for family, name, kind in architectures:
        if name not in names:
            continue
        row = {"family": family, "model": name, "kind": kind}
        for config in configs:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row[config] = check(name, CONFIGS[config])
            print(json.dumps({"model": name, "config": config, **row[config]}), file=sys.stderr)
        rows.append(row)
    return rows


def summary(rows: List[Dict], configs: List[str]) -> List[Dict]:
    """Per kind and configuration: PASS / REFUSED / FAIL counts and the PASS share."""
    out = []
    for kind in ("cnn", "transformer", "sampled"):
        for config in configs:
            counts: Dict[str, int] = defaultdict(int)
            for row in rows:
                if row["kind"] == kind:
                    counts[row[config]["verdict"]] += 1
            total = sum(counts.values())
            if total:
                out.append({"kind": kind, "config": config, **counts, "pass %": round(100 * counts["PASS"] / total)})
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(name for _, name, _ in ARCHITECTURES))
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"subset of {', '.join(CONFIGS)}")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sample", type=int, default=0, help="instead, this many of timm's names drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="for --sample")
    args = parser.parse_args(argv)
    configs = args.configs.split(",")
    if args.sample:
        architectures = sample_architectures(args.sample, args.seed)
        rows = run([name for _, name, _ in architectures], configs, architectures)
    else:
        rows = run(args.models.split(","), configs)
    if args.json:
        print(json.dumps({"rows": rows, "summary": summary(rows, configs)}, indent=1))
        return
    families = len({row["family"] for row in rows})
    print(header(f"timm coverage: {len(rows)} architectures from {families} families, meta device"))
    print("| family | model | " + " | ".join(configs) + " |")
    print("|---|---|" + "---|" * len(configs))
    for row in rows:
        print(f"| {row['family']} | {row['model']} | " + " | ".join(row[c]["verdict"] for c in configs) + " |")
    print("\n| kind | config | PASS | REFUSED | FAIL | pass % |\n|---|---|---|---|---|---|")
    for line in summary(rows, configs):
        print(f"| {line['kind']} | {line['config']} | {line.get('PASS', 0)} | {line.get('REFUSED', 0)} | "
              f"{line.get('FAIL', 0)} | {line['pass %']} |")  # fmt: skip
    refusals = {(row["model"], c): row[c]["reason"] for row in rows for c in configs if row[c]["verdict"] != "PASS"}
    if refusals:
        print("\nReasons (REFUSED and FAIL):\n")
        for (model, config), reason in refusals.items():
            print(f"- {model}, {config}: {reason}")


if __name__ == "__main__":
    main()
