"""The CLI: every command, exit codes 0/1/2, JSON fields, --images on a folder the test writes."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from backbones.cli import main
from backbones.registry import format_spec, parse_spec


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list(capsys):
    code, out, _ = run(capsys, "list", "resnet*")
    assert code == 0 and "resnet50" in out and "2048" in out and "densenet" not in out
    code, out, _ = run(capsys, "list", "densenet_hmer", "--json")
    (row,) = json.loads(out)["backbones"]
    assert row == {
        **row,
        "name": "densenet_hmer",
        "in_channels": 1,
        "out_channels": 684,
        "output_stride": [16, 16],
        "params": 2979288,
    }
    assert run(capsys, "list", "nothing*")[0] == 1


def test_check_table_and_json_agree_with_the_backbone(capsys):
    code, out, _ = run(
        capsys,
        "check",
        "resnet50",
        "--strides",
        "1",
        "1",
        "2",
        "2",
        "--in-channels",
        "1",
        "--out-channels",
        "684",
        "--input",
        "1x1x128x316",
    )
    assert code == 0 and "output [1, 684, 8, 20]: ok" in out and "GFLOPs 22.56" in out
    code, out, _ = run(
        capsys, "check", "resnet50:in_channels=1,output_stride=16,out_channels=684", "--input", "1x1x128x316", "--json"
    )
    data = json.loads(out)
    assert code == 0 and data["contract_ok"] is True
    assert data["output_shapes"] == [[1, 684, 8, 20]] and data["expected_shapes"] == [[1, 684, 8, 20]]
    assert data["params"] == 24_903_960 and abs(data["gflops"] - 10.44) < 0.01
    assert [s["stride"] for s in data["stages"]] == [[4, 4], [4, 4], [8, 8], [16, 16], [16, 16]]
    assert data["spec"] == "resnet50:in_channels=1,output_stride=16,out_channels=684"
    assert set(data) >= {"name", "options", "input_shape", "in_channels", "stages", "flops"}


def test_check_densenet_hmer_flops_from_the_design(capsys):
    code, out, _ = run(capsys, "check", "densenet_hmer", "--input", "1x1x128x316", "--json")
    assert code == 0 and abs(json.loads(out)["gflops"] - 5.74) < 0.01


def test_check_anisotropic_and_huge_input_on_meta(capsys):
    code, out, _ = run(capsys, "check", "resnet34:strides=1/2x1/2x1/2x1", "--input", "1x3x32x100", "--json")
    assert code == 0 and json.loads(out)["output_shapes"] == [[1, 512, 1, 25]]
    code, out, _ = run(capsys, "check", "resnet152", "--input", "1x3x4096x4096", "--json")
    assert code == 0 and json.loads(out)["output_shapes"] == [[1, 2048, 128, 128]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "resnet5"], "unknown backbone name 'resnet5'; did you mean resnet50"),
        (["check", "resnet50:output_stride=12"], "output_stride must be one of 4, 8, 16, 32"),
        (["check", "resnet50:stemm=cifar"], "unknown option(s) stemm"),
        (["check", "resnet50:out_channels"], "options must look like key=value, got 'out_channels'"),
        (["check", "resnet50", "--input", "1x1x64x64"], "--input has 1 channels but resnet50 takes in_channels=3"),
        (["compare", "resnet18", "resnet18", "--images", "/nonexistent"], "--images /nonexistent: must be a folder"),
        (["compare", "resnet18:out_indices=2x3", "resnet18"], "compare takes single-output specs"),
    ],
)
def test_usage_errors_exit_2_and_name_the_problem(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "resnet50", "--input", "64x64"])
    assert info.value.code == 2 and "expected NxCxHxW" in capsys.readouterr().err


def test_compare_swappable_and_not(capsys):
    code, out, _ = run(
        capsys,
        "compare",
        "densenet_hmer",
        "resnet50:out_channels=684,output_stride=16,in_channels=1",
        "--sizes",
        "128x316,54x46,311x1734",
        "--json",
    )
    data = json.loads(out)
    assert (
        code == 0
        and data["ok"]
        and data["mismatches"] == []
        and data["sizes_checked"] == 3
        and data["forward_verified"] == 3
    )
    assert data["reference"]["params"] == 2_979_288 and data["candidate"]["output_stride"] == [16, 16]
    code, out, _ = run(
        capsys, "compare", "densenet_hmer", "resnet50:out_channels=684,in_channels=1", "--sizes", "128x316,54x46"
    )
    assert code == 1
    assert "mismatch at 128x316 (grid): reference [8, 20], candidate [4, 10]" in out and "NOT SWAPPABLE" in out
    code, out, _ = run(capsys, "compare", "densenet_hmer", "resnet50", "--sizes", "64x64", "--json")
    assert code == 1 and json.loads(out)["channels_match"] is False


@pytest.fixture
def image_folder(tmp_path):
    sizes = [(54, 46), (311, 1734), (97, 401), (131, 257), (54, 46)]
    for i, (h, w) in enumerate(sizes):
        Image.new("L", (w, h)).save(tmp_path / f"img{i}.{'bmp' if i % 2 else 'png'}")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path, sizes


def test_compare_images_folder_and_archive(capsys, image_folder):
    folder, sizes = image_folder
    spec = "resnet34:out_channels=684,output_stride=16,in_channels=1"
    code, out, _ = run(capsys, "compare", "densenet_hmer", spec, "--images", str(folder), "--json")
    data = json.loads(out)
    assert code == 0 and data["images"] == 5 and data["sizes_checked"] == 4
    archive = folder / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in folder.glob("img*"):
            tar.add(path, arcname=f"off_image_test/{path.name}")
    code, out, _ = run(
        capsys, "compare", "densenet_hmer", "resnet34:in_channels=1,out_channels=684", "--images", str(archive)
    )
    assert code == 1 and "5 images, 4 distinct sizes" in out and "mismatch at" in out


def test_spec_round_trip():
    for spec in [
        "resnet50:out_channels=684,output_stride=16,in_channels=1",
        "resnet34:strides=1/2x1/2x1/2x1,dilate=true",
        "densenet_hmer",
    ]:
        name, kwargs = parse_spec(spec)
        assert format_spec(name, kwargs) == spec
    assert parse_spec("resnet50:output_stride=16x4,drop_rate=0.2,pretrained=none") == (
        "resnet50",
        {"output_stride": (16, 4), "drop_rate": 0.2, "pretrained": None},
    )


def test_console_script_and_module_entry_points():
    """The installed console script (pip's entry point next to this interpreter) and ``python -m backbones``."""
    script = Path(sys.executable).parent / "backbones"
    result = subprocess.run([str(script), "list", "densenet_hmer", "--json"], capture_output=True, text=True)
    assert result.returncode == 0 and json.loads(result.stdout)["backbones"][0]["out_channels"] == 684
    result = subprocess.run([sys.executable, "-m", "backbones", "check", "resnet5"], capture_output=True, text=True)
    assert result.returncode == 2 and "did you mean resnet50" in result.stderr and "Traceback" not in result.stderr


def test_weights_lists_tags_and_cache_state(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    code, out, _ = run(capsys, "weights", "resnet50", "--json")
    data = json.loads(out)
    assert code == 0 and data["cache_dir"] == str(tmp_path / "hub" / "checkpoints")
    default = [row for row in data["weights"] if row["default"]]
    assert [row["tag"] for row in default] == ["DEFAULT"] and not default[0]["cached"]
    assert default[0]["url"] == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    code, out, _ = run(capsys, "weights", "densenet_hmer")
    assert code == 0 and "no published weights" in out
    assert run(capsys, "weights", "resnet_50")[0] == 2


def test_weights_test_loads_a_file(capsys, tmp_path):
    import torch
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    code, out, _ = run(capsys, "weights", "resnet18:in_channels=1,out_channels=684", "--file", str(path))
    assert code == 0 and "adapted: conv1.weight: (64, 3, 7, 7) -> (64, 1, 7, 7)" in out
    assert "freshly initialised (not in the file): adapters.0.bn.bias" in out
    code, out, _ = run(capsys, "weights", "resnet34", "--file", str(path), "--json")
    data = json.loads(out)
    assert code == 1 and not data["ok"] and "missing (" in data["error"] and "layer1.2.conv1.weight" in data["error"]


def test_timm_models_in_check_and_compare(capsys):
    code, out, _ = run(capsys, "check", "timm:convnext_atto:out_channels=684,in_channels=1", "--input", "1x1x128x316")
    assert code == 0 and "output [1, 684, 4, 10]: ok" in out
    spec = "timm:resnet18:output_stride=16,dilate=true,in_channels=1,out_channels=684"
    code, out, _ = run(capsys, "compare", "densenet_hmer", spec, "--sizes", "54x46,97x401")
    assert code == 0 and "0 mismatches" in out
    code, _, err = run(capsys, "check", "timm:not_a_model")
    assert code == 2 and "unknown timm model 'not_a_model'" in err
    code, out, _ = run(capsys, "check", "timm:densenet121:output_stride=32x8,dilate=true", "--input", "1x3x37x101")
    assert code == 0 and "4      level4  1024      32x8    1x4       [1, 1024, 2, 13]" in out
    assert "input H, W >= 1; padded inside to multiples of 32x8\n" in out
    code, out, _ = run(capsys, "check", "timm:vit_tiny_patch16_224", "--input", "1x3x37x101")
    assert code == 0 and "input H, W >= 1; attention takes the padding mask" in out


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["check", "resnet50:out_channels=abc"], 2, "out_channels must be an int, or one int per output"),
        (["check", "RESNET18"], 2, "did you mean resnet18"),
        (["check", "resnet5"], 2, "(`backbones list` or list_backbones() shows all"),
        (["list", "zzz*"], 1, "backbones list: error: no backbone matches 'zzz*' (`backbones list` shows all"),
        (["list", "nowhere:x*"], 2, "unknown namespace 'nowhere:'"),
        (["weights", "resnet18", "--file", "/nonexistent.pth"], 2, "--file /nonexistent.pth: pretrained file"),
        (["compare", "resnet18", "resnet18", "--images", "/nonexistent"], 2, "--images /nonexistent"),
    ],
)
def test_messages_and_exit_codes_say_what_is_wrong(capsys, argv, code, message):
    got, out, err = run(capsys, *argv)
    assert got == code and message in err, (out, err)


