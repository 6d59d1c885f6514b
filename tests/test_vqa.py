"""The VQA chapter's library: scenes and questions, the bound model, every CAM on it, the VQA v2 loader."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

import cam_core as cc
import cam_core.kernels.rescale
from cam_core.vqa.benchmark import ShapesVQABenchmark
from cam_core.vqa.dataset import cached_scene, items, scene_index
from cam_core.vqa.model import FixedMultiply, VQAConfig, VQAModel
from cam_core.vqa.questions import ANSWERS, MARGIN, WORDS, Tokenizer
from cam_core.vqa.scenes import make_scene

CONFIG = VQAConfig(num_words=len(WORDS), num_answers=len(ANSWERS))
LAYER = VQAModel(CONFIG).target_layer  # the last conv layer's maps (after its ReLU)


@pytest.fixture(scope="module")
def model() -> VQAModel:
    torch.manual_seed(0)
    return VQAModel(CONFIG).eval()


@pytest.fixture(scope="module")
def batch(model: VQAModel):
    bench = ShapesVQABenchmark(model, seed=0, n_scenes=10)
    return next(bench.images(n=6, seed=1, batch_size=6))


# ---- generator ---------------------------------------------------------------------------------
def test_scenes_are_seeded():
    a, b, c = make_scene(0, 5), make_scene(0, 5), make_scene(1, 5)
    assert torch.equal(a.image, b.image) and a.objects == b.objects
    assert not torch.equal(a.image, c.image)
    assert a.image.shape == (3, 64, 64) and 0 <= a.image.min() and a.image.max() <= 1


def test_scene_objects_are_distinct_and_boxed():
    for i in range(30):
        s = make_scene(0, i)
        assert len({o.shape for o in s.objects}) == len(s.objects) == len({o.colour for o in s.objects})
        for o in s.objects:
            x0, y0, x1, y1 = o.box
            assert x0 <= o.cx <= x1 and y0 <= o.cy <= y1
            assert max(x1 - x0, y1 - y0) <= 2.2 * o.radius + 2  # the diamond reaches 1.1 r
            # the box's pixels carry the object's colour (the object is drawn last where it lies)
            patch = s.image[:, int(o.cy), int(o.cx)]
            assert patch.max() > 0.6


def _find(scene, colour=None, shape=None):
    (obj,) = [
        o
        for o in scene.objects
        if (colour is None or o.colour == colour) and (shape is None or o.shape == shape)
    ]
    return obj


def test_answers_follow_from_the_scene():
    """An independent oracle: parse each question's text and recompute its answer from the objects."""
    for it in items(0, "test", 40):
        scene = cached_scene(0, scene_index("test", it.scene))
        q = it.question
        if m := re.fullmatch(r"what shape is the (\w+) object \?", q.text):
            assert q.answer == _find(scene, colour=m[1]).shape
        elif m := re.fullmatch(r"what colour is the (\w+) \?", q.text):
            assert q.answer == _find(scene, shape=m[1]).colour
        elif m := re.fullmatch(r"is the (\w+) object left of the (\w+) \?", q.text):
            a, b = _find(scene, colour=m[1]), _find(scene, shape=m[2])
            assert abs(a.cx - b.cx) >= MARGIN and q.answer == ("yes" if a.cx < b.cx else "no")
        elif m := re.fullmatch(r"what colour is the object nearest to the (\w+) \?", q.text):
            anchor = _find(scene, shape=m[1])
            others = sorted(
                (math.dist((o.cx, o.cy), (anchor.cx, anchor.cy)), o.colour)
                for o in scene.objects
                if o is not anchor
            )
            assert q.answer == others[0][1]
        else:
            pytest.fail(f"unexpected question {q.text!r}")
        assert scene.objects[q.refs[0]] is not None


