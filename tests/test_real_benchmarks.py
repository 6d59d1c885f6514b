"""The paper's real setup (ImageNet, VOC 2007, COCO 2014 + torchvision / TorchRay models) on tiny
fixture folders in the exact formats; boxes checked against hand-computed values and against the
pixels they enclose; checkpoints checked with randomly initialised networks saved to disk."""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import torchvision
from fixtures_real import FAKE_WNIDS, jpeg, make_coco, make_imagenet, make_voc
from PIL import Image
from torch import nn
from torchvision.models import VGG16_Weights

import cam_core as cc
from cam_core.benchmarks.coco import COCO2014
from cam_core.benchmarks.imagenet import ImageNetVal
from cam_core.benchmarks.voc import VOC2007
from cam_core.benchmarks.weights import (
    CAFFE_MEAN,
    CaffePreprocess,
    ImageNetPreprocess,
    build_model,
    checkpoint_path,
)


def tiny(k: int) -> nn.Module:
    """A small stand-in classifier (the dataset tests need no VGG16); its layer "1" is explained."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, k))


def bright_extent(x: torch.Tensor, mean, std) -> torch.Tensor:
    """xyxy extent (exclusive end) of the pixels brighter than mid-grey in a preprocessed image."""
    img = x * torch.as_tensor(std)[:, None, None] + torch.as_tensor(mean)[:, None, None]  # back to [0, 1]
    ys, xs = torch.nonzero(img.mean(0) > 0.5, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()  # (4,)


@pytest.fixture(scope="module")
def imagenet_dirs(tmp_path_factory) -> dict[str, Path]:
    return {lay: make_imagenet(tmp_path_factory.mktemp(f"imagenet_{lay}"), lay)
            for lay in ("flat", "folders", "kaggle", "devkit")}


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory) -> Path:
    return make_voc(tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> Path:
    return make_coco(tmp_path_factory.mktemp("coco"))


# ---- preprocessing and box geometry ---------------------------------------------------------
def test_imagenet_preprocess_is_torchvisions(tmp_path):
    jpeg(tmp_path / "a.jpg", 300, 200, (50, 20, 150, 120))
    img = Image.open(tmp_path / "a.jpg").convert("RGB")
    ours, theirs = ImageNetPreprocess(), VGG16_Weights.IMAGENET1K_V1.transforms()
    assert torch.allclose(ours(img), theirs(img), atol=1e-6)
    t = torchvision.transforms.functional.pil_to_tensor(img)  # uint8 tensor input too
    assert torch.allclose(ours(t), theirs(t), atol=1e-6)
    assert ours(img).shape == (3, 224, 224)


def test_imagenet_geometry_hand_computed():
    # 300x200 -> shorter side 256: 384x256 (scale 1.28), centre crop 224 at left 80, top 16
    g = ImageNetPreprocess().geometry(h=200, w=300)
    assert (g.scale_x, g.scale_y, g.left, g.top, g.out_w, g.out_h) == (1.28, 1.28, 80, 16, 224, 224)
    boxes = torch.tensor([[50.0, 20, 150, 120], [0, 0, 50, 50], [0, 0, 300, 200]])
    out, keep = g.boxes(boxes)
    # (50,20,150,120)*1.28 - (80,16) = (-16, 9.6, 112, 137.6) -> clipped; box 2 is cropped out entirely
    assert keep.tolist() == [True, False, True]
    assert torch.allclose(out, torch.tensor([[0.0, 9.6, 112, 137.6], [0, 0, 224, 224]]), atol=1e-4)


def test_caffe_preprocess_values_and_sizes():
    img = Image.new("RGB", (300, 200), (128, 64, 32))
    x = CaffePreprocess()(img)
    assert x.shape == (3, 224, 224)  # (224, 224): every image the same size
    expected = torch.tensor([128 - 123.68, 64 - 116.779, 32 - 103.939])  # 0..255 minus the RGB mean
    assert torch.allclose(x, expected[:, None, None].expand_as(x), atol=1e-3)
    assert CaffePreprocess(224)(img).shape == (3, 224, 336)  # shorter side 224, int(224 * 300 / 200)
    assert CaffePreprocess(224)(Image.new("RGB", (200, 300))).shape == (3, 336, 224)


@pytest.mark.parametrize("pre", [ImageNetPreprocess(), CaffePreprocess(), CaffePreprocess(224)],
                         ids=["imagenet", "caffe-square", "caffe-aspect"])
def test_boxes_enclose_the_same_pixels_after_preprocessing(tmp_path, pre):
    rect = (50, 20, 150, 120)  # white pixels x 50:150, y 20:120 of a 300x200 image
    jpeg(tmp_path / "a.jpg", 300, 200, rect)
    img = Image.open(tmp_path / "a.jpg").convert("RGB")
    box, _ = pre.geometry(200, 300).boxes(torch.tensor([rect], dtype=torch.float32))
    found = bright_extent(pre(img), pre.mean, pre.std)
    assert torch.allclose(found, box[0], atol=1.5), (found, box)


# ---- ImageNet -------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["flat", "folders", "kaggle"])
def test_imagenet_labels_and_boxes(imagenet_dirs, layout):
    bench = ImageNetVal(imagenet_dirs[layout], model=tiny(1000), target_layer="1")
    assert len(bench) == 3 and not bench.multilabel and bench.num_classes == 1000
    assert bench.class_names[7] == VGG16_Weights.IMAGENET1K_V1.meta["categories"][7] == "cock"
    assert bench.wnids == FAKE_WNIDS
    s = bench.sample(0)  # ILSVRC2012_val_00000001: class n00000007, 300x200, boxes as hand-computed above
    assert s.label.item() == 7 and s.label.dtype == torch.long
    assert torch.allclose(s.boxes, torch.tensor([[0.0, 9.6, 112, 137.6], [0, 0, 224, 224]]), atol=1e-4)
    assert s.box_labels.tolist() == [7, 7]
    assert [bench.sample(i).label.item() for i in (1, 2)] == [3, 999]
    assert torch.allclose(bench.sample(2).boxes, torch.tensor([[0.0, 0, 224, 224]]))
    flat = ImageNetVal(imagenet_dirs["flat"], model=tiny(1000), target_layer="1")
    assert torch.equal(s.x, flat.sample(0).x)  # same image whichever layout


def test_imagenet_devkit_labels(imagenet_dirs):
    # devkit ILSVRC2012_IDs are a permutation of the classes; labels must come back in torchvision order
    bench = ImageNetVal(imagenet_dirs["devkit"], model=tiny(1000), target_layer="1", require_boxes=False)
    assert [bench.sample(i).label.item() for i in range(3)] == [7, 3, 999]
    assert bench.sample(0).boxes.shape == (0, 4)
    with pytest.raises(FileNotFoundError, match=re.escape(str(imagenet_dirs["devkit"] / "bbox" / "val"))):
        ImageNetVal(imagenet_dirs["devkit"], model=tiny(1000), target_layer="1")


def test_imagenet_needs_the_class_list(tmp_path):
    root = make_imagenet(tmp_path, "flat")
    (root / "LOC_synset_mapping.txt").unlink()
    with pytest.raises(ValueError, match="found 3.*LOC_synset_mapping.txt"):
        ImageNetVal(root, model=tiny(1000), target_layer="1")


# ---- VOC 2007 -------------------------------------------------------------------------------
def test_voc_multi_hot_labels_and_boxes(voc_dir):
    bench = VOC2007(voc_dir, model=tiny(20), target_layer="1")
    assert len(bench) == 6 and bench.multilabel and bench.class_names[11] == "dog"
    s = bench.sample(0)  # 000001, 250x200 -> 224x224: scale (0.896, 1.12); VOC boxes are 1-based inclusive
    assert s.label.shape == (20,) and s.label.nonzero().flatten().tolist() == [11, 14]  # dog, person
    expected = torch.tensor([[10 * .896, 20 * 1.12, 110 * .896, 120 * 1.12], [100 * .896, 0, 224, 224],
                             [200 * .896, 150 * 1.12, 240 * .896, 190 * 1.12]])
    assert torch.allclose(s.boxes, expected, atol=1e-4) and s.box_labels.tolist() == [11, 14, 11]
    assert torch.allclose(bright_extent(s.x, bench.mean, bench.std), expected[0], atol=1.5)
    batch = next(bench.images(n=None, seed=0, batch_size=4))
    assert batch.x.shape == (4, 3, 224, 224) and batch.labels.shape == (4, 20)
    i = batch.index.tolist().index(0) if 0 in batch.index.tolist() else None
    if i is not None:
        assert batch.boxes_for(i, 11).shape == (2, 4)
    assert torch.allclose(bench.mean, torch.tensor(CAFFE_MEAN))
    assert "host.robots.ox.ac.uk" in bench.card() and "| images | 6 |" in bench.card()


def test_voc_skip_difficult_and_root_variants(voc_dir):
    bench = VOC2007(voc_dir / "VOCdevkit" / "VOC2007", model=tiny(20), target_layer="1", skip_difficult=True)
    s = bench.sample(0)
    assert s.label.nonzero().flatten().tolist() == [11] and s.box_labels.tolist() == [11, 11]
    assert bench.sample(3).label.sum() == 0 and bench.sample(3).boxes.shape == (0, 4)  # only a difficult sofa


def test_voc_aspect_kept_needs_batch_size_1(voc_dir):
    bench = VOC2007(voc_dir, model=tiny(20), target_layer="1", size=224)
    assert bench.sample(0).x.shape == (3, 224, 280)  # 250x200: shorter side 224
    with pytest.raises(ValueError, match="batch_size=1"):
        next(bench.images(n=2, batch_size=2))
    assert len(list(bench.images(n=2, batch_size=1))) == 2


# ---- COCO 2014 ------------------------------------------------------------------------------
def test_coco_contiguous_ids_and_boxes(coco_dir):
    bench = COCO2014(coco_dir, model=tiny(3), target_layer="1")
    assert bench.class_names == ["person", "car", "dog"]  # category ids 1, 3, 18 -> 0, 1, 2
    assert len(bench) == 2  # image 99 has no objects
    s7, s42 = bench.sample(0), bench.sample(1)  # image-id order
    assert s7.label.tolist() == [0, 1, 0] and s42.label.tolist() == [1, 0, 1]  # the crowd person counts
    sx, sy = 224 / 200, 224 / 200
    assert torch.allclose(s7.boxes, torch.tensor([[5.5 * sx, 6.5 * sy, 55.5 * sx, 66.5 * sy]]), atol=1e-4)
    sx, sy = 224 / 320, 224 / 240  # [x, y, w, h] -> xyxy, then scaled
    expected = torch.tensor([[10 * sx, 20 * sy, 110 * sx, 70 * sy], [0, 0, 32 * sx, 24 * sy]])
    assert torch.allclose(s42.boxes, expected, atol=1e-4)
    assert s42.box_labels.tolist() == [2, 0]
    assert len(COCO2014(coco_dir, model=tiny(3), target_layer="1", include_empty=True)) == 3
    no_crowd = COCO2014(coco_dir, model=tiny(3), target_layer="1", skip_crowd=True)
    assert no_crowd.sample(1).label.tolist() == [0, 0, 1]


# ---- seeded subsets ---------------------------------------------------------------------------
def test_seeded_subset(voc_dir):
    bench = VOC2007(voc_dir, model=tiny(20), target_layer="1")
    first = [b.index.tolist() for b in bench.images(n=3, seed=0, batch_size=2)]
    again = [b.index.tolist() for b in bench.images(n=3, seed=0, batch_size=2)]
    assert first == again and sum(first, []) == bench.subset(3, seed=0)
    assert len({tuple(bench.subset(3, seed=s)) for s in range(5)}) > 1  # other seeds, other images
    x0 = torch.cat([b.x for b in bench.images(n=3, seed=0)])
    x1 = torch.cat([b.x for b in VOC2007(voc_dir, model=tiny(20), target_layer="1").images(n=3, seed=0)])
    assert torch.equal(x0, x1)


# ---- clear errors -----------------------------------------------------------------------------
def test_missing_data_folders(tmp_path, monkeypatch, voc_dir, coco_dir):
    monkeypatch.delenv("CAM_CORE_VOC", raising=False)
    with pytest.raises(ValueError, match="CAM_CORE_VOC"):
        cc.benchmarks.load("voc2007", data_dir=None, device="cpu")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        cc.benchmarks.load("voc2007", data_dir=tmp_path / "nope", device="cpu")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "VOCdevkit" / "VOC2007"))):
        cc.benchmarks.load("voc2007", data_dir=tmp_path, device="cpu")
    broken = make_voc(tmp_path / "v")
    (broken / "VOCdevkit/VOC2007/ImageSets/Main/test.txt").unlink()
    split_file = broken / "VOCdevkit/VOC2007/ImageSets/Main/test.txt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(split_file))):
        VOC2007(broken, model=tiny(20), target_layer="1")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "val2014"))):
        cc.benchmarks.load("coco2014", data_dir=tmp_path, device="cpu")
    (tmp_path / "val2014").mkdir()
    ann = tmp_path / "annotations" / "instances_val2014.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(ann))):
        cc.benchmarks.load("coco2014", data_dir=tmp_path, device="cpu")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "val"))):
        cc.benchmarks.load("imagenet", data_dir=tmp_path, device="cpu")
    monkeypatch.setenv("CAM_CORE_COCO", str(coco_dir))  # the environment variable is a data_dir
    assert len(COCO2014(model=tiny(3), target_layer="1")) == 2
    with pytest.raises(ValueError, match="not a layer"):
        VOC2007(voc_dir, model=tiny(20), target_layer="features.29")


def test_missing_weights_say_where_to_get_them(tmp_path, monkeypatch, voc_dir):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("CAM_CORE_VGG16_WEIGHTS", raising=False)
    monkeypatch.delenv("CAM_CORE_VGG16_VOC_WEIGHTS", raising=False)

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError) as err:
        checkpoint_path("vgg", "imagenet")
    for part in ("vgg16-397923af.pth", str(hub), "https://download.pytorch.org/models/vgg16-397923af.pth",
                 "weights=", "CAM_CORE_VGG16_WEIGHTS", "download=True"):
        assert part in str(err.value)
    with pytest.raises(FileNotFoundError, match="vgg16_voc-b050e8c3.pth.tar.*dl.fbaipublicfiles.com/"):
        cc.benchmarks.load("voc2007", data_dir=voc_dir, device="cpu")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "mine.pth"))):
        checkpoint_path("resnet", "imagenet", weights=tmp_path / "mine.pth")
    monkeypatch.setenv("CAM_CORE_VGG16_WEIGHTS", str(tmp_path / "env.pth"))
    with pytest.raises(FileNotFoundError, match="CAM_CORE_VGG16_WEIGHTS"):
        checkpoint_path("vgg", "imagenet")
    monkeypatch.delenv("CAM_CORE_VGG16_WEIGHTS")
    hub.mkdir(parents=True)
    (hub / "vgg16-397923af.pth").write_bytes(b"")  # found in the hub cache
    assert checkpoint_path("vgg", "imagenet") == hub / "vgg16-397923af.pth"
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, **k: calls.append(url)
                        or Path(dst).write_bytes(b""))
    assert checkpoint_path("vgg", "coco", download=True) == hub / "vgg16_coco-d82c8150.pth.tar"
    assert calls == ["https://dl.fbaipublicfiles.com/torchray/vgg16_coco-d82c8150.pth.tar"]
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "bad.pth"))):
        build_model("vgg", "imagenet", weights=tmp_path / "bad.pth")


# ---- the checkpoints: randomly initialised networks saved and loaded back ----------------------
@pytest.fixture
def ckpt_dir(tmp_path):
    """Where the test checkpoints go: RAM (/dev/shm) when there is one, as VGG16's is 553 MB."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(dir=shm, prefix="cam_core_test_"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def vgg_random() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).eval()  # built once: 138M parameters


