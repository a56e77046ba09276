"""swap() into recognizers whose encoders hand on tokens, a width sequence or a Hugging Face ModelOutput, take one
input size only, or are held under two names (tests/recognizers.py): the model trains after the swap, its next
module receives what it received before at sizes the swap never probed, load_rest keeps the rest of a checkpoint, a
dry run or a failed swap changes nothing, and the refusals say what to do."""

import json

import pytest
import torch
from recognizers import AsterEncoder, MasterLike, ParseqEncoder, ParseqLike, PooledEncoder, SequenceRecognizer
from torch import nn

from backbones import swap
from backbones.cli import main
from backbones.swapping import OutputKind, SequenceEncoder, SequenceHeight, TokenEncoder, probe_contract

TARGET = "resnet18"


def received(model: nn.Module, module: nn.Module, x: torch.Tensor) -> list:
    """The shapes of what ``module`` (the next module after the encoder) receives when ``model`` runs on ``x``."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _, args: seen.append([tuple(a.shape) for a in args]))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return seen


def trains_a_step(model: nn.Module, new: nn.Module, x: torch.Tensor) -> None:
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = model(x).float().square().mean()
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in new.parameters() if p.requires_grad)
    optimizer.step()


def snapshot(model: nn.Module):
    return {k: v.clone() for k, v in model.state_dict().items()}, [(n, type(m)) for n, m in model.named_modules()]


def unchanged(model: nn.Module, before) -> None:
    state, modules = before
    assert [(n, type(m)) for n, m in model.named_modules()] == modules
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_tokens_of_a_2d_grid_held_under_two_names(tmp_path):
    """MASTER: the embedding is conv_embedding_gc and encode_stage.0, and the forward runs the second; both names
    point at the new module; load_rest drops the old encoder's keys under both and loads the rest strictly."""
    torch.manual_seed(0)
    trained = MasterLike()
    torch.save({"state_dict": trained.state_dict()}, tmp_path / "master.ckpt")
    model = MasterLike()
    unseen = [torch.randn(2, 3, 45, 150), torch.randn(2, 3, 70, 33)]
    before = [received(model, model.decoder, x) for x in unseen]
    report = swap(model, "conv_embedding_gc", TARGET)
    assert report.paths == ["conv_embedding_gc", "encode_stage.0"]
    assert model.encode_stage[0] is model.conv_embedding_gc and isinstance(model.conv_embedding_gc, TokenEncoder)
    assert report.old.call == "(x) -> tokens [N, h*w, C]" and report.old.stride == "8 x 8"
    assert report.arrangement == "b c h w -> b (h w) c"
    assert [received(model, model.decoder, x) for x in unseen] == before
    loaded = report.load_rest(str(tmp_path / "master.ckpt"))
    old_keys = [k for k in trained.state_dict() if k.startswith(("conv_embedding_gc.", "encode_stage.0."))]
    assert sorted(loaded.dropped) == sorted(old_keys) and loaded.loaded == len(trained.state_dict()) - len(old_keys)
    assert torch.equal(model.head.weight, trained.head.weight)
    trains_a_step(model, model.conv_embedding_gc, unseen[0])


@pytest.mark.parametrize(
    "encoder, height, arrangement",
    [
        (lambda: AsterEncoder(), SequenceHeight.SQUEEZED, "b c 1 w -> b w c"),
        (lambda: AsterEncoder(lstm=True), SequenceHeight.SQUEEZED, "b c 1 w -> b w c"),
        (lambda: PooledEncoder(), SequenceHeight.POOLED, "rows averaged, b c 1 w -> b w c"),
    ],
    ids=["aster", "aster-bilstm", "ctc-pooled"],
)
def test_width_sequences(encoder, height, arrangement):
    """ASTER without and with its BiLSTM (one height only; elsewhere its output is 4-D or fails) and a CTC encoder
    that averages its rows (any height): the head receives [N, T, C] as before, at widths the swap never probed."""
    model = SequenceRecognizer(encoder())
    contract = probe_contract(model.encoder, "encoder")
    assert contract.kind is OutputKind.SEQUENCE and contract.sequence is height
    assert contract.axes[0][1].stride == 4 and contract.out_channels == (16,)
    unseen = [torch.randn(2, 1, 32, 212), torch.randn(1, 1, 32, 37)]
    if height is SequenceHeight.POOLED:
        unseen.append(torch.randn(2, 1, 40, 150))
    else:
        assert any(
            "not the structure it returns at 32x128" in why or "Error" in why for why in contract.skipped.values()
        )
    before = [received(model, model.head, x) for x in unseen]
    report = swap(model, "encoder", TARGET)
    assert isinstance(model.encoder, SequenceEncoder) and report.arrangement == arrangement
    assert [received(model, model.head, x) for x in unseen] == before
    trains_a_step(model, model.encoder, unseen[0])


