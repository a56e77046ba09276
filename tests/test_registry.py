"""Registry: listing, a user family with the whole contract, namespaces, clean registration and removal."""

import sys
import threading

import pytest
import torch
from backbones.adapters import MaskedEncoder
from conftest import cells_at
from torch import nn

from backbones import (
    BackboneConfig,
    build_backbone,
    get_entry,
    list_backbones,
    register_backbone,
    register_namespace,
    unregister_backbone,
    unregister_namespace,
)
from backbones.cli import main
from backbones.core import CeilPool2d, SequentialBackbone, Stages, stride_of
from backbones.registry import BackboneEntry
from backbones.testing import assert_contract, odd_sizes

EXPECTED = {
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
    "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "densenet121", "densenet161", "densenet169",
    "densenet201", "densenet_hmer",
}  # fmt: skip


def test_list_backbones_in_natural_order():
    assert EXPECTED <= set(list_backbones())
    assert list_backbones("resnext*") == ["resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d"]
    resnets = [name for name in list_backbones("resnet*") if get_entry(name).family == "resnet"]
    assert resnets == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert list_backbones("resnet3*") == ["resnet31_ocr", "resnet34"]
    assert list_backbones("nothing*") == []


# -- a complete family of your own: this class is all it takes ---------------------------------------
class TinyCNN(SequentialBackbone):
    """A user family: conv stem /2, then two stages that each halve the size with a ceil max pool."""

    def __init__(self, config: BackboneConfig, *, width: int = 8) -> None:
        self.width = width
        super().__init__(config, family_options={"width": width})

    def build(self, config: BackboneConfig) -> Stages:
        stem = {"stem": nn.Conv2d(self.in_channels, self.width, 3, 2, 1), "relu": nn.ReLU()}
        plan = config.plan(stride_of(*stem.values()), [(2, 2), (2, 2)])
        return Stages(2, self.stages(stem, plan))

    def stages(self, stem, plan):
        yield self.add_stage("stem", stem, self.width, plan.stem_stride)
        for i, stage in enumerate(plan.stages, start=1):
            conv = nn.Conv2d(self.width, self.width, 3, padding=stage.dilation, dilation=stage.dilation)
            layer = nn.Sequential(CeilPool2d(stage.stride, "max"), conv, nn.BatchNorm2d(self.width))
            yield self.add_stage(f"stage{i}", {f"stage{i}": layer}, self.width, stage.output_stride, stage.dilation)


@pytest.fixture
def tiny():
    register_backbone("test_tiny_cnn", family="tiny")(TinyCNN)
    yield "test_tiny_cnn"
    unregister_backbone("test_tiny_cnn")


def test_user_family_gets_the_contract(tiny):
    encoder = build_backbone(tiny, out_channels=5, output_stride=(4, 8), in_channels=2, width=6)
    assert encoder.out_channels == 5 and encoder.output_stride == (4, 8)
    assert_contract(encoder, odd_sizes(10, low=(1, 1), high=(90, 90)), device="cpu")
    with pytest.raises(TypeError, match="the tiny family takes width"):
        build_backbone(tiny, depth=3)
    with pytest.raises(ValueError, match="output_stride must be one of 2, 4, 8"):
        build_backbone(tiny, output_stride=16)
    scripted = torch.jit.script(encoder.eval())
    assert scripted(torch.randn(1, 2, 17, 33)).shape == (1, 5, 5, 5)


def test_user_family_dilation_pyramid_freezing_masks_and_cli(tiny, capsys):
    dilated = build_backbone(tiny, output_stride=4, dilate=True)
    assert [info.dilation for info in dilated.feature_info] == [(1, 1), (1, 1), (2, 2)]
    assert dilated.features.stage2[1].dilation == (2, 2)
    pyramid = build_backbone(tiny, out_indices=(0, 2), out_channels=(3, 4), frozen_stages=1, norm_eval=True)
    assert pyramid.out_channels == (3, 4) and pyramid.output_stride == ((2, 2), (8, 8))
    frozen = {name.split(".")[2] for name, p in pyramid.named_parameters() if not p.requires_grad}
    assert frozen == {"stem", "stage1"} and not pyramid.train().backbone.features.stage2[2].training
    masked = MaskedEncoder(build_backbone(tiny, in_channels=1)).eval()
    mask = torch.rand(2, 37, 41) > 0.5
    feature, small = masked(torch.randn(2, 1, 37, 41), mask)
    assert feature.shape == (2, 8, 5, 6) and torch.equal(small, cells_at(mask, (8, 8)))
    assert main(["check", f"{tiny}:output_stride=4", "--input", "1x3x37x41"]) == 0
    assert "[1, 8, 10, 11]" in capsys.readouterr().out