def test_vgg16_imagenet_from_a_path(vgg_random, imagenet_dirs, ckpt_dir):
    torch.save(vgg_random.state_dict(), ckpt_dir / "vgg16.pth")
    bench = cc.benchmarks.load("imagenet", data_dir=imagenet_dirs["flat"], device="cpu",
                               weights=ckpt_dir / "vgg16.pth")
    assert bench.target_layer == "features.29" and bench.arch == "vgg" and not bench.model.training
    x = next(bench.images(n=1, seed=0)).x[..., 80:144, 80:144]  # a 64 px patch keeps the forward cheap
    with torch.no_grad():
        assert torch.equal(bench.model(x), vgg_random(x))
    card = bench.card()
    assert str(ckpt_dir / "vgg16.pth") in card and "71.59" in card and "image-net.org" in card
    assert "imagenet" in cc.benchmarks.available()


def test_torchray_vgg16_caffe_checkpoint(vgg_random, voc_dir, ckpt_dir):
    # TorchRay's Caffe layout: no dropout slots in the classifier, 4-D FC weights, BGR first conv
    sd = vgg_random.state_dict()
    caffe = {k: v for k, v in sd.items() if k.startswith("features.")}
    caffe["features.0.weight"] = sd["features.0.weight"][:, [2, 1, 0]]
    caffe["classifier.0.weight"] = sd["classifier.0.weight"].reshape(4096, 512, 7, 7)
    caffe["classifier.0.bias"] = sd["classifier.0.bias"]
    for old, new in (("3", "2"), ("6", "4")):
        caffe[f"classifier.{new}.weight"] = sd[f"classifier.{old}.weight"]
        caffe[f"classifier.{new}.bias"] = sd[f"classifier.{old}.bias"]
    caffe["classifier.4.weight"] = caffe["classifier.4.weight"][:20]  # a 20-way last layer
    caffe["classifier.4.bias"] = caffe["classifier.4.bias"][:20]
    torch.save(caffe, ckpt_dir / "vgg16_voc.pth.tar")
    bench = VOC2007(voc_dir, weights=ckpt_dir / "vgg16_voc.pth.tar")
    assert all(m.ceil_mode for m in bench.model.modules() if isinstance(m, nn.MaxPool2d))
    x = next(bench.images(n=1)).x[..., :64, :64]
    with torch.no_grad():  # at 64 px every max-pool sees an even size: ceil_mode changes nothing
        assert torch.allclose(bench.model(x), vgg_random(x)[:, :20], atol=1e-4)


