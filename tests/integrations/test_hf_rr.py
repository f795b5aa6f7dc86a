"""RR for HF transformers models built from small configs (no hub): UperNet (ConvNeXt backbone), BEiT and
Segformer, in a custom loop and with the HF Trainer."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import transformers  # a dev dependency (with accelerate, which the HF Trainer needs): missing, these tests fail

from rrseg.errors import RRSegError
from rrseg.integrations.common import load_rr
from rrseg.integrations.transformers import (
    RR_STATE_NAME,
    RRTrainer,
    compute_loss,
    find_classifier,
    ignore_index_of,
    region_rebalance_for,
)
from rrseg.rebalance import RegionRebalance

C = 5
COUNTS = [60, 20, 8, 3, 1]
SIZE = 32


def upernet(**kw):
    backbone = transformers.ConvNextConfig(
        num_channels=3, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.UperNetConfig(
        backbone_config=backbone, use_pretrained_backbone=False, hidden_size=16, pool_scales=[1, 2],
        auxiliary_in_channels=24, auxiliary_channels=8, num_labels=C, **kw,
    )
    return transformers.UperNetForSemanticSegmentation(config)


def beit(**kw):
    config = transformers.BeitConfig(
        image_size=SIZE, patch_size=8, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=32, out_indices=[0, 1, 2, 3], pool_scales=[1, 2], use_auxiliary_head=True,
        auxiliary_channels=8, auxiliary_num_convs=1, num_labels=C, **kw,
    )
    return transformers.BeitForSemanticSegmentation(config)


def segformer(**kw):
    config = transformers.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], patch_sizes=[7, 3],
        strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=C, **kw,
    )
    return transformers.SegformerForSemanticSegmentation(config)


MODELS = {"upernet": upernet, "beit": beit, "segformer": segformer}


def make(name: str, **kw):
    torch.manual_seed(0)
    return MODELS[name](**kw)


def batch(b: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(b, 3, SIZE, SIZE, generator=gen)
    labels = torch.randint(0, C, (b, SIZE, SIZE), generator=gen)
    labels[:, :, : SIZE // 4] = 255
    return pixel_values, labels


@pytest.mark.parametrize("name", list(MODELS))
def test_model_loss_plus_rr_on_the_classifier_input(name):
    model = make(name).train()
    rr = region_rebalance_for(model, COUNTS, dropout=0.0)
    classifier = find_classifier(model)
    assert classifier is model.decode_head.classifier
    assert (rr.reduce[0].in_channels, rr.num_classes, rr.ignore_index) == (classifier.in_channels, C, 255)

    pixel_values, labels = batch()
    torch.manual_seed(1)  # dropout (Segformer's decode head, BEiT's drop path) draws the same in both passes
    out = compute_loss(model, rr, pixel_values, labels)
    torch.manual_seed(1)
    plain = model(pixel_values=pixel_values, labels=labels)  # the model alone, no hook

    torch.testing.assert_close(out.losses["loss_seg"], plain.loss)
    torch.testing.assert_close(out.logits, plain.logits)
    # the captured tensor is what the classifier reads: classifier(features) gives the model's logits
    head_logits = classifier(out.features)
    if head_logits.shape[-2:] != out.logits.shape[-2:]:  # UperNet upsamples its logits to the input size
        head_logits = F.interpolate(head_logits, size=out.logits.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(head_logits, out.logits)

    reference = RegionRebalance(classifier.in_channels, C, COUNTS, dropout=0.0)
    reference.load_state_dict(rr.state_dict())
    torch.testing.assert_close(out.losses["loss_rr"], reference.train()(out.features.detach(), labels))
    torch.testing.assert_close(out.loss, plain.loss + out.losses["loss_rr"])
    assert not classifier._forward_pre_hooks

    out.loss.backward()
    assert model.decode_head.classifier.weight.grad is not None
    assert all(p.grad is None for p in rr.parameters())  # released default: frozen branch


@pytest.mark.parametrize("name", ["upernet", "segformer"])
def test_eval_mode_is_the_models_own(name):
    model = make(name).eval()
    rr = region_rebalance_for(model, COUNTS)
    pixel_values, labels = batch()
    with torch.no_grad():
        out = compute_loss(model, rr, pixel_values, labels)
        plain = model(pixel_values=pixel_values, labels=labels)
    assert out.losses["loss_rr"].item() == 0.0 and not rr.training
    torch.testing.assert_close(out.loss, plain.loss, rtol=0, atol=0)
    torch.testing.assert_close(out.logits, plain.logits, rtol=0, atol=0)
    assert set(model.state_dict()) == set(make(name).state_dict())  # nothing was added to the model


def test_ignore_index_follows_the_config():
    assert ignore_index_of(make("segformer", semantic_loss_ignore_index=0).config) == 0
    assert ignore_index_of(make("upernet", loss_ignore_index=100).config) == 100
    rr = region_rebalance_for(make("beit", semantic_loss_ignore_index=4), COUNTS)
    assert rr.ignore_index == 4
    assert region_rebalance_for(make("beit"), COUNTS, ignore_index=3).ignore_index == 3


def test_options_and_errors():
    model = make("segformer")
    rr = region_rebalance_for(model, COUNTS, trainable=True, per_image=True, etf=True, loss_weight=0.2)
    assert rr.per_image and rr.etf and rr.loss_weight == 0.2 and rr.smooth == 1.0
    assert all(p.requires_grad for p in rr.parameters())
    with pytest.raises(RRSegError, match="at least 2 classes"):
        region_rebalance_for(transformers.SegformerForSemanticSegmentation(
            transformers.SegformerConfig(num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[8],
                                         patch_sizes=[7], strides=[4], num_attention_heads=[1], mlp_ratios=[1],
                                         decoder_hidden_size=8, num_labels=1)), [1])
    with pytest.raises(RRSegError, match=r"decode_head\.classifier"):
        region_rebalance_for(torch.nn.Conv2d(3, C, 1), COUNTS)
    # a custom classifier module, e.g. for another model family
    conv = torch.nn.Conv2d(12, C, 1)
    assert region_rebalance_for(torch.nn.Sequential(conv), COUNTS, classifier=conv).reduce[0].in_channels == 12


class _Segments(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        pixel_values, labels = batch(1, seed=i)
        return {"pixel_values": pixel_values[0], "labels": labels[0]}


@pytest.mark.slow  # trains 2 steps with the HF Trainer
def test_hf_trainer_adds_rr_logs_it_and_saves_it(tmp_path):
    model = make("upernet")
    rr = region_rebalance_for(model, COUNTS, trainable=True)
    rr_before = {k: v.clone() for k, v in rr.state_dict().items()}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=2, per_device_train_batch_size=2,
        logging_steps=1, save_steps=2, learning_rate=1e-3, remove_unused_columns=False, disable_tqdm=True,
        seed=0,
    )
    trainer = RRTrainer(model=model, args=args, train_dataset=_Segments(4), eval_dataset=_Segments(2), rr=rr)
    trainer.train()

    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(train_logs) == 2 and all(log["loss_rr"] > 0 for log in train_logs)
    assert trainer.optimizer.param_groups[-2]["params"][0] is rr.reduce[0].weight  # the branch was optimised
    assert not torch.equal(rr.gain[0].weight, rr_before["gain.0.weight"])

    ckpt = tmp_path / "checkpoint-2"
    from safetensors.torch import load_file

    saved_model = load_file(ckpt / "model.safetensors")
    assert set(saved_model) <= set(model.state_dict()) and not any("reduce" in k for k in saved_model)
    reloaded = transformers.UperNetForSemanticSegmentation.from_pretrained(ckpt)
    pixel_values, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(pixel_values).logits, model.eval()(pixel_values).logits)
    fresh = region_rebalance_for(reloaded, COUNTS, trainable=True)
    load_rr(fresh, ckpt / RR_STATE_NAME)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, rr.state_dict()[k], rtol=0, atol=0)
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == 2

    # evaluation: the model's own loss (RR is training-only)
    metrics = trainer.evaluate()
    eval_samples = [_Segments(2)[i] for i in range(2)]
    pixel_values = torch.stack([s["pixel_values"] for s in eval_samples])
    labels = torch.stack([s["labels"] for s in eval_samples])
    with torch.no_grad():
        own = model.eval()(pixel_values=pixel_values, labels=labels).loss.item()
    assert metrics["eval_loss"] == pytest.approx(own, rel=1e-5)

    # resuming from the checkpoint restores the branch
    with torch.no_grad():
        for p in rr.parameters():
            p.zero_()
    trainer._load_from_checkpoint(str(ckpt))
    torch.testing.assert_close(rr.state_dict()["gain.0.weight"], fresh.state_dict()["gain.0.weight"])


def test_rr_trainer_rejects_batches_without_labels():
    model = make("segformer")
    args = transformers.TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    trainer = RRTrainer(model=model, args=args, rr=region_rebalance_for(model, COUNTS))
    with pytest.raises(RRSegError, match="pixel_values' and 'labels'"):
        trainer.compute_loss(model, {"pixel_values": batch()[0]})
    with pytest.raises(TypeError, match="RegionRebalance"):
        RRTrainer(model=model, args=args, rr=None)


def test_rr_trainer_refuses_setups_where_rr_would_not_be_synchronised(monkeypatch):
    model = make("segformer")
    args = transformers.TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    monkeypatch.setattr(transformers.TrainingArguments, "n_gpu", property(lambda self: 2))
    with pytest.raises(RRSegError, match="DataParallel"):
        RRTrainer(model=model, args=args, rr=region_rebalance_for(model, COUNTS))
    monkeypatch.setattr(transformers.TrainingArguments, "n_gpu", property(lambda self: 1))
    monkeypatch.setattr(transformers.TrainingArguments, "world_size", property(lambda self: 2))
    with pytest.raises(RRSegError, match="trainable RR branch"):
        RRTrainer(model=model, args=args, rr=region_rebalance_for(model, COUNTS, trainable=True))
    RRTrainer(model=model, args=args, rr=region_rebalance_for(model, COUNTS))  # frozen: fine