def test_registrations_are_removed_cleanly(tiny):
    assert tiny in list_backbones()
    with pytest.raises(ValueError, match="a backbone named 'test_tiny_cnn' is already registered"):
        register_backbone(tiny)(TinyCNN)
    entry = unregister_backbone(tiny)
    assert entry.builder is TinyCNN and entry.options == ("width",) and tiny not in list_backbones()
    with pytest.raises(KeyError, match="cannot unregister 'test_tiny_cnn': it is not registered"):
        unregister_backbone(tiny)
    register_backbone(tiny, family="tiny")(TinyCNN)  # the fixture's teardown removes it again


def test_duplicate_and_bad_names_are_refused():
    with pytest.raises(ValueError, match="a backbone named 'resnet50' is already registered"):
        register_backbone("resnet50")(TinyCNN)
    with pytest.raises(ValueError, match="name must be a non-empty string without ':'"):
        register_backbone("timm:x")
    with pytest.raises(ValueError, match="a namespace 'timm:' is already registered"):
        register_namespace("timm", lambda name: None, lambda pattern: [])


def test_a_namespace_of_your_own():
    zoo = {"tiny_a": 4, "tiny_b": 8}

    def resolve(name: str) -> BackboneEntry:
        if name not in zoo:
            raise KeyError(f"mylab has no model {name!r}")

        def builder(config: BackboneConfig) -> TinyCNN:
            return TinyCNN(config, width=zoo[name])

        return BackboneEntry(f"mylab:{name}", builder, "mylab", (), "in-house tiny CNN")

    register_namespace(
        "mylab", resolve, lambda pattern: sorted(n for n in zoo if not pattern or n.startswith(pattern[:-1]))
    )
    try:
        assert list_backbones("mylab:tiny*") == ["mylab:tiny_a", "mylab:tiny_b"]
        assert build_backbone("mylab:tiny_b", out_channels=3).feature_info[-1].channels == 8
        assert get_entry("mylab:tiny_a").family == "mylab"
        with pytest.raises(KeyError, match="mylab has no model 'zzz'"):
            build_backbone("mylab:zzz")
    finally:
        unregister_namespace("mylab")
    with pytest.raises(KeyError, match=r"unknown namespace 'mylab:' in 'mylab:tiny_a'; namespaces: timm:"):
        get_entry("mylab:tiny_a")


def test_timm_namespace_lists_timm_names():
    names = list_backbones("timm:convnext_a*")
    assert "timm:convnext_atto" in names and all(n.startswith("timm:convnext_a") for n in names)


def test_lookups_listing_and_building_while_another_thread_registers(tiny):
    """One thread registers and unregisters names as fast as it can while three others list, look up (and get
    suggestions for misspelt names) and build: no reader sees a table that changes under it."""
    stop, errors = threading.Event(), []

    def churn():
        i = 0
        while not stop.is_set():
            name = f"test_churn_{i % 40}"
            register_backbone(name, family="churn")(TinyCNN)
            unregister_backbone(name)
            i += 1

    def read():
        try:
            for _ in range(500):
                assert "resnet18" in list_backbones("resnet*")
                with pytest.raises(KeyError, match="did you mean"):
                    get_entry("resnet1")
                assert get_entry(tiny).family == "tiny"
            assert build_backbone(tiny, out_channels=4).out_channels == 4
        except Exception as error:  # collected and re-raised in the main thread
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    writer, readers = threading.Thread(target=churn), [threading.Thread(target=read) for _ in range(3)]
    try:
        writer.start()
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(interval)
    assert errors == [], errors[:1]
    assert not list_backbones("test_churn*")