def test_tokenizer_round_trip():
    tok = Tokenizer()
    ids = tok.encode("What colour is the square?")
    assert ids.shape == (tok.max_len,) and tok.decode(ids) == "what colour is the square ?"
    assert tok.encode("what is the zebra ?")[3].item() == 1  # unknown word


def test_batch_carries_questions_and_referenced_boxes(batch):
    assert batch.x.shape == (6, 3, 64, 64) and batch.extra["question"].shape == (6, Tokenizer().max_len)
    assert len(batch.extra["question_text"]) == 6
    for i in range(6):
        n_refs = 1 if batch.extra["question_type"][i] in ("shape", "colour") else 2
        assert batch.boxes[i].shape == (n_refs, 4)
        assert torch.equal(batch.boxes_for(i, int(batch.labels[i])), batch.boxes[i])
        assert batch.extra["ref_boxes"][i] is batch.boxes[i]


# ---- the bound model ---------------------------------------------------------------------------
def test_bound_model_equals_the_two_input_model_and_tiles(model, batch):
    q = batch.extra["question"]
    bound = model.bind(q)
    with torch.no_grad():
        direct = model(batch.x, q)  # (N, A)
        assert torch.allclose(bound(batch.x), direct, atol=1e-6)
        tiled = bound(torch.cat([batch.x] * 3))  # (3N, A): row b uses question b % N
        assert torch.allclose(tiled, torch.cat([direct] * 3), atol=1e-6)
        body, head = cc.split_model(bound, LAYER)
        assert torch.allclose(head(body(batch.x)), direct, atol=1e-6)
    assert dict(bound.named_modules())[LAYER] is dict(model.named_modules())[LAYER]  # shared CNN
    with pytest.raises(ValueError, match="tile layout"):
        bound(batch.x[:4])


def test_fixed_multiply_is_linear_for_deeplift():
    ctx = torch.randn(2, 5)
    x = torch.randn(4, 5)
    assert torch.equal(FixedMultiply(ctx)(x), x * torch.cat([ctx, ctx]))
    assert FixedMultiply in cam_core.kernels.rescale.LINEAR_MODULES


def test_lift_cam_sums_to_delta_through_fusion_and_classifier(model, batch):
    bound = model.bind(batch.extra["question"])
    res = cc.LiftCAM(bound, LAYER)(batch.x)
    _, head = cc.split_model(bound, LAYER)
    with torch.no_grad():
        f_a = head(res.activations).gather(1, res.target[:, None])[:, 0]
        f_0 = head(torch.zeros_like(res.activations)).gather(1, res.target[:, None])[:, 0]
    assert torch.allclose(res.alpha.sum(1), f_a - f_0, atol=1e-4, rtol=1e-4)
    # and the head is genuinely non-linear here: Grad-CAM's alpha does not sum to the delta
    g = cc.GradCAM(bound, LAYER)(batch.x).alpha * res.activations[0, 0].numel()
    assert not torch.allclose(g.sum(1), f_a - f_0, atol=1e-3)


def test_every_method_runs_on_the_bound_model(model, batch):
    """No special cases: each method builds its own split through BoundVQA.cam_split. CAM (Zhou et al.)
    is only defined for a GAP + linear head, and says so; this model's head is the paper's non-linear one."""
    bound = model.bind(batch.extra["question"])
    assert {*cc.PAPER_METHODS, "SHAP-CAM"} <= set(cc.METHODS)
    for name, cls in cc.METHODS.items():
        if name == "CAM":
            with pytest.raises(ValueError, match="global average pool"):
                cls(bound, LAYER)(batch.x)
            continue
        kwargs = {"n_orderings": 4, "seed": 0} if name == "SHAP-CAM" else {}
        res = cls(bound, LAYER, **kwargs)(batch.x)
        assert res.saliency.shape == (6, 64, 64), name
        assert torch.isfinite(res.alpha).all() and torch.isfinite(res.saliency).all(), name


