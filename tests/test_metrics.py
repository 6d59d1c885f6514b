"""Metrics: hand-worked values on models with closed-form scores, the formulas, and pytorch-grad-cam."""
from __future__ import annotations

import math

import pytest
import torch
from closed_form import MeanLinear
from torch import nn

from cam_core import metrics as M


class BoundBias(nn.Module):
    """A conditioned model: image b of a tiled batch gets the context (logit bias) of image b % N."""

    def __init__(self, context: torch.Tensor):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(4, 5))
        self.context = context  # (N, 5)

    def forward(self, x):
        n = self.context.shape[0]
        assert x.shape[0] % n == 0, "tile layout violated"
        return self.net(x) + self.context.repeat(x.shape[0] // n, 1)


def sig(t):
    return 1 / (1 + math.exp(-t))


# ---- IC / AD / ADD --------------------------------------------------------------------------
def test_confidence_scores_closed_form():
    x = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    s = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(1))
    t = torch.zeros(3, dtype=torch.long)
    sc = M.confidence_scores(MeanLinear(3.0), x, s, t)
    for i in range(3):
        y = sig(3 * x[i].mean().item())
        o = sig(3 * (s[i] * x[i]).mean().item())
        d = sig(3 * ((1 - s[i]) * x[i]).mean().item())
        assert sc.original[i].item() == pytest.approx(y, abs=1e-6)
        assert sc.explanation[i].item() == pytest.approx(o, abs=1e-6)
        assert sc.inverted[i].item() == pytest.approx(d, abs=1e-6)
        ic = M.increase_in_confidence(sc.original, sc.explanation)[i].item()
        ad = M.average_drop(sc.original, sc.explanation)[i].item()
        add = M.average_drop_in_deletion(sc.original, sc.inverted)[i].item()
        assert ic == float(y < o)
        assert ad == pytest.approx(max(0, y - o) / y, abs=1e-6)
        assert add == pytest.approx((y - d) / y, abs=1e-6)


def test_eq_11_to_13_by_hand():
    y = torch.tensor([0.5, 0.8, 0.2])
    o = torch.tensor([0.6, 0.4, 0.2])
    d = torch.tensor([0.25, 0.9, 0.1])
    assert M.increase_in_confidence(y, o).tolist() == [1.0, 0.0, 0.0]
    assert M.average_drop(y, o).tolist() == pytest.approx([0.0, 0.5, 0.0])
    assert M.average_drop_in_deletion(y, d).tolist() == pytest.approx([0.5, -0.125, 0.5])


def test_masking_in_pixel_space_makes_zero_black():
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.5])
    pixels = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = (pixels - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    m = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    got = M.mask_image(x, m, mean, std)
    want = (pixels * m[:, None] - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    torch.testing.assert_close(got, want)
    # without mean/std the product is taken on the tensor as given (pytorch-grad-cam's convention)
    torch.testing.assert_close(M.mask_image(x, m), x * m[:, None])
    with pytest.raises(ValueError, match="both mean and std"):
        M.mask_image(x, m, mean, None)


def test_ic_ad_match_pytorch_grad_cam():
    """pytorch-grad-cam returns O - Y (no division by Y) and multiplies the tensor as given; on an
    un-normalised input (mean=std=None) its IC indicator equals ours and its DropInConfidence is AD * Y."""
    from pytorch_grad_cam.metrics.cam_mult_image import (
        CamMultImageConfidenceChange,
        DropInConfidence,
        IncreaseInConfidence,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 4)).eval()
    x = torch.rand(5, 3, 12, 12)
    s = torch.rand(5, 12, 12)
    t = torch.tensor([0, 1, 2, 3, 1])
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in t]
    theirs = CamMultImageConfidenceChange()(x, s.numpy(), targets, model)
    sc = M.confidence_scores(model, x, s, t)
    torch.testing.assert_close(torch.from_numpy(theirs).reshape(-1), sc.explanation - sc.original,
                               atol=1e-6, rtol=0)
    ic = torch.from_numpy(IncreaseInConfidence()(x, s.numpy(), targets, model)).reshape(-1)
    assert ic.tolist() == M.increase_in_confidence(sc.original, sc.explanation).tolist()
    drop = DropInConfidence()(x, s.numpy(), targets, model)
    torch.testing.assert_close(torch.from_numpy(drop).reshape(-1),
                               M.average_drop(sc.original, sc.explanation) * sc.original, atol=1e-6, rtol=0)


