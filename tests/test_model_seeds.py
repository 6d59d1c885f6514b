"""Issue 20: models that never see a box (the label recipe), several trained models per benchmark
(model seeds), and the evaluation of all of them on the same images (a ``model_seed`` column)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cam_core as cc
from cam_core.benchmarks import augment, checkpoints, generator, nets, store, synthetic, training

TINY = dict(n_train=32, max_steps=2, progress=False, evaluate=False)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A data folder for this module's tiny trainings (its generated chunks are made once)."""
    return tmp_path_factory.mktemp("seeds")


def _scrambled(data: generator.ShapesData, seed: int = 1) -> generator.ShapesData:
    """The same images and labels with every box moved elsewhere at random."""
    g = torch.Generator().manual_seed(seed)
    boxes = data.boxes.clone()
    shift = torch.randint(-20, 21, (*boxes.shape[:2], 2), generator=g).float().repeat(1, 1, 2)
    boxes = torch.where(data.box_labels[..., None] >= 0, (boxes + shift).clamp(0, generator.IMAGE_SIZE), boxes)
    return generator.ShapesData(data.x, data.labels, boxes, data.box_labels)


def _train_with_boxes(monkeypatch, scratch, config, scramble: bool) -> str:
    real = store.dataset

    def dataset(*args, **kwargs):
        data = real(*args, **kwargs)
        return _scrambled(data) if scramble else data

    monkeypatch.setattr(store, "dataset", dataset)
    _, rec = training.train("shapes-multi", "vgg", seed=0, data_dir=scratch, config=config, **TINY)
    return rec["sha256"]


def test_label_recipe_is_blind_to_the_boxes_and_evidence_recipe_is_not(monkeypatch, scratch):
    """What the box-based metrics score never reaches the label recipe's training: scrambling every
    ground-truth box leaves the weights bit-identical, also with its (box-free) masking augmentation;
    the evidence recipe (v4, the ablation) trains on them, so there the weights change."""
    for share in (0.0, 1.0):
        cfg = training.TrainConfig(epochs=1, batch_size=16, mask_share=share, mask_ramp=0.0, target="label")
        assert _train_with_boxes(monkeypatch, scratch, cfg, False) == _train_with_boxes(monkeypatch, scratch, cfg, True)
    cfg = training.TrainConfig(epochs=1, batch_size=16, mask_share=1.0, mask_ramp=0.0, target="evidence")
    assert _train_with_boxes(monkeypatch, scratch, cfg, False) != _train_with_boxes(monkeypatch, scratch, cfg, True)