def test_batched_call_equals_per_image_with_its_question(model, batch):
    q = batch.extra["question"]
    res = cc.LiftCAM(model.bind(q), LAYER)(batch.x)
    for i in (0, 3):
        one = cc.LiftCAM(model.bind(q[i : i + 1]), LAYER)(batch.x[i : i + 1])
        assert torch.allclose(one.alpha[0], res.alpha[i], atol=1e-5)


def test_bad_layer_is_explained(model, batch):
    bound = model.bind(batch.extra["question"])
    with pytest.raises(ValueError, match="only inside the image CNN"):
        bound.cam_split("classifier.0")


# ---- the trained model: localization ------------------------------------------------------------
def test_single_object_questions_are_localized_by_lift_cam():
    """The issue's property: for most questions about one object, the LIFT-CAM map of the committed
    model's answer has more than half its energy (Eq. 14) inside that object's box.

    Measured (96 shape/colour questions, seed 0, all answered right): 91% of the maps have more
    than half their energy in the box (Grad-CAM: 70%); the box holds 67% of LIFT-CAM's energy on
    average, 8.5x its 8% share of the image, and more than any other object's box in every question.
    On 512 questions (chapter 06's run): 92% (Grad-CAM 75%)."""
    from cam_core.vqa.localization import referenced_energy, share_mostly_inside

    bench = cc.benchmarks.load("shapes-vqa", device="cpu", n_scenes=120, question_types="single")
    loc = referenced_energy(bench, ["LIFT-CAM", "Grad-CAM"], n=96, seed=0, batch_size=96)
    lift = loc[loc["method"] == "LIFT-CAM"]
    assert len(lift) == 96 and set(lift["question_type"]) <= {"shape", "colour"}
    share = share_mostly_inside(loc, "LIFT-CAM", threshold=0.5)
    # thresholds from the property and from chance, never from the model's own measurement:
    # "most" questions is more than half of them, three standard errors clear of one half
    n = len(lift)
    assert share > 0.5 + 3 * (0.25 / n) ** 0.5, share
    # better than a uniform map (the box's share of the image), by three standard errors of the paired gap
    gap = lift["energy"] - lift["box_share"]
    assert gap.mean() > 3 * gap.std() / n**0.5, (lift["energy"].mean(), lift["box_share"].mean())
    # the object's box beats every other box more often than a box picked at random would
    chance = lift["index"].map(lambda i: 1 / len(bench.object_boxes(int(i))[0]))
    p0 = chance.mean()
    beats = lift["beats_others"].mean()
    assert beats > p0 + 3 * (p0 * (1 - p0) / n) ** 0.5, (beats, p0)
    # the paper's claim, here on localization: LIFT-CAM's maps are better placed than Grad-CAM's
    assert share > share_mostly_inside(loc, "Grad-CAM", threshold=0.5)


def test_localization_summaries_agree_on_hand_made_rows():
    """summarize (per type), single_object_summary (shape + colour pooled) and share_mostly_inside."""
    import pandas as pd

    from cam_core.vqa import localization

    rows = pd.DataFrame({
        "method": ["A", "A", "A", "B", "B"],
        "question_type": ["shape", "colour", "left", "shape", "colour"],
        "energy": [0.6, 0.4, 0.9, 0.7, 0.8],
        "hit": [1.0, 0.0, 1.0, 1.0, 1.0],
        "box_share": [0.1, 0.1, 0.2, 0.1, 0.1],
        "beats_others": [1.0, 0.0, float("nan"), 1.0, 1.0],
    })
    per_type = localization.summarize(rows)
    assert per_type.loc[("A", "colour"), "mostly_inside"] == 0.0
    assert per_type.loc[("A", "left"), "energy"] == pytest.approx(90.0)
    single = localization.single_object_summary(rows)  # "left" is not a single-object type
    assert single.loc["A", "questions"] == 2 and single.loc["A", "energy"] == pytest.approx(50.0)
    assert single.loc["A", "mostly_inside"] == pytest.approx(50.0)
    assert single.loc["B", "beats_others"] == pytest.approx(100.0)
    assert localization.share_mostly_inside(rows, "A") == pytest.approx(0.5)
    assert localization.share_mostly_inside(rows, "B") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no rows for method 'C'"):
        localization.share_mostly_inside(rows, "C")
    with pytest.raises(ValueError, match="nearest"):
        localization.single_object_summary(rows, types=("nearest",))