# ---- insertion / deletion -------------------------------------------------------------------
def test_step_counts_and_tie_break():
    assert M.step_counts(16, 40)[0] == 0 and M.step_counts(16, 40)[-1] == 16
    assert M.step_counts(16, 40)[20] == 8 and M.step_counts(100, 40)[1] == 3  # 2.5 rounds up
    assert M.step_counts(16, 4) == [0, 4, 8, 12, 16]
    ranks = M.pixel_ranks(torch.zeros(2, 3, 3), seed=None)
    assert ranks.tolist() == [list(range(9))] * 2  # seed=None: ties in raster order
    s = torch.tensor([[[0.1, 0.9], [0.9, 0.5]]])
    assert M.pixel_ranks(s, seed=None).tolist() == [[3, 0, 1, 2]]
    assert sorted(M.pixel_ranks(s).tolist()[0][1:3]) == [0, 1]  # the tie at 0.9 keeps the top two ranks
    assert M.pixel_ranks(s).tolist()[0][0::3] == [3, 2]


class HalfMean(nn.Module):
    """logits = [a * mean(x over the top (or bottom) half of the rows), 0]."""

    def __init__(self, top: bool, a: float = 6.0):
        super().__init__()
        self.top, self.a = top, a

    def forward(self, x):
        h = x.shape[-2] // 2
        m = (x[..., :h, :] if self.top else x[..., h:, :]).mean(dim=(1, 2, 3))
        return torch.stack([self.a * m, torch.zeros_like(m)], dim=1)


