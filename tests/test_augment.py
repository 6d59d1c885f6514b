"""The embedded benchmark's training augmentation: the masks the metrics apply, and the evidence
(mean mask over an object's box) that the training targets follow (issue 11)."""
from __future__ import annotations

import pytest
import torch

from cam_core.benchmarks import augment


def test_box_evidence_hand_worked():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0  # left half kept
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 8.0],  # inside the kept half
                           [2.0, 0.0, 6.0, 8.0],  # half in, half out
                           [4.0, 2.0, 8.0, 6.0],  # removed
                           [0.0, 0.0, 0.0, 0.0]]])  # empty slot
    assert augment.box_evidence(mask, boxes).tolist() == [[1.0, 0.5, 0.0, 1.0]]


def test_constant_mask_evidence_is_its_level():
    g = torch.Generator().manual_seed(0)
    m = augment.constant_masks(5, 16, g)
    boxes = torch.tensor([[1.0, 2.0, 9.0, 7.0]]).expand(5, 1, 4)
    level = m[:, 0, 0, 0]
    assert torch.allclose(augment.box_evidence(m, boxes)[:, 0], level)
    assert (m == level[:, None, None, None]).all()


@pytest.mark.parametrize("make", [augment.smooth_masks, augment.constant_masks, augment.rectangle_masks,
                                  augment.pixel_masks, augment.random_masks])
def test_masks_are_in_range_and_seeded(make):
    a = make(32, 16, torch.Generator().manual_seed(1))
    b = make(32, 16, torch.Generator().manual_seed(1))
    assert a.shape == (32, 1, 16, 16) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_rectangle_masks_keep_or_remove_one_rectangle():
    m = augment.rectangle_masks(64, 16, torch.Generator().manual_seed(2))
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    kept = m.mean(dim=(1, 2, 3))
    assert (kept < 0.5).any() and (kept > 0.5).any()  # both kinds occur


def test_random_masks_draw_every_kind():
    m = augment.random_masks(256, 16, torch.Generator().manual_seed(3))
    flat = m.flatten(1)
    constant = (flat == flat[:, :1]).all(1)
    binary = ((flat == 0) | (flat == 1)).all(1) & ~constant
    assert 20 < int(constant.sum()) < 110 and int(binary.sum()) > 40


def test_augment_without_masks_keeps_all_evidence():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 3, 16, 16, generator=g)
    boxes = torch.tensor([[2.0, 2.0, 10.0, 10.0]]).expand(6, 1, 4)
    out, evidence = augment.augment(x, g, mask_share=0.0, boxes=boxes)
    assert out.shape == x.shape and torch.equal(evidence, torch.ones(6, 1))
    out2, evidence2 = augment.augment(x, torch.Generator().manual_seed(5), mask_share=1.0, boxes=boxes)
    assert (evidence2 < 1).any() and evidence2.min() >= 0


def test_evidence_targets_single_label():
    labels = torch.tensor([2, 0])
    evidence = torch.tensor([[1.0], [0.25]])
    t = augment.evidence_targets(labels, labels[:, None], evidence, 4, multilabel=False)
    assert torch.allclose(t, torch.tensor([[0.0, 0.0, 1.0, 0.0],
                                           [0.25 + 0.75 / 4, 0.75 / 4, 0.75 / 4, 0.75 / 4]]))
    assert torch.allclose(t.sum(1), torch.ones(2))


def test_evidence_targets_multi_label_take_the_best_object_of_a_class():
    box_labels = torch.tensor([[1, 3, 1, -1]])
    evidence = torch.tensor([[0.2, 0.6, 0.9, 1.0]])
    labels = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    t = augment.evidence_targets(labels, box_labels, evidence, 4, multilabel=True)
    assert torch.allclose(t, torch.tensor([[0.0, 0.9, 0.0, 0.6]]))


def test_object_masks_keep_or_remove_an_objects_box():
    boxes = torch.tensor([[[4.0, 4.0, 8.0, 8.0], [0.0, 0.0, 0.0, 0.0]]]).expand(64, 2, 4).contiguous()
    m = augment.object_masks(boxes, 16, torch.Generator().manual_seed(6), margin=0.0)
    evidence = augment.box_evidence(m, boxes[:, :1])[:, 0]
    assert set(evidence.tolist()) == {0.0, 1.0}  # the object's box kept whole, or removed whole
    kept = evidence == 1
    assert torch.allclose(m[kept].sum(dim=(1, 2, 3)), torch.full((int(kept.sum()),), 16.0))
    none = augment.object_masks(torch.zeros(4, 2, 4), 16, torch.Generator().manual_seed(6))
    assert set(none.unique().tolist()) <= {0.0, 1.0}  # no object: a random rectangle