def test_random_box_chance_is_the_mean_of_one_over_the_objects():
    import pandas as pd

    from cam_core.vqa import localization

    class Scenes:  # scene i has i + 1 objects
        def object_boxes(self, i):
            return torch.zeros(i + 1, 4), torch.zeros(i + 1, dtype=torch.long)

    rows = pd.DataFrame({"method": ["LIFT-CAM", "LIFT-CAM", "LIFT-CAM", "Grad-CAM"],
                         "question_type": ["shape", "colour", "left", "shape"], "index": [0, 3, 1, 1]})
    assert localization.random_box_chance(Scenes(), rows) == pytest.approx((1 / 1 + 1 / 4) / 2)
    with pytest.raises(ValueError, match="no rows"):
        localization.random_box_chance(Scenes(), rows, method="Score-CAM")


def test_beats_others_is_computed_against_every_object(model):
    """The localization helper on a hand-made map: all energy on the referenced object's box."""
    from cam_core.vqa.localization import _beats_other_objects

    bench = ShapesVQABenchmark(model, seed=0, n_scenes=5, question_types=("shape",))
    b = next(bench.images(n=3, seed=0, batch_size=3))
    sal = torch.zeros(3, 64, 64)
    for i in range(3):
        boxes, ref = bench.object_boxes(int(b.index[i]))
        assert torch.equal(boxes[ref], b.boxes[i][0])
        x0, y0, x1, y1 = (int(v) for v in boxes[ref])
        sal[i, y0:y1, x0:x1] = 1.0
    assert _beats_other_objects(bench, b, sal).tolist() == [1.0, 1.0, 1.0]
    assert _beats_other_objects(bench, b, torch.zeros(3, 64, 64)).tolist() == [0.0, 0.0, 0.0]