def test_ties_are_broken_at_random_not_in_raster_order():
    """A constant map explains nothing: its insertion AUC must not depend on where in the image the model
    looks. Raster order inserts the top rows first and favours a model that reads the top half."""
    x = torch.ones(1, 1, 16, 16)
    flat = torch.zeros(1, 16, 16)
    t = torch.zeros(1, dtype=torch.long)
    auc = {(top, seed): M.insertion_auc(HalfMean(top), x, flat, t, tie_seed=seed).item()
           for top in (True, False) for seed in (None, 0, 1, 2)}
    assert auc[(True, None)] - auc[(False, None)] > 0.1  # the raster-order bias
    for seed in (0, 1, 2):
        assert abs(auc[(True, seed)] - auc[(False, seed)]) < 0.03
    ranks = M.pixel_ranks(flat).view(16, 16).float()
    assert abs(ranks[:8].mean() - ranks[8:].mean()) < 15  # raster: 128 apart
    # deterministic under the seed, on any batching; another seed gives another order
    s = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)).round(decimals=1)  # many ties
    assert torch.equal(M.pixel_ranks(s, seed=5), M.pixel_ranks(s, seed=5))
    assert torch.equal(M.pixel_ranks(s, seed=5)[1:2], M.pixel_ranks(s[1:2], seed=5))
    assert not torch.equal(M.pixel_ranks(s, seed=5), M.pixel_ranks(s, seed=6))
    # the seed reorders ties only: a more salient pixel always ranks first
    r = M.pixel_ranks(s, seed=5)
    flat_s = s.flatten(1)
    more = flat_s[:, :, None] > flat_s[:, None, :]
    assert bool((r[:, :, None] < r[:, None, :])[more].all())
    xs = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t3 = torch.zeros(3, dtype=torch.long)
    a = M.insertion_deletion(HalfMean(True), xs, s, t3, tie_seed=5)
    b = M.insertion_deletion(HalfMean(True), xs, s, t3, tie_seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_insertion_deletion_closed_form():
    """On x = 1 with MeanLinear, keeping k of P pixels scores sigmoid(a k / P), whatever the ranking."""
    a, p, steps = 2.0, 16, 40
    x = torch.ones(2, 1, 4, 4)
    s = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.zeros(2, dtype=torch.long)
    out = M.insertion_deletion(MeanLinear(a), x, s, t, steps=steps, return_curves=True)
    ks = M.step_counts(p, steps)
    ins = [sig(a * k / p) for k in ks]
    dele = [sig(a * (p - k) / p) for k in ks]
    trap = lambda ys: sum((ys[i] + ys[i + 1]) / 2 for i in range(steps)) / steps
    for i in range(2):
        assert out["insertion_curve"][i].tolist() == pytest.approx(ins, abs=1e-6)
        assert out["insertion"][i].item() == pytest.approx(trap(ins), abs=1e-6)
        assert out["deletion"][i].item() == pytest.approx(trap(dele), abs=1e-6)


def test_insertion_rewards_the_right_ranking():
    """Scores increase with mean(x): ranking bright pixels first maximises insertion, minimises deletion."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 8, 8, generator=g)
    t = torch.zeros(3, dtype=torch.long)
    good = M.insertion_deletion(MeanLinear(4.0), x, x[:, 0], t)
    bad = M.insertion_deletion(MeanLinear(4.0), x, 1 - x[:, 0], t)
    assert bool((good["insertion"] > bad["insertion"]).all())
    assert bool((good["deletion"] < bad["deletion"]).all())


def test_tiled_batches_match_per_image_with_bound_context():
    """Chunking and the tile layout (row b = image b % N) must not mix images up: batch == loop."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    ctx = torch.randn(4, 5, generator=g) * 3
    model = BoundBias(ctx).eval()
    x = torch.rand(4, 3, 8, 8, generator=g)
    s = torch.rand(4, 8, 8, generator=g)
    t = torch.tensor([0, 4, 2, 1])
    for bs in (1, 12, 1000):
        batched = M.insertion_deletion(model, x, s, t, steps=8, baseline="blur", batch_size=bs)
        conf = M.confidence_scores(model, x, s, t, batch_size=bs)
        for i in range(4):
            one = BoundBias(ctx[i : i + 1])
            one.net = model.net
            single = M.insertion_deletion(one, x[i : i + 1], s[i : i + 1], t[i : i + 1], steps=8,
                                          baseline="blur")
            assert batched["insertion"][i].item() == pytest.approx(single["insertion"].item(), abs=1e-6)
            assert batched["deletion"][i].item() == pytest.approx(single["deletion"].item(), abs=1e-6)
            c1 = M.confidence_scores(one, x[i : i + 1], s[i : i + 1], t[i : i + 1])
            assert conf.explanation[i].item() == pytest.approx(c1.explanation.item(), abs=1e-6)


def test_baselines():
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    x = torch.randn(2, 1, 9, 9)
    torch.testing.assert_close(M.baseline_image(x, "zero", mean, std), torch.full_like(x, -2.0))
    torch.testing.assert_close(M.baseline_image(x, "mean", mean, std),  # each image's channel mean (issue 20)
                               x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    const = torch.full((1, 3, 9, 9), 0.7)
    torch.testing.assert_close(M.baseline_image(const, "blur"), const)  # blur keeps a constant image
    blurred = M.baseline_image(x, "blur", blur_sigma=2.0)
    assert blurred.std() < x.std()
    with pytest.raises(ValueError, match="baseline must be one of"):
        M.baseline_image(x, "noise")
    with pytest.raises(ValueError, match="saliency must be"):
        M.insertion_deletion(MeanLinear(), x, torch.rand(2, 4, 4), torch.zeros(2, dtype=torch.long))


# ---- localization ---------------------------------------------------------------------------
def test_boxes_mask_exclusive_and_union():
    m = M.boxes_mask(torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 4.0, 3.0]]), (5, 6))
    want = torch.zeros(5, 6, dtype=torch.bool)
    want[2:4, 1:3] = True
    want[2:3, 2:4] = True
    assert torch.equal(m, want)
    assert not M.boxes_mask(torch.zeros(0, 4), (3, 3)).any()


def test_energy_pointing_game_by_hand():
    s = torch.zeros(3, 4, 4)
    s[0] = 1.0  # uniform: share = box area / image area
    s[1, 0, 0], s[1, 3, 3] = 3.0, 1.0  # 3/4 inside
    boxes = [torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.zeros(0, 4)]
    e = M.energy_pointing_game(s, M.batch_masks(boxes, (4, 4)))
    assert e[0].item() == pytest.approx(0.25) and e[1].item() == pytest.approx(0.75)
    assert math.isnan(e[2].item())  # no box of the target class
    z = M.energy_pointing_game(torch.zeros(1, 4, 4), M.batch_masks(boxes[:1], (4, 4)))
    assert z.item() == 0.0  # an empty map gets no credit, no NaN


def test_energy_matches_quantus_relevance_mass_accuracy():
    quantus = pytest.importorskip("quantus", reason="Quantus not installed (optional oracle)")
    g = torch.Generator().manual_seed(0)
    s = torch.rand(4, 1, 10, 10, generator=g)
    masks = torch.zeros(4, 1, 10, 10, dtype=torch.bool)
    masks[:, :, 2:6, 3:8] = True
    ours = M.energy_pointing_game(s[:, 0], masks[:, 0])
    metric = quantus.RelevanceMassAccuracy(disable_warnings=True, abs=False, normalise=False)
    x = torch.rand(4, 1, 10, 10, generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(100, 3))
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=torch.zeros(4, dtype=torch.long).numpy(),
                    a_batch=s.numpy(), s_batch=masks.float().numpy(), device="cpu")
    assert ours.tolist() == pytest.approx(list(theirs), abs=1e-5)