def test_resnet50_checkpoints(ckpt_dir):
    torch.manual_seed(1)
    ref = torchvision.models.resnet50(weights=None).eval()
    torch.save(ref.state_dict(), ckpt_dir / "r50.pth")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(build_model("resnet", "imagenet", weights=ckpt_dir / "r50.pth")(x), ref(x))
    # TorchRay's Caffe ResNet50: conv1 with bias, max-pool without padding, stride on the 1x1 conv
    caffe_ref = torchvision.models.resnet50(weights=None, num_classes=80).eval()
    caffe_ref.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=True)
    caffe_ref.maxpool = nn.MaxPool2d(3, 2, 0, ceil_mode=True)
    for i in (2, 3, 4):
        blk = getattr(caffe_ref, f"layer{i}")[0]
        blk.conv1.stride, blk.conv2.stride = (2, 2), (1, 1)
    caffe = {}
    for k, v in caffe_ref.state_dict().items():
        k = re.sub(r"(bn\d|downsample\.1)\.(weight|bias)$", r"\1.1.\2", k)  # Caffe "Scale" layer
        k = re.sub(r"(bn\d|downsample\.1)\.(running_mean|running_var|num_batches_tracked)$", r"\1.0.\2", k)
        caffe[k] = v
    caffe["conv1.weight"] = caffe["conv1.weight"][:, [2, 1, 0]]
    torch.save(caffe, ckpt_dir / "r50_coco.pth.tar")
    model = build_model("resnet", "coco", weights=ckpt_dir / "r50_coco.pth.tar")
    with torch.no_grad():
        assert torch.allclose(model(x), caffe_ref(x), atol=1e-5)
