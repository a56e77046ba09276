"""swap() into a Hugging Face VisionEncoderDecoderModel (TrOCR's kind: a ViT encoder, a TrOCR decoder), built
offline from tiny configs: the encoder's stand-in is called as VisionEncoderDecoderModel and generate() call it,
returns the ViT's ModelOutput class, carries its config; the model trains and generates after the swap."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from backbones import swap  # noqa: E402
from backbones.swapping import ModelOutputEncoder, TokenEncoder  # noqa: E402


def trocr_like():
    from transformers import TrOCRConfig, TrOCRForCausalLM, VisionEncoderDecoderModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    vit = ViTConfig(image_size=(32, 128), patch_size=(4, 8), hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64)  # fmt: skip
    trocr = TrOCRConfig(vocab_size=20, d_model=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                        max_position_embeddings=16, pad_token_id=1, bos_token_id=0, eos_token_id=2)  # fmt: skip
    model = VisionEncoderDecoderModel(encoder=ViTModel(vit), decoder=TrOCRForCausalLM(trocr))
    model.config.decoder_start_token_id, model.config.pad_token_id, model.config.eos_token_id = 0, 1, 2
    return model


LABELS = torch.tensor([[3, 4, 5, 2], [6, 7, 2, 1]])


def test_a_vit_encoder_of_a_vision_encoder_decoder_model():
    model = trocr_like()
    x = torch.randn(2, 3, 32, 128)
    with torch.no_grad():
        before = model.eval()(pixel_values=x, labels=LABELS).encoder_last_hidden_state.shape
    old_class, old_config = type(model.encoder(x)), model.encoder.config
    report = swap(model, "encoder", "resnet18")
    encoder = model.encoder
    assert isinstance(encoder, ModelOutputEncoder) and isinstance(encoder.inner, TokenEncoder)
    assert (
        report.old.call == report.new.call == "(pixel_values=x) -> BaseModelOutputWithPooling(tokens [N, 1 + h*w, C])"
    )
    assert (
        encoder.config is old_config and encoder.config.hidden_size == 32 and encoder.main_input_name == "pixel_values"
    )
    assert encoder.dtype == torch.float32 and encoder.device.type == "cpu"
    assert encoder.get_input_embeddings() is encoder.inner.encoder.conv1
    out = encoder(x)
    assert type(out) is old_class and out.last_hidden_state.shape == before == (2, 129, 32)
    assert out.pooler_output.shape == (2, 32) and out.hidden_states is None
    stages = encoder(pixel_values=x, output_hidden_states=True, return_dict=True).hidden_states
    assert [tuple(s.shape) for s in stages] == [(2, 256, 64), (2, 256, 64), (2, 128, 128), (2, 128, 256), (2, 128, 512)]
    assert isinstance(encoder(x, return_dict=False), tuple)
    model.train()
    loss = model(pixel_values=x, labels=LABELS).loss
    loss.backward()
    assert torch.isfinite(loss) and encoder.inner.encoder.conv1.weight.grad is not None
    generated = model.eval().generate(x, max_new_tokens=3)
    assert generated.shape[0] == 2 and generated.shape[1] <= 4
    with pytest.raises(ValueError, match="pass the images as pixel_values="):
        encoder()