def test_box_masks_one_per_box_and_their_union():
    """A pixel is in a box when its centre is: [1, 3) x [0, 2) covers columns 1-2 of rows 0-1."""
    boxes = torch.tensor([[[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]]])  # (1, 2, 4): a box, an empty slot
    m = M.box_masks(boxes, (4, 4))
    assert m.shape == (1, 2, 4, 4) and not m[0, 1].any()
    assert m[0, 0].nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    rows, cols = M.box_spans(boxes, (4, 4))
    assert rows[0, 0].tolist() == [True, True, False, False]
    assert cols[0, 0].tolist() == [False, True, True, False]
    assert torch.equal(M.boxes_mask(boxes[0], (4, 4)), m[0].any(0))


def test_pointing_game_tolerance():
    s = torch.zeros(2, 10, 10)
    s[:, 5, 5] = 1.0  # centre (5.5, 5.5); nearest corner of the box (4, 4) is 2.12 px away
    boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([[5.0, 5.0, 6.0, 6.0]])]
    assert M.pointing_game(s, boxes, tolerance=3.0).tolist() == [1.0, 1.0]
    assert M.pointing_game(s, boxes, tolerance=2.0).tolist() == [0.0, 1.0]
    assert M.default_tolerance(224) == 15.0 and M.default_tolerance(64) == pytest.approx(15 * 64 / 224)
    assert math.isnan(M.pointing_game(s[:1], [torch.zeros(0, 4)]).item())


def test_pointing_game_breaks_ties_in_the_seeded_order_not_at_the_top_left():
    """A constant map's maximum is every pixel: raster order points it at the top-left corner (a box
    there always "hits"); the seeded order points it where insertion/deletion's tie order starts."""
    flat = torch.full((3, 8, 8), 0.5)
    corner = [torch.tensor([[0.0, 0.0, 2.0, 2.0]])] * 3
    assert M.pointing_game(flat, corner, tolerance=0.0, tie_seed=None).tolist() == [1.0] * 3
    first = int(M.tie_order(64, 0)[0])
    cell = torch.tensor([[first % 8, first // 8, first % 8 + 1, first // 8 + 1]], dtype=torch.float32)
    assert M.pointing_game(flat, [cell] * 3, tolerance=0.0).tolist() == [1.0] * 3  # same point every image
    s = torch.zeros(1, 8, 8)
    s[0, 6, 1] = 1.0  # a unique maximum does not depend on the tie order
    box = [torch.tensor([[1.0, 6.0, 2.0, 7.0]])]
    seeded = M.pointing_game(s, box, tolerance=0.0, tie_seed=3).item()
    assert seeded == M.pointing_game(s, box, tolerance=0.0, tie_seed=None).item() == 1.0


# ---- similarity -----------------------------------------------------------------------------
def test_cosine_similarity():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    torch.testing.assert_close(M.cosine_similarity(a, b), torch.nn.functional.cosine_similarity(a, b, dim=1))
    assert M.cosine_similarity(a, 3 * a).tolist() == pytest.approx([1.0] * 5)
    assert M.cosine_similarity(torch.zeros(1, 7), a[:1]).item() == 0.0


def test_local_accuracy_error_on_a_linear_head():
    """Head = GAP + linear: F^c(A) - F^c(0) = sum_k w_ck mean(A_k), so CAM's alpha_k = w_ck mean(A_k)
    has zero error, and Grad-CAM's alpha_k = w_ck / (h w) ... has the error worked out by hand."""
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    a = torch.rand(4, 6, 3, 3)
    t = torch.tensor([0, 1, 2, 1])
    w = head[2].weight[t].detach()  # (N, K)
    exact = w * a.mean(dim=(2, 3))
    assert M.local_accuracy_error(exact, head, a, t).max().item() < 1e-5
    grad_alpha = w / 9.0  # mean over 3x3 of dF/dA = w / 9
    want = (grad_alpha.sum(1) - exact.sum(1)).abs()
    torch.testing.assert_close(M.local_accuracy_error(grad_alpha, head, a, t), want)
