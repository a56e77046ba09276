"""forward is plain tensor code: torch.jit.script, torch.export with dynamic H, W, torch.compile."""

import pytest
import torch
from conftest import built

# export treats a dynamic size of 1 as special, so the range starts where every output is >= 2 cells
H = torch.export.Dim("H", min=33, max=1024)
W = torch.export.Dim("W", min=33, max=2048)
SIZES = [(33, 33), (47, 95), (77, 1001)]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet50", {"strides": (1, (2, 1), 2, 1), "dilate": True, "in_channels": 1, "out_channels": 64}),
        ("densenet121", {"out_indices": (2,), "out_channels": 684}),  # torchvision's blocks, cut after the second
        (
            "densenet_hmer",
            {
                "block_layers": (4, 4, 4),
                "stem_norm": True,
                "post_norm": True,
                "output_stride": 8,
                "dilate": True,
                "out_indices": (1, 2, 3),
            },
        ),
    ],
)
def test_script_and_export_match_eager(name, kwargs):
    encoder = built(name, **kwargs)
    scripted = torch.jit.script(encoder)
    example = torch.randn(1, encoder.in_channels, 64, 96)
    exported = torch.export.export(encoder, (example,), dynamic_shapes={"x": {2: H, 3: W}}).module()
    for h, w in SIZES:
        x = torch.randn(1, encoder.in_channels, h, w)
        with torch.no_grad():
            eager = encoder(x)
            for other in (scripted(x), exported(x)):
                for a, b in zip(
                    eager if isinstance(eager, list) else [eager], other if isinstance(other, list) else [other]
                ):
                    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_scripted_encoder_keeps_input_checks():
    scripted = torch.jit.script(built("resnet18", in_channels=1))
    with pytest.raises(Exception, match=r"input must have 1 channels"):
        scripted(torch.randn(1, 3, 32, 32))


def test_compile_fullgraph_dynamic():
    """One graph for every size: dynamo captures the whole forward with symbolic H, W (fullgraph=True fails on any
    break), and AOT autograd's functionalised graph gives eager's numbers. Inductor's code generation is torch's own
    (minutes of C++ on a cold cache); benchmarks/inference.py compiles with it."""
    encoder = built("densenet_hmer", output_stride=16, out_channels=32, block_layers=(1, 1, 1))
    torch._dynamo.reset()
    compiled = torch.compile(encoder, fullgraph=True, dynamic=True, backend="aot_eager")
    for h, w in [(37, 101), (64, 77)]:
        x = torch.randn(2, 1, h, w)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), encoder(x), atol=1e-4, rtol=1e-4)
