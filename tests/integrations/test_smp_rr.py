"""RRWrapper on real smp models: the features RR pools are the classifier's input, the loss is CE + RR as
computed by hand, inference and checkpoints are the plain model's."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from rrseg.errors import RRSegError
from rrseg.integrations.common import load_rr, save_rr
from rrseg.integrations.smp import RRWrapper, find_classifier
from rrseg.rebalance import CountsError, RegionRebalance

C = 4
COUNTS = [40, 12, 3, 1]
SIZE = 32

ARCHS = {
    "Unet": lambda **kw: smp.Unet(
        "resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8), classes=C, **kw
    ),
    "FPN": lambda **kw: smp.FPN(
        "resnet18", encoder_weights=None, decoder_pyramid_channels=32, decoder_segmentation_channels=32,
        classes=C, **kw,
    ),
    "DeepLabV3Plus": lambda **kw: smp.DeepLabV3Plus(
        "resnet18", encoder_weights=None, decoder_channels=32, classes=C, **kw
    ),
    "UPerNet": lambda **kw: smp.UPerNet("resnet18", encoder_weights=None, decoder_channels=32, classes=C, **kw),
    "Segformer": lambda **kw: smp.Segformer(
        "mit_b0", encoder_weights=None, decoder_segmentation_channels=32, classes=C, **kw
    ),
}


def make(arch: str = "Unet", **kw):
    torch.manual_seed(0)
    return ARCHS[arch](**kw)


def batch(b: int = 2, size: int = SIZE, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, size, size, generator=gen)
    labels = torch.randint(0, C, (b, size, size), generator=gen)
    labels[:, : size // 4] = 255  # a band of ignored pixels
    return images, labels


@pytest.mark.parametrize("arch", list(ARCHS))
def test_loss_is_ce_plus_rr_on_decoder_output(arch):
    model = make(arch)
    wrapper = RRWrapper(model, COUNTS, dropout=0.0).train()
    images, labels = batch()
    torch.manual_seed(1)  # decoders with dropout (FPN, DeepLabV3+) draw the same masks in both passes
    out = wrapper(images, labels)

    # The features are the decoder output that feeds segmentation_head, computed here without hooks.
    torch.manual_seed(1)
    decoded = model.decoder(model.encoder(images))
    torch.testing.assert_close(out.features, decoded)
    torch.testing.assert_close(out.logits, model.segmentation_head(decoded))
    assert out.features.shape[1] == find_classifier(model)[1].in_channels

    expected_ce = F.cross_entropy(out.logits, labels, ignore_index=255)
    reference = RegionRebalance(out.features.shape[1], C, COUNTS, dropout=0.0)
    reference.load_state_dict(wrapper.rr.state_dict())
    expected_rr = reference.train()(decoded, labels)
    torch.testing.assert_close(out.losses["loss_seg"], expected_ce)
    torch.testing.assert_close(out.losses["loss_rr"], expected_rr)
    torch.testing.assert_close(out.loss, expected_ce + expected_rr)
    assert out.losses["loss_rr"].item() > 0


@pytest.mark.parametrize("arch", ["DeepLabV3", "PSPNet", "PAN", "MAnet", "Linknet", "UnetPlusPlus"])
def test_other_smp_architectures(arch):
    torch.manual_seed(0)
    model = smp.create_model(arch, encoder_name="resnet18", encoder_weights=None, classes=C)
    wrapper = RRWrapper(model, COUNTS).train()
    size = 128 if arch == "PAN" else 64  # PAN's pyramid pooling needs 128 px
    images, labels = batch(size=size)
    out = wrapper(images, labels)
    torch.testing.assert_close(model.segmentation_head(out.features), out.logits)  # features feed the head
    assert out.logits.shape == (2, C, size, size) and out.losses["loss_rr"].item() > 0
    out.loss.backward()


def test_dpt_classifier_is_the_last_conv_of_its_head():
    torch.manual_seed(0)
    model = smp.DPT(
        "tu-vit_tiny_patch16_224", encoder_weights=None, classes=C, dynamic_img_size=True, decoder_readout="ignore"
    )
    name, conv = find_classifier(model)
    assert name == "segmentation_head.head.4" and conv.out_channels == C
    wrapper = RRWrapper(model, COUNTS).train()
    images, labels = batch(size=32)
    out = wrapper(images, labels)
    # the captured tensor is what the final 1x1 conv reads: applying it gives the head's pre-upsampling logits
    head_logits = conv(out.features)
    up = F.interpolate(head_logits, scale_factor=model.segmentation_head.upsampling_factor, mode="bilinear",
                       align_corners=True)
    torch.testing.assert_close(up, out.logits)
    assert torch.isfinite(out.loss)


def test_inference_is_unchanged_and_no_hook_is_left():
    model = make()
    wrapper = RRWrapper(model, COUNTS)
    images, labels = batch()
    wrapper.train()
    wrapper(images, labels)
    assert not find_classifier(model)[1]._forward_pre_hooks
    wrapper.eval()
    torch.testing.assert_close(wrapper(images), model(images), rtol=0, atol=0)
    torch.testing.assert_close(wrapper.predict(images), model.predict(images), rtol=0, atol=0)
    assert wrapper(images, labels).losses["loss_rr"].item() == 0.0  # RR is training-only


def test_state_dict_is_the_plain_models_and_round_trips(tmp_path):
    model = make()
    wrapper = RRWrapper(model, COUNTS, trainable=True)
    optimizer = torch.optim.SGD(wrapper.parameters(), lr=0.1)
    images, labels = batch()
    wrapper.train()(images, labels).loss.backward()
    optimizer.step()

    state = wrapper.state_dict()
    assert list(state) == list(model.state_dict())
    assert state._metadata == model.state_dict()._metadata
    assert not any(k.startswith(("rr.", "loss.", "model.")) for k in state)

    torch.save(state, tmp_path / "model.pt")
    fresh = make()
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))  # strict
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(images), model(images), rtol=0, atol=0)

    # A wrapper loads a plain-model checkpoint strictly and keeps its own RR branch.
    other = RRWrapper(make(), COUNTS, trainable=True)
    rr_before = {k: v.clone() for k, v in other.rr.state_dict().items()}
    assert not other.load_state_dict(state).missing_keys
    for k, v in other.rr.state_dict().items():
        torch.testing.assert_close(v, rr_before[k], rtol=0, atol=0)
    other.eval()
    torch.testing.assert_close(other(images), model(images), rtol=0, atol=0)

    # The RR branch is saved apart and restored exactly.
    save_rr(wrapper.rr, tmp_path / "rr.safetensors")
    load_rr(other.rr, tmp_path / "rr.safetensors")
    for k, v in other.rr.state_dict().items():
        torch.testing.assert_close(v, wrapper.rr.state_dict()[k], rtol=0, atol=0)


def test_smp_save_pretrained_of_the_wrapped_model(tmp_path):
    model = make()
    wrapper = RRWrapper(model, COUNTS)
    wrapper.model.save_pretrained(tmp_path / "ckpt")
    loaded = smp.from_pretrained(str(tmp_path / "ckpt"))
    images, _ = batch()
    torch.testing.assert_close(loaded.eval()(images), model.eval()(images), rtol=0, atol=0)


def test_wrapper_nested_in_another_module_round_trips():
    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = RRWrapper(make(), COUNTS)
            self.other = torch.nn.Linear(2, 2)

    a, b = Holder(), Holder()
    with torch.no_grad():
        for p in a.net.model.parameters():
            p.add_(1.0)
    state = a.state_dict()
    assert "net.encoder.conv1.weight" in state and not any(".rr." in k for k in state)
    b.load_state_dict(state)
    torch.testing.assert_close(b.net.model.encoder.conv1.weight, a.net.model.encoder.conv1.weight)


def test_gradients_frozen_and_trainable_branch():
    images, labels = batch()
    frozen = RRWrapper(make(), COUNTS).train()
    frozen(images, labels).losses["loss_rr"].backward()
    assert all(p.grad is None for p in frozen.rr.parameters())
    decoder_grad = [p.grad for p in frozen.model.decoder.parameters() if p.grad is not None]
    assert decoder_grad and any(g.abs().sum() > 0 for g in decoder_grad)  # RR alone shapes the decoder
    assert frozen.model.segmentation_head[0].weight.grad is None  # ...but not the pixel classifier

    trainable = RRWrapper(make(), COUNTS, trainable=True).train()
    trainable(images, labels).loss.backward()
    assert all(p.grad is not None for p in trainable.rr.parameters() if p.requires_grad)


def test_rr_options_reach_the_branch():
    wrapper = RRWrapper(make(), COUNTS, per_image=True, etf=True, smooth=0.8, loss_weight=0.3, prior="none")
    assert wrapper.rr.per_image and wrapper.rr.etf and wrapper.rr.smooth == 0.8 and wrapper.rr.loss_weight == 0.3
    assert torch.count_nonzero(wrapper.rr.log_prior) == 0
    images, labels = batch()
    out = wrapper.train()(images, labels)
    # per-image regions: one per (image, class present)
    present = sum(len(set(lab[lab != 255].tolist())) for lab in labels)
    assert wrapper.rr.last_labels.numel() == present
    ready = RegionRebalance(8, C, COUNTS)
    assert RRWrapper(make(), rr=ready).rr is ready
    assert torch.isfinite(out.loss)


def test_custom_loss_and_classification_head():
    dice = smp.losses.DiceLoss("multiclass", ignore_index=255)
    model = make(aux_params={"classes": C})
    wrapper = RRWrapper(model, COUNTS, loss=dice).train()
    images, labels = batch()
    out = wrapper(images, labels)
    assert isinstance(out.outputs, tuple) and out.logits is out.outputs[0]
    torch.testing.assert_close(out.losses["loss_seg"], dice(out.logits, labels))
    wrapper.eval()
    masks, cls = wrapper(images)
    assert masks.shape == (2, C, SIZE, SIZE) and cls.shape == (2, C)


def test_all_ignored_batch_gives_zero_with_a_graph():
    wrapper = RRWrapper(make(), COUNTS).train()
    images, _ = batch()
    labels = torch.full((2, SIZE, SIZE), 255)
    out = wrapper(images, labels)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()


def test_bad_setups_are_reported():
    with pytest.raises(RRSegError, match="activation"):
        RRWrapper(make(activation="softmax2d"), COUNTS)
    RRWrapper(make(activation="softmax2d"), COUNTS, loss=lambda probs, labels: probs.mean())  # user's own loss
    with pytest.raises(RRSegError, match="at least 2 classes"):
        RRWrapper(smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8),
                           classes=1), [1])
    with pytest.raises(CountsError, match="num_classes is 4"):
        RRWrapper(make(), [1, 2, 3])
    with pytest.raises(RRSegError, match="segmentation_head"):
        RRWrapper(torch.nn.Conv2d(3, C, 1), COUNTS)
    with pytest.raises(RRSegError, match="8 channels"):
        RRWrapper(make(), rr=RegionRebalance(16, C, COUNTS))
    with pytest.raises(ValueError, match="not both"):
        RRWrapper(make(), COUNTS, rr=RegionRebalance(8, C, COUNTS))
    with pytest.raises(RRSegError, match="not a submodule"):
        RRWrapper(make(), COUNTS, classifier=torch.nn.Conv2d(8, C, 1))
