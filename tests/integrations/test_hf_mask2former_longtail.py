"""The long-tail switches for HF's Mask2FormerForUniversalSegmentation: rrseg's set criterion at the model's config
weights is the model's own loss; with the rebalanced query classifier or LTSS's frequency matcher it replaces it,
RR on the mask features added as before (custom loop and HF Trainer); RR's consistency term refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from rrseg.errors import RRSegError
from rrseg.integrations.transformers import RRTrainer, compute_loss, mask2former_criterion_for, region_rebalance_for
from rrseg.rebalance import ClassCounts
from rrseg.rebalance.mask2former import FrequencyMatcher

from .test_hf_mask2former import COUNTS, _Segments, batch, hf_labels, mask2former

C = len(COUNTS)
WITH_IMAGES = ClassCounts(np.array(COUNTS), None, 60)  # the frequency matcher's f_c = image count / 60 images


def test_rrsegs_criterion_at_the_config_weights_is_the_models_own_loss():
    model = mask2former().train()
    rr = region_rebalance_for(model, COUNTS, dropout=0.0)
    criterion = mask2former_criterion_for(model)
    assert criterion.weights == {"loss_cls": 2.0, "loss_mask": 5.0, "loss_dice": 5.0} and criterion.deep_supervision
    assert criterion.query_log_prior is None and not isinstance(criterion.criterion.matcher, FrequencyMatcher)
    pixel_values, labels = batch()
    torch.manual_seed(1)
    out = compute_loss(model, rr, pixel_values, labels, criterion=criterion)
    masks, classes = hf_labels(labels, 255)
    torch.manual_seed(1)
    plain = model(pixel_values=pixel_values, mask_labels=masks, class_labels=classes)
    torch.testing.assert_close(out.losses["loss_seg"], plain.loss)
    torch.testing.assert_close(out.losses["loss_seg"], out.losses["loss_cls"] + out.losses["loss_mask"]
                               + out.losses["loss_dice"])
    torch.testing.assert_close(out.loss, plain.loss + out.losses["loss_rr"])


@pytest.mark.parametrize("switch", [{"query_prior": "region"}, {"matcher": "frequency", "matcher_t": 0.1},
                                    {"query_prior": "region", "matcher": "frequency", "matcher_t": 0.1}])
def test_each_switch_with_rr(switch):
    model = mask2former().train()
    rr = region_rebalance_for(model, COUNTS, dropout=0.0)
    criterion = mask2former_criterion_for(model, WITH_IMAGES, **switch)
    assert (criterion.query_log_prior is not None) == ("query_prior" in switch)
    if "matcher" in switch:
        assert isinstance(criterion.criterion.matcher, FrequencyMatcher)
        assert criterion.criterion.matcher.queries_per_class == [1, 2, 2, 3, 5]  # ceil(2 sqrt(0.1 x 60 / n))
    pixel_values, labels = batch()
    torch.manual_seed(1)
    out = compute_loss(model, rr, pixel_values, labels, criterion=criterion)
    torch.manual_seed(1)
    plain = compute_loss(model, rr, pixel_values, labels, criterion=mask2former_criterion_for(model))
    changed = "loss_mask" if "matcher" in switch else "loss_cls"
    assert out.losses[changed].item() != pytest.approx(plain.losses[changed].item(), rel=1e-4)
    if "matcher" not in switch:  # the same matching: the mask losses are the plain run's
        torch.testing.assert_close(out.losses["loss_mask"], plain.losses["loss_mask"])
    torch.testing.assert_close(out.losses["loss_rr"], plain.losses["loss_rr"])
    torch.testing.assert_close(out.loss, out.losses["loss_seg"] + out.losses["loss_rr"])
    out.loss.backward()
    assert model.class_predictor.weight.grad is not None


def test_bad_uses_are_one_line_errors():
    model = mask2former()
    with pytest.raises(RRSegError, match=r"^unknown Mask2Former criterion option 'class_weight'; options: "
                                         r"query_prior, matcher, matcher_t, matcher_s, loss_weight \(the others come "
                                         r"from the model's config\)$"):
        mask2former_criterion_for(model, class_weight=1.0)
    with pytest.raises(RRSegError, match=r"^option 'query_prior': 'regions' is not one of none, region, "
                                         r"region_matched; did you mean 'region'\?$"):
        mask2former_criterion_for(model, COUNTS, query_prior="regions")
    with pytest.raises(RRSegError, match=r"^loss.pixel.matcher frequency needs the number of training images"):
        mask2former_criterion_for(model, COUNTS, matcher="frequency")
    with pytest.raises(RRSegError, match=r"^loss.region.consistency_weight: the consistency term needs per-pixel "
                                         r"class logits"):
        region_rebalance_for(model, COUNTS, smooth=1.0, consistency_weight=0.5)
    upernet = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(
        backbone_config=transformers.ConvNextConfig(out_features=["stage1", "stage2", "stage3", "stage4"],
                                                    hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1]),
        hidden_size=8, auxiliary_channels=8, num_labels=C))
    with pytest.raises(RRSegError, match=r"^mask2former_criterion_for needs a Mask2FormerForUniversalSegmentation, "
                                         r"got UperNetForSemanticSegmentation$"):
        mask2former_criterion_for(upernet)
    rr = region_rebalance_for(upernet, COUNTS)
    with pytest.raises(RRSegError, match=r"^criterion= is rrseg's Mask2Former set criterion"):
        compute_loss(upernet, rr, torch.randn(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long),
                     criterion=mask2former_criterion_for(model))


def test_hf_trainer_with_the_switches(tmp_path):  # 2 steps of the HF Trainer (about a second)
    model = mask2former()
    rr = region_rebalance_for(model, COUNTS)
    criterion = mask2former_criterion_for(model, WITH_IMAGES, query_prior="region", matcher="frequency",
                                          matcher_t=0.1)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=2, per_device_train_batch_size=2,
        logging_steps=1, save_steps=2, learning_rate=1e-3, remove_unused_columns=False, disable_tqdm=True, seed=0,
    )
    before = model.class_predictor.weight.detach().clone()
    trainer = RRTrainer(model=model, args=args, train_dataset=_Segments(), rr=rr, criterion=criterion)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 2 and all(np.isfinite(log["loss"]) and log["loss_rr"] > 0 for log in logs)
    assert not torch.equal(before, model.class_predictor.weight)