def test_label_augment_keeps_pixels_without_masks():
    """``mask_share=0``: no mask, only a rotation by k x 90 degrees and a contrast/brightness jitter, so
    an image's sorted pixel values are an affine function of the original's."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16) * 0.5 + 0.25
    out = augment.label_augment(x, g, 0.0)
    assert out.shape == x.shape
    for a, b in zip(x, out, strict=True):
        u, v = a.flatten().sort().values, b.flatten().sort().values
        slope = (v[-1] - v[0]) / (u[-1] - u[0])
        assert torch.allclose(v, v[0] + slope * (u - u[0]), atol=1e-5)
    masked = augment.label_augment(x, torch.Generator().manual_seed(0), 1.0)
    assert masked.shape == x.shape and not torch.allclose(masked, out)


def test_model_keys_and_plan():
    assert checkpoints.model_key("shapes-clutter", "vgg") == "shapes-clutter-vgg"
    assert checkpoints.model_key("shapes-clutter", "vgg", 2) == "shapes-clutter-vgg-seed2"
    assert checkpoints.model_key("shapes-clutter", "vgg", 0, "evidence") == "shapes-clutter-vgg-evidence"
    with pytest.raises(ValueError, match="label, evidence"):
        checkpoints.model_key("shapes-clutter", "vgg", 0, "boxes")
    with pytest.raises(ValueError, match="model_seed must be an int >= 0"):
        checkpoints.model_key("shapes-clutter", "vgg", -1)
    plan = training.planned("label")
    for v in generator.VARIANTS:  # three independently trained VGG-style models per benchmark
        assert {k for vv, a, k, _ in plan if vv == v and a == "vgg"} == {0, 1, 2}
        assert training.default_recipe(v, "vgg") == "label"
    everything = training.planned(None)
    firsts = [i for i, (v, a, _, r) in enumerate(everything) if training.configs(r)[(v, a)].init is None]
    assert firsts == list(range(len(firsts)))  # models others start from come first
    assert {r for *_, r in everything} == set(checkpoints.TARGETS)
    assert training.planned("label", ["shapes-single"], ["vgg"], [1]) == [("shapes-single", "vgg", 1, "label")]


def test_cli_takes_recipe_and_model_seed():
    from cam_core.cli import build_parser

    args = build_parser().parse_args(["train", "--all", "--recipe", "evidence", "--model-seed", "2"])
    assert args.recipe == "evidence" and args.seed == 2
    args = build_parser().parse_args(["train", "--all"])
    assert args.seed is None and args.recipe is None  # --all: every recipe, every planned seed
    assert build_parser().parse_args(["train", "--all", "--seed", "1"]).seed == 1


def _save_tiny(root: Path, variant: str, seed: int, target: str = "label", **record) -> str:
    cfg = training.TrainConfig(epochs=1, batch_size=16, target=target)
    model, rec = training.train(variant, "vgg", seed=seed, data_dir=root, config=cfg, **TINY)
    rec.update(record)
    checkpoints.save_checkpoint(model, rec, root)
    return rec["sha256"]


def test_a_v4_file_under_the_default_name_is_refused(tmp_path, scratch):
    """A checkpoint whose record has no ``config["target"]`` (benchmark v4: trained on box evidence)
    under the default name is refused, naming the command that retrains it."""
    (tmp_path / "generated").symlink_to(scratch / "generated")
    model = nets.build("vgg", 12)
    rec = {"variant": "shapes-single", "arch": "vgg", "seed": 0, "config": {"epochs": 1},
           "generator_version": generator.GENERATOR_VERSION, "checkpoint_version": checkpoints.CHECKPOINT_VERSION,
           "generator_fingerprint": generator.fingerprint("shapes-single")}
    (tmp_path / "models").mkdir()
    torch.save({"state_dict": model.state_dict(), "record": rec},
               checkpoints.checkpoint_path(tmp_path, "shapes-single", "vgg"))
    with pytest.raises(checkpoints.CheckpointVersionError,
                       match=r"'evidence' recipe.*train --benchmark shapes-single --arch vgg"):
        cc.benchmarks.load("shapes-single", arch="vgg", data_dir=tmp_path, device="cpu", train_if_missing=False)


def test_load_seeds_and_evaluate_seeds(tmp_path, scratch):
    """``load_seeds`` loads one benchmark per trained model; ``evaluate_seeds`` evaluates each on the same
    images (each model its own cache entry) into one frame with a ``model_seed`` column, which
    ``summarize`` reads as several models."""
    (tmp_path / "generated").symlink_to(scratch / "generated")
    shas = {k: _save_tiny(tmp_path, "shapes-single", k) for k in (0, 1)}
    assert len(set(shas.values())) == 2  # another seed: another initialisation and data order
    benches = cc.benchmarks.load_seeds("shapes-single", model_seeds="0,1", data_dir=tmp_path, device="cpu",
                                       n_test=8, train_if_missing=False)
    assert [b.model_seed for b in benches] == [0, 1] and all(b.recipe == "label" for b in benches)
    assert [nets.state_dict_sha256(b.model) for b in benches] == [shas[0], shas[1]]
    assert "model_seed=1" in repr(benches[1])
    df = cc.evaluation.evaluate_seeds(benches, methods=["Grad-CAM", "Uniform"], metrics=["AD"], n_images=4,
                                      batch_size=4, cache=tmp_path / "cache", progress=False)
    assert sorted(df["model_seed"].unique()) == [0, 1]
    assert (df.groupby("model_seed")["image"].apply(lambda s: sorted(set(s)))).map(tuple).nunique() == 1
    assert len({str(c) for c in df.attrs["caches"]}) == 2  # the cache key holds the model
    again = cc.evaluation.evaluate(benches[1], methods=["Grad-CAM", "Uniform"], metrics=["AD"], n_images=4,
                                   batch_size=4, cache=tmp_path / "cache", progress=False)
    assert again.attrs["cache"] == df.attrs["caches"][1]
    summary = cc.evaluation.summarize(df)
    assert (summary["n"] == 8).all()
    with pytest.raises(ValueError, match="model seeds"):
        cc.evaluation.evaluate_seeds([benches[0], benches[0]], methods=["Uniform"], metrics=["AD"], n_images=2)
    with pytest.raises(ValueError, match="no shapes-single/vit model"):
        synthetic._load("shapes-single", data_dir=tmp_path, arch="vit", recipe="label")


def test_load_seeds_without_seeds_loads_the_shipped_models_and_trains_nothing():
    """``model_seeds=None``: the seeds :data:`training.MODEL_SEEDS` ships for the architecture and recipe
    (0, 1, 2 for the VGG-style label models; 0 for the others and for a real benchmark)."""
    from cam_core.benchmarks.base import _shipped_seeds

    assert _shipped_seeds("shapes-clutter", "vgg", None) == training.MODEL_SEEDS[("vgg", "label")] == (0, 1, 2)
    assert _shipped_seeds("shapes-clutter", "vgg", "evidence") == (0,)
    assert _shipped_seeds("shapes-multi", "resnet", None) == (0,)
    assert _shipped_seeds("imagenet", "vgg16", None) == (0,)
    benches = cc.benchmarks.load_seeds("shapes-single", model_seeds=None, arch="resnet", device="cpu",
                                       train_if_missing=False)
    assert [b.model_seed for b in benches] == [0]
