"""RR for HF's Mask2FormerForUniversalSegmentation (small Swin config, no hub): the semantic labels become its mask
and class labels, its own set criterion is the model's loss, RR pools pixel_decoder_last_hidden_state; in a custom
loop and with the HF Trainer."""

from __future__ import annotations

import pytest
import torch
import transformers

from rrseg.integrations.transformers import (
    RR_STATE_NAME,
    RRTrainer,
    compute_loss,
    ignore_index_of,
    is_mask_classifier,
    region_rebalance_for,
)
from rrseg.models.mask2former import semantic_inference
from rrseg.rebalance import RegionRebalance

C = 5
COUNTS = [60, 20, 8, 3, 1]
SIZE = 32


def mask2former(**kw) -> transformers.Mask2FormerForUniversalSegmentation:
    torch.manual_seed(0)
    backbone = transformers.SwinConfig(image_size=SIZE, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                                       window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.Mask2FormerConfig(
        backbone_config=backbone, num_labels=C, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=32, encoder_layers=1, decoder_layers=3, num_attention_heads=2, dim_feedforward=32,
        num_queries=6, train_num_points=64, **kw,
    )
    return transformers.Mask2FormerForUniversalSegmentation(config)


def batch(b: int = 2, seed: int = 0, ignore: int = 255):
    gen = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(b, 3, SIZE, SIZE, generator=gen)
    labels = torch.randint(0, C, (b, SIZE // 8, SIZE // 8), generator=gen).repeat_interleave(8, 1)
    labels = labels.repeat_interleave(8, 2)
    labels[:, :, : SIZE // 4] = ignore
    return pixel_values, labels


def hf_labels(labels: torch.Tensor, ignore: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """HF's documented training inputs, written here: per image the classes present (ascending) and a float mask
    each, the ignored value in none."""
    masks, classes = [], []
    for label in labels:
        present = sorted(set(label.flatten().tolist()) - {ignore})
        classes.append(torch.tensor(present, dtype=torch.long))
        masks.append(torch.stack([(label == c).float() for c in present]))
    return masks, classes


def test_the_models_own_loss_plus_rr_on_the_mask_features():
    model = mask2former().train()
    assert is_mask_classifier(model)
    rr = region_rebalance_for(model, COUNTS, dropout=0.0)
    assert (rr.reduce[0].in_channels, rr.num_classes, rr.ignore_index) == (32, C, 255)

    pixel_values, labels = batch()
    torch.manual_seed(1)  # the matcher's and the point sampling's random points: the same in both passes
    out = compute_loss(model, rr, pixel_values, labels)
    masks, classes = hf_labels(labels, 255)
    torch.manual_seed(1)
    plain = model(pixel_values=pixel_values, mask_labels=masks, class_labels=classes)
    torch.testing.assert_close(out.losses["loss_seg"], plain.loss)
    torch.testing.assert_close(out.features, plain.pixel_decoder_last_hidden_state)
    assert out.features.shape == (2, 32, SIZE // 4, SIZE // 4)
    torch.testing.assert_close(out.logits, semantic_inference(plain.class_queries_logits, plain.masks_queries_logits))
    assert out.logits.shape == (2, C, SIZE // 4, SIZE // 4)

    reference = RegionRebalance(32, C, COUNTS, dropout=0.0)
    reference.load_state_dict(rr.state_dict())
    torch.testing.assert_close(out.losses["loss_rr"], reference.train()(out.features.detach(), labels))
    torch.testing.assert_close(out.loss, plain.loss + out.losses["loss_rr"])
    out.loss.backward()
    assert model.model.pixel_level_module.decoder.mask_projection.weight.grad is not None


def test_eval_mode_and_the_ignore_value():
    model = mask2former(ignore_value=4).eval()
    assert ignore_index_of(model.config) == 4
    rr = region_rebalance_for(model, COUNTS)
    assert rr.ignore_index == 4
    pixel_values, labels = batch(ignore=4)
    masks, classes = hf_labels(labels, 4)
    assert all(4 not in c.tolist() for c in classes)
    with torch.no_grad():
        torch.manual_seed(2)
        out = compute_loss(model, rr, pixel_values, labels)
        torch.manual_seed(2)
        plain = model(pixel_values=pixel_values, mask_labels=masks, class_labels=classes)
    assert out.losses["loss_rr"].item() == 0.0
    torch.testing.assert_close(out.loss, plain.loss, rtol=0, atol=0)


class _Segments(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        pixel_values, labels = batch(1, seed=i)
        return {"pixel_values": pixel_values[0], "labels": labels[0]}


@pytest.mark.slow  # trains 2 steps with the HF Trainer
def test_hf_trainer_with_mask2former(tmp_path):
    model = mask2former()
    rr = region_rebalance_for(model, COUNTS)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=2, per_device_train_batch_size=2,
        logging_steps=1, save_steps=2, learning_rate=1e-3, remove_unused_columns=False, disable_tqdm=True, seed=0,
    )
    before = model.model.pixel_level_module.decoder.mask_projection.weight.detach().clone()
    trainer = RRTrainer(model=model, args=args, train_dataset=_Segments(), rr=rr)
    trainer.train()
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(train_logs) == 2 and all(log["loss_rr"] > 0 for log in train_logs)
    assert not torch.equal(before, model.model.pixel_level_module.decoder.mask_projection.weight)
    assert (tmp_path / "checkpoint-2" / RR_STATE_NAME).is_file()
    reloaded = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "checkpoint-2")
    pixel_values, _ = batch()
    with torch.no_grad():
        a, b = reloaded.eval()(pixel_values=pixel_values), model.eval()(pixel_values=pixel_values)
    torch.testing.assert_close(a.class_queries_logits, b.class_queries_logits)
