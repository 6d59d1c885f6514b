"""The embedded benchmark's generator: determinism, boxes vs masks, labels vs boxes, decoys,
normalised input, no import circle, clear errors."""
from __future__ import annotations

import math

import pytest
import torch

import cam_core as cc
from cam_core.benchmarks import generator, shapes, store, synthetic

N_CLASSES = len(shapes.CLASS_NAMES)


@pytest.fixture(scope="module")
def data() -> dict[str, generator.ShapesData]:
    """One chunk of each variant's test split (no cache)."""
    return {v: generator.generate(v, generator.CHUNK, seed=0, split="test") for v in generator.VARIANTS}


# ---- the rasteriser ---------------------------------------------------------------------------------
def _pose(n: int, size: float = 10.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.full((n, 2), 32.0), torch.full((n,), size), torch.zeros(n)


def test_circle_area_matches_the_formula():
    centre, size, rot = _pose(1, 10.0)
    mask = shapes.shape_mask(torch.tensor([shapes.CLASS_NAMES.index("circle")]), centre, size, rot, 64, 64)
    expected = math.pi * (0.85 * 10.0) ** 2  # the circle's radius is 0.85 of the object size
    assert abs(int(mask.sum()) - expected) < 0.05 * expected


def test_square_is_symmetric_under_quarter_turns():
    cls = torch.tensor([shapes.CLASS_NAMES.index("square")] * 2)
    centre, size, _ = _pose(2)
    masks = shapes.shape_mask(cls, centre, size, torch.tensor([0.0, math.pi / 2]), 64, 64)
    assert torch.equal(masks[0], masks[1])


def test_classes_are_different_shapes():
    """At the same pose every pair of classes differs in a good part of their pixels (IoU < 0.85)."""
    cls = torch.arange(N_CLASSES)
    centre, size, rot = _pose(N_CLASSES, 14.0)
    m = shapes.shape_mask(cls, centre, size, rot, 64, 64).flatten(1).float()  # (C, H*W)
    inter = m @ m.T
    iou = inter / (m.sum(1)[:, None] + m.sum(1)[None] - inter)
    off = iou[~torch.eye(N_CLASSES, dtype=torch.bool)]
    assert float(off.max()) < 0.85
    assert bool((m.sum(1) > 50).all())  # every class draws a sizeable object


def test_decoys_are_no_class():
    """A decoy differs from every class at every rotation (IoU < 0.9), yet resembles one (IoU > 0.6)."""
    centre, size = torch.full((1, 2), 64.0), torch.full((1,), 28.0)
    turns = torch.linspace(0, 2 * math.pi, 73)[:-1]
    for d in range(len(shapes.DECOY_NAMES)):
        decoy = shapes.shape_mask(torch.tensor([d]), centre, size, torch.zeros(1), 128, 128,
                                  shapes.DECOY_NAMES)[0].float()
        best = 0.0
        for c in range(N_CLASSES):
            cls = torch.full((len(turns),), c)
            m = shapes.shape_mask(cls, centre.expand(len(turns), 2), size.expand(len(turns)), turns, 128,
                                  128).flatten(1).float()
            inter = m @ decoy.flatten()
            best = max(best, float((inter / (m.sum(1) + decoy.sum() - inter)).max()))
        assert 0.6 < best < 0.9, (shapes.DECOY_NAMES[d], best)


def test_images_hold_their_decoys():
    """shapes-single draws 1-2 decoys per image: the same chunk drawn without decoys (the random
    stream is the same) differs in a decoy-sized region outside the object's box, and nowhere else."""
    sp = generator.VARIANTS["shapes-single"]
    bare = generator.VariantSpec(**{**sp.__dict__, "decoys": (0, 0)})
    n = 16
    with_decoys = generator._generate_chunk(sp, n, torch.Generator().manual_seed(5))
    without = generator._generate_chunk(bare, n, torch.Generator().manual_seed(5))
    assert torch.equal(with_decoys.boxes, without.boxes) and torch.equal(with_decoys.labels, without.labels)
    diff = (with_decoys.x != without.x).any(dim=1)  # (n, 64, 64)
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    for i in range(n):
        x0, y0, x1, y1 = with_decoys.boxes[i, 0].long().tolist()
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        assert int(diff[i].sum()) > 100  # at least one decoy of radius >= 10 px
        assert not bool((diff[i] & inside).any())  # never over the labelled object


def test_mask_box_hand_worked():
    mask = torch.zeros(2, 8, 10, dtype=torch.bool)
    mask[0, 2:5, 3:7] = True  # rows 2..4, columns 3..6
    box = shapes.mask_box(mask)
    assert box[0].tolist() == [3.0, 2.0, 7.0, 5.0]
    assert box[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # empty mask


def test_box_is_tight_around_the_drawn_mask():
    g = torch.Generator().manual_seed(3)
    n = 24
    canvas = shapes.random_background(n, 64, 64, generator=g)
    cls = torch.randint(N_CLASSES, (n,), generator=g)
    centre = 16 + 32 * torch.rand(n, 2, generator=g)
    size = 6 + 8 * torch.rand(n, generator=g)
    rot = 2 * math.pi * torch.rand(n, generator=g)
    image, mask, box = shapes.draw_shape(canvas, cls, centre, size, rot, generator=g)
    assert image.shape == canvas.shape and not torch.equal(image, canvas)
    ys, xs = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    for i in range(n):
        x0, y0, x1, y1 = box[i].long().tolist()
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        assert bool(mask[i][~inside].logical_not().all())  # the box contains the whole mask
        # tight: the mask touches all four sides of the box
        assert mask[i, :, x0].any() and mask[i, :, x1 - 1].any()
        assert mask[i, y0].any() and mask[i, y1 - 1].any()
        # the object's pixels were painted, the rest of the canvas is untouched
        assert torch.equal(image[i][:, ~mask[i]], canvas[i][:, ~mask[i]])


def test_draw_shape_does_not_modify_the_canvas():
    g = torch.Generator().manual_seed(0)
    canvas = shapes.random_background(2, 32, 32, generator=g)
    before = canvas.clone()
    shapes.draw_shape(canvas, torch.tensor([0, 1]), torch.full((2, 2), 16.0), torch.full((2,), 8.0),
                      torch.zeros(2), generator=g)
    assert torch.equal(canvas, before)


def test_bad_class_id_is_a_clear_error():
    with pytest.raises(ValueError, match="class ids"):
        shapes.shape_mask(torch.tensor([N_CLASSES]), *_pose(1), 64, 64)


# ---- the generated variants ---------------------------------------------------------------------------
def test_same_seed_same_tensors_other_seed_other_images():
    a = generator.generate("shapes-single", 8, seed=0, split="test")
    b = generator.generate("shapes-single", 8, seed=0, split="test")
    c = generator.generate("shapes-single", 8, seed=1, split="test")
    d = generator.generate("shapes-single", 8, seed=0, split="train")
    for f in ("x", "labels", "boxes", "box_labels"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.x, c.x)
    assert not torch.equal(a.x, d.x)  # train and test come from disjoint seed streams
    seeds = {generator.chunk_seed("shapes-single", split, 0, 0) for split in ("train", "test")}
    assert len(seeds) == 2


def test_prefix_does_not_depend_on_n(data):
    small = generator.generate("shapes-multi", 5, seed=0, split="test")
    assert torch.equal(small.x, data["shapes-multi"].x[:5])
    assert torch.equal(small.boxes, data["shapes-multi"].boxes[:5])


@pytest.mark.parametrize("variant", list(generator.VARIANTS))
def test_labels_agree_with_boxes(data, variant):
    d, spec = data[variant], generator.VARIANTS[variant]
    assert d.x.shape == (len(d), 3, 64, 64) and d.x.dtype == torch.uint8
    counts = (d.box_labels >= 0).sum(1)
    assert int(counts.min()) >= spec.objects[0] and int(counts.max()) <= spec.objects[1]
    valid = d.box_labels >= 0
    # every object's box is non-empty and inside the image
    b = d.boxes[valid]
    assert bool(((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all())
    assert float(b.min()) >= 0 and float(b.max()) <= 64
    if spec.multilabel:
        hot = torch.zeros(len(d), N_CLASSES)
        for i in range(len(d)):
            hot[i, d.box_labels[i][valid[i]]] = 1
        assert torch.equal(hot, d.labels)
    else:
        assert torch.equal(d.labels, d.box_labels[:, 0])
    # every class occurs: the class is drawn uniformly
    assert set(d.box_labels[valid].unique().tolist()) == set(range(N_CLASSES))


@pytest.mark.parametrize("variant", ["shapes-multi", "shapes-clutter"])
def test_objects_of_one_image_do_not_overlap(data, variant):
    d = data[variant]
    for i in range(64):
        b = d.boxes[i][d.box_labels[i] >= 0]
        lo = torch.maximum(b[:, None, :2], b[None, :, :2])
        hi = torch.minimum(b[:, None, 2:], b[None, :, 2:])
        inter = (hi - lo).clamp(min=0).prod(-1)
        inter.fill_diagonal_(0)
        assert float(inter.max()) == 0


def test_sample_drops_padding(data):
    d = data["shapes-clutter"]
    s = d.sample(0)
    assert s.x.dtype == torch.float32
    # normalised with ImageNet's mean/std, as the models' input
    mean, std = torch.tensor(generator.MEAN).view(3, 1, 1), torch.tensor(generator.STD).view(3, 1, 1)
    assert torch.allclose(s.x * std + mean, d.x[0].float() / 255, atol=1e-6)
    assert len(s.boxes) == len(s.box_labels) == int((d.box_labels[0] >= 0).sum())


def test_cache_roundtrip(tmp_path):
    a = store.dataset("shapes-single", "test", seed=0, n=4, data_dir=tmp_path)
    files = list((tmp_path / "generated").glob("shapes-single-test-n4-seed0-v*.pt"))
    assert len(files) == 1
    b = store.dataset("shapes-single", "test", seed=0, n=4, data_dir=tmp_path)
    assert torch.equal(a.x, b.x) and torch.equal(a.boxes, b.boxes)


def test_a_changed_spec_does_not_read_the_old_cache(tmp_path, monkeypatch):
    """The cache file name carries a fingerprint of the variant's spec: changing what a variant draws (here
    its grid) without bumping GENERATOR_VERSION generates new images instead of reading stale ones."""
    import dataclasses

    a = store.dataset("shapes-multi", "test", seed=0, n=4, data_dir=tmp_path)
    before = generator.fingerprint("shapes-multi")
    changed = dataclasses.replace(generator.VARIANTS["shapes-multi"], grid=2)
    monkeypatch.setitem(generator.VARIANTS, "shapes-multi", changed)
    assert generator.fingerprint("shapes-multi") != before
    b = store.dataset("shapes-multi", "test", seed=0, n=4, data_dir=tmp_path)
    assert not torch.equal(a.boxes, b.boxes)
    assert len(list((tmp_path / "generated").glob("shapes-multi-test-n4-*.pt"))) == 2


def test_preprocess_accepts_pil_and_uint8():
    from PIL import Image

    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    out = synthetic.preprocess(x)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32
    pil = Image.fromarray(x.permute(1, 2, 0).numpy())
    assert torch.allclose(synthetic.preprocess(pil), out)
    with pytest.raises(ValueError, match="RGB"):
        synthetic.preprocess(torch.rand(2, 64, 64))


# ---- loading: clear errors --------------------------------------------------------------------------------
def test_benchmark_declares_its_normalisation():
    """The benchmark's mean/std are those of its input, so the metrics' black fill is -mean/std."""
    x = torch.zeros(3, 64, 64, dtype=torch.uint8)  # a black image
    out = synthetic.preprocess(x)
    assert torch.allclose(out, cc.metrics.black(out[None], torch.tensor(generator.MEAN),
                                                torch.tensor(generator.STD))[0])


def test_no_import_circle_between_synthetic_training_and_plotting():
    """The layers import downwards only: plotting knows no benchmark, training no synthetic."""
    import ast
    import inspect

    from cam_core import plotting
    from cam_core.benchmarks import card, checkpoints, training

    def imported(module) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    assert not {n for n in imported(plotting) if n.startswith("cam_core.benchmarks")}
    for module in (training, card, checkpoints, store, generator):
        assert "cam_core.benchmarks.synthetic" not in imported(module), module.__name__


def test_registered_names():
    names = cc.benchmarks.available()
    assert {"shapes-single", "shapes-multi", "shapes-clutter"} <= set(names)


def test_missing_data_dir_is_a_clear_error():
    with pytest.raises(ValueError, match="does not exist"):
        cc.benchmarks.load("shapes-single", data_dir="/nonexistent", device="cpu")


def test_missing_model_without_training_names_the_command(tmp_path):
    with pytest.raises(ValueError, match="python -m cam_core train"):
        cc.benchmarks.load("shapes-single", data_dir=tmp_path, device="cpu", train_if_missing=False)


def test_unknown_arch_and_argument(tmp_path):
    with pytest.raises(ValueError, match="unknown arch"):
        cc.benchmarks.load("shapes-single", data_dir=tmp_path, device="cpu", arch="alexnet")
    with pytest.raises(ValueError, match="unexpected arguments"):
        cc.benchmarks.load("shapes-single", data_dir=tmp_path, device="cpu", colour="red")