# ---- VQA v2 loader -----------------------------------------------------------------------------
def _vqa2_fixture(root: Path) -> None:
    from PIL import Image

    (root / "val2014").mkdir(parents=True)
    qs, anns = [], []
    for k, (image_id, text, answer, atype) in enumerate(
        [
            (262148, "Where is he looking?", "down", "other"),
            (262148, "Is it sunny?", "yes", "yes/no"),
            (393225, "How many dogs?", "2", "number"),
            (393225, "What colour is the bus?", "purple", "other"),
        ]
    ):
        qid = image_id * 1000 + k
        qs.append({"image_id": image_id, "question": text, "question_id": qid})
        anns.append(
            {
                "question_type": "none of the above",
                "multiple_choice_answer": answer,
                "answers": [
                    {"answer": answer, "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)
                ],
                "image_id": image_id,
                "answer_type": atype,
                "question_id": qid,
            }
        )
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(
        json.dumps(
            {
                "info": {},
                "task_type": "Open-Ended",
                "data_type": "mscoco",
                "license": {},
                "data_subtype": "val2014",
                "questions": qs,
            }
        )
    )
    (root / "v2_mscoco_val2014_annotations.json").write_text(
        json.dumps(
            {"info": {}, "license": {}, "data_subtype": "val2014", "data_type": "mscoco", "annotations": anns}
        )
    )
    g = torch.Generator().manual_seed(0)
    for image_id, size in ((262148, (80, 60)), (393225, (50, 90))):
        arr = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(root / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
    vocab = {
        "question_vocab": ["<pad>", "<unk>", "where", "is", "he", "looking", "it", "sunny", "how", "many"],
        "answers": ["yes", "no", "2", "down"],
    }
    (root / "vqa_vocab.json").write_text(json.dumps(vocab))


def test_vqa2_loader_reads_the_real_formats(tmp_path):
    from cam_core.vqa.vqa2 import VQA2Benchmark, VQA2Vocab

    _vqa2_fixture(tmp_path)
    vocab = VQA2Vocab.load(tmp_path / "vqa_vocab.json")
    torch.manual_seed(0)
    small = VQAModel(VQAConfig(num_words=10, num_answers=4))
    bench = VQA2Benchmark(tmp_path, small, vocab, image_size=64)
    assert len(bench) == 3  # "purple" is not among the model's answers
    texts = [bench.sample(i).extra["question_text"] for i in range(3)]
    assert texts == ["Where is he looking?", "Is it sunny?", "How many dogs?"]
    s = bench.sample(0)
    assert s.x.shape == (3, 64, 64) and int(s.label) == 3 and s.boxes.shape == (0, 4)
    assert s.extra["question"][:5].tolist() == [2, 3, 4, 5, 0]
    assert bench.sample(2).extra["question"][:3].tolist() == [8, 9, 1]  # "dogs" -> <unk>
    assert bench.subset(2, seed=3) == bench.subset(2, seed=3)
    b = next(bench.images(n=3, seed=0, batch_size=3))
    assert bench.model_for(b)(b.x).shape == (3, 4)


def test_vqa2_checkpoint_with_config_round_trip(tmp_path):
    """load_vqa2 with a {"config", "state_dict"} checkpoint (small backbone: fast)."""
    from cam_core.vqa.vqa2 import load_vqa2

    _vqa2_fixture(tmp_path)
    torch.manual_seed(0)
    model = VQAModel(VQAConfig(num_words=10, num_answers=4)).eval()
    torch.save({"config": model.config_dict(), "state_dict": model.state_dict()}, tmp_path / "m.pt")
    bench = load_vqa2(str(tmp_path), device="cpu", checkpoint=str(tmp_path / "m.pt"), image_size=64)
    b = next(bench.images(n=3, seed=0, batch_size=3))
    with torch.no_grad():
        assert torch.allclose(bench.model_for(b)(b.x), model(b.x, b.extra["question"]), atol=1e-5)


@pytest.mark.slow
def test_vqa2_vgg16_checkpoint_round_trip(tmp_path):
    """A plain VGG16 VQAModel state dict (528 MB written and read: marked slow)."""
    from cam_core.vqa.vqa2 import load_vqa2

    _vqa2_fixture(tmp_path)
    with torch.device("meta"):  # skip VGG16's slow random init; fill the weights cheaply instead
        model = VQAModel(
            VQAConfig(
                num_words=10,
                num_answers=4,
                backbone="vgg16",
                embed_dim=16,
                lstm_hidden=8,
                word_dim=8,
                classifier_hidden=8,
            )
        )
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.05, 0.05, generator=g)
    torch.save(model.state_dict(), tmp_path / "vqa_vgg16.pt")
    bench = load_vqa2(str(tmp_path), device="cpu", image_size=32)
    assert bench.target_layer == "image_encoder.features.29"
    assert torch.allclose(bench.mean, torch.tensor([0.485, 0.456, 0.406]))
    b = next(bench.images(n=2, seed=0, batch_size=2))
    with torch.no_grad():
        assert torch.allclose(bench.model_for(b)(b.x), model.eval()(b.x, b.extra["question"]), atol=1e-5)


def test_vqa2_missing_files_say_what_and_where(tmp_path):
    from cam_core.vqa.vqa2 import load_vqa2

    with pytest.raises(ValueError, match="needs data_dir"):
        cc.benchmarks.load("vqa2", device="cpu")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_vqa2(str(tmp_path / "nowhere"))
    (tmp_path / "vqa_vgg16.pt").write_bytes(b"")
    (tmp_path / "vqa_vocab.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"v2_OpenEnded_mscoco_val2014_questions\.json.*visualqa\.org"
    ):
        from cam_core.vqa.vqa2 import VQA2Benchmark, VQA2Vocab

        VQA2Benchmark(
            tmp_path, VQAModel(VQAConfig(num_words=10, num_answers=4)), VQA2Vocab(["<pad>"], ["yes"])
        )
    with pytest.raises(FileNotFoundError, match="set checkpoint"):
        load_vqa2(str(tmp_path), checkpoint=str(tmp_path / "other.pt"))


# ---- training --------------------------------------------------------------------------------------
def test_training_is_deterministic_and_loads(tmp_path):
    """Two short trainings under the same seed write the same weights (same sha256), the manifest
    records the recipe and the scores, and the checkpoint loads back as the model that was trained."""
    from cam_core.vqa.training import TrainConfig, load_checkpoint, train

    cfg = TrainConfig(train_scenes=64, test_scenes=16, epochs=2, batch_scenes=16)
    a = train(cfg, tmp_path / "a", log=False)
    b = train(cfg, tmp_path / "b", log=False)
    assert a["sha256"] == b["sha256"]
    assert a["train"]["activity_l1"] == 0.5 and a["train"]["map_size"] == 16
    assert set(a["accuracy"]) >= {"all", "shape", "colour"} and 0 <= a["accuracy"]["all"] <= 100
    other = train(TrainConfig(train_scenes=64, test_scenes=16, epochs=2, batch_scenes=16, seed=1),
                  tmp_path / "c", log=False)
    assert other["sha256"] != a["sha256"]
    model = load_checkpoint(tmp_path / "a" / "shapes_vqa.pt")
    assert not model.training and model.target_layer == LAYER


def test_train_vqa_flags_cover_the_config():
    """Every TrainConfig field has a train-vqa flag, and the defaults are the committed recipe."""
    import argparse
    from dataclasses import asdict

    from cam_core.vqa.training import TrainConfig, add_command, config_from_args

    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers())
    assert config_from_args(parser.parse_args(["train-vqa"])) == TrainConfig()
    flags = ["train-vqa", "--coords", "--map-size", "8", "--weight-decay", "0"]
    cfg = config_from_args(parser.parse_args(flags))
    assert (cfg.coords, cfg.map_size, cfg.weight_decay) == (True, 8, 0.0)
    from cam_core.vqa.training import DEFAULT_DIR, MANIFEST

    recipe = json.loads((DEFAULT_DIR / MANIFEST).read_text())["train"]
    assert recipe == asdict(TrainConfig())  # the committed model was trained with the defaults


def test_missing_checkpoint_says_how_to_make_it(tmp_path):
    from cam_core.vqa.training import load_checkpoint

    with pytest.raises(FileNotFoundError, match="python -m cam_core train-vqa"):
        load_checkpoint(tmp_path / "nope.pt")


def test_ideal_map_energy_is_one_at_full_resolution_and_grows_with_the_map():
    """The ceiling of chapter 06: the box itself at the image's resolution holds all its energy; averaged
    into coarser cells and upsampled, less, and the coarser the less."""
    from cam_core.vqa import localization

    bench = cc.benchmarks.load("shapes-vqa", device="cpu", n_scenes=40, question_types="single")
    assert localization.ideal_map_energy(bench, 64, n=24) == pytest.approx(1.0, abs=1e-6)
    e8, e16 = (localization.ideal_map_energy(bench, s, n=24) for s in (8, 16))
    assert 0 < e8 < e16 < 1


def test_the_committed_models_manifest_is_readable():
    m = cc.vqa.training.read_manifest()
    assert m["train"]["epochs"] >= 1 and 0 < m["accuracy"]["all"] <= 100 and m["seconds"] > 0
    with pytest.raises(FileNotFoundError, match="train-vqa --out"):
        cc.vqa.training.read_manifest("/nope")