def test_list_is_in_natural_order_and_lists_namespaces(capsys):
    code, out, _ = run(capsys, "list", "resnet*", "--family", "resnet", "--json")
    names = [row["name"] for row in json.loads(out)["backbones"]]
    assert names == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    code, out, _ = run(capsys, "list", "timm:convnext_a*")
    assert code == 0 and out.split() == ["timm:convnext_atto", "timm:convnext_atto_ols", "timm:convnext_atto_rms"]


def test_compare_says_which_channels_differ_and_how_to_fix_them(capsys):
    code, out, _ = run(capsys, "compare", "densenet_hmer", "resnet50", "--sizes", "64x64")
    assert code == 1 and "channels differ: reference in=1 out=684, candidate in=3 out=2048" in out
    assert "try resnet50:in_channels=1,out_channels=684,output_stride=16" in out
    code, out, _ = run(capsys, "compare", "densenet_hmer", "resnet50:in_channels=1,out_channels=684,output_stride=16")
    assert code == 0 and "OK:" in out


def test_bad_files_give_one_line_and_the_right_exit_code(capsys, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 40)
    code, out, err = run(capsys, "weights", "resnet18", "--file", str(garbage))
    assert code == 2 and "is not a readable safetensors file" in err and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "check", "resnet50:pretrained=/missing.pth")
    assert code == 2 and "pretrained file '/missing.pth' does not exist" in err
    code, _, err = run(capsys, "check", "resnet50:pretrained=imagenet")
    assert code == 2 and "one of the weight tags of resnet50" in err
    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (30, 20)).save(images / "good.png")
    (images / "broken.png").write_bytes(b"not a png")
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(images, arcname="off_image_test")
    code, _, err = run(capsys, "compare", "resnet18", "resnet18", "--images", str(archive))
    assert code == 2 and "archive member off_image_test/broken.png is not a readable image" in err
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:60])
    code, _, err = run(capsys, "compare", "resnet18", "resnet18", "--images", str(truncated))
    assert code == 2 and "the archive is damaged or truncated" in err