@pytest.mark.parametrize("class_token", [False, True], ids=["parseq", "vitstr-class-token"])
def test_fixed_size_vits(class_token):
    """PARSeq's and ViTSTR's ViT take 32x128 only (timm's strict img_size): matched there, at the grid timm declares
    (8x16 patches), with ViTSTR's class token stood in for by the mean token; the replacement takes other sizes."""
    model = ParseqLike(class_token)
    x = torch.randn(2, 3, 32, 128)
    before = received(model, model.decoder, x)
    report = swap(model, "encoder", TARGET)
    assert list(report.old.grids) == ["32x128"] and len(report.skipped) == 9
    assert report.old.call == f"(x) -> tokens [N, {'1 + ' if class_token else ''}h*w, C]"
    assert report.new.name == "resnet18:in_channels=3,out_channels=24,output_stride=4x8"
    assert received(model, model.decoder, x) == before == [[(2, 4, 24), (2, 128 + class_token, 24)]]
    assert received(model, model.decoder, torch.randn(1, 3, 40, 100))[0][1] == (1, 10 * 13 + class_token, 24)
    trains_a_step(model, model.encoder, x)


def test_a_dry_run_and_a_failed_swap_change_nothing():
    model = ParseqLike()
    before = snapshot(model)
    report = swap(model, "encoder", TARGET, dry_run=True)
    unchanged(model, before)
    assert report.dry_run and isinstance(model.encoder, ParseqEncoder)
    with pytest.raises(ValueError, match=r"resnet45_abinet cannot be built to match: output_stride must be"):
        swap(model, "encoder", "resnet45_abinet")  # its width stride stops at 4: no 4x8 grid
    unchanged(model, before)


class _Unreadable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)

    def forward(self, x):
        return {"features": self.conv(x)}


class _OneSizeTokens(nn.Module):
    """Tokens at one size only, no grid declared: 2x32 patches of 16x4 (64 tokens) could be many grids."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, (16, 4), (16, 4))

    def forward(self, x):
        if tuple(x.shape[-2:]) != (32, 128):
            raise ValueError(f"this encoder is made for 32x128 images, got {tuple(x.shape[-2:])}")
        return self.conv(x).flatten(2).transpose(1, 2)


def test_refusals_that_help(monkeypatch):
    model = MasterLike()
    before = snapshot(model)
    import backbones.swapping._swap as swapping

    monkeypatch.setattr(swapping, "probe_contract", lambda *a, **k: pytest.fail("probed before checking the spec"))
    with pytest.raises(KeyError, match="did you mean resnet50"):
        swap(model, "conv_embedding_gc", "resnet5")
    monkeypatch.undo()
    with pytest.raises(ValueError) as caught:
        swap(model, "conv_embedding_gc", TARGET, output_stride=16)
    message = str(caught.value)
    assert "the encoder's stride is 8 x 8, resnet18" in message and "16 x 16" in message
    assert "allow_grid_change" not in message
    unchanged(model, before)
    holder = nn.Module()
    holder.encoder = _Unreadable()
    with pytest.raises(ValueError, match=r"encoder: at 32x128 it returns dict, not a \[N, C, h, w\] map"):
        swap(holder, "encoder", TARGET)
    holder.encoder = _OneSizeTokens()
    with pytest.raises(ValueError, match=r"fit several grids at 32x128 .*pass grid=\(h, w\)"):
        swap(holder, "encoder", TARGET, dry_run=True)
    report = swap(holder, "encoder", TARGET, grid=(2, 32))
    assert report.new.name.endswith("output_stride=16x4") and isinstance(holder.encoder, TokenEncoder)


def test_the_cli_says_which_candidates_fit_a_token_encoder_and_at_what_grid(capsys, tmp_path):
    factory = tmp_path / "factory.py"
    factory.write_text(
        f"import sys\nsys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
        "from recognizers import ParseqLike\ndef parseq():\n    return ParseqLike()\n"
    )
    code = main(["swap", f"{factory}:parseq", "--at", "encoder", "--to", TARGET, "densenet_hmer", "resnet45_abinet"])
    out = capsys.readouterr().out
    assert code == 1 and "encoder: ParseqEncoder, (x) -> tokens [N, h*w, C]" in out, out
    assert "resnet18: fits as resnet18:in_channels=3,out_channels=24,output_stride=4x8" in out
    assert "128 tokens at 32x128, b c h w -> b (h w) c" in out and "resnet45_abinet: does not fit" in out
    main(["swap", f"{factory}:parseq", "--at", "encoder", "--to", TARGET, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["encoder"]["returns"] == "tokens [N, h*w, C]" and result["candidates"][0]["grid"] == {
        "32x128": "128 tokens"
    }
