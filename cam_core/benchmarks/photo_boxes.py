"""The real photographs of the ``photos`` benchmark: where each one ships, its licence, the ImageNet
classes its object counts as, and one ground-truth box drawn by hand for that object.

Boxes are ``x0, y0, x1, y1`` in pixels of the ORIGINAL photo (x1, y1 exclusive), drawn by looking
at each photo with a 50 px grid over it; the benchmark maps them through the model's resize and crop.
Class ids are ImageNet-1k indices (torchvision's order, which the EfficientNet-Lite checkpoints share).
"""
from __future__ import annotations

from typing import NamedTuple


class Photo(NamedTuple):
    name: str
    package: str  # the pip package whose wheel ships the file (named in the error when it is missing)
    module: str  # the importable module that holds it
    path: str  # inside the module's folder
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the original photo
    classes: tuple[int, ...]  # ImageNet ids the object counts as
    object: str  # what the box holds
    credit: str  # source and licence


_SKIMAGE = "scikit-image sample data (`skimage.data`, licences as its docstrings give them)"

PHOTOS: tuple[Photo, ...] = (
    Photo("grace_hopper", "matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
          (15, 22, 512, 600), (652, 400, 667, 457, 834), "Grace Hopper in uniform",
          "US Navy portrait of Grace Hopper, public domain (work of the US government); matplotlib sample data"),
    Photo("china", "scikit-learn", "sklearn", "datasets/images/china.jpg", (60, 28, 372, 395),
          (698, 442, 663, 832), "the Tower of Buddhist Incense (Summer Palace, Beijing)",
          "danielbuechele on Flickr, CC BY 2.0; scikit-learn sample image"),
    Photo("flower", "scikit-learn", "sklearn", "datasets/images/flower.jpg", (168, 84, 448, 362),
          (985, 309), "a dahlia",
          "vultilion on Flickr, CC BY 2.0; scikit-learn sample image"),
    Photo("chelsea", "scikit-image", "skimage", "data/chelsea.png", (0, 0, 395, 300),
          (281, 282, 283, 284, 285), "Chelsea the cat",
          "Stefan van der Walt, CC0; " + _SKIMAGE),
    Photo("coffee", "scikit-image", "skimage", "data/coffee.png", (172, 18, 412, 305),
          (967, 968, 504), "a cup of espresso",
          "Rachel Michetti (courtesy of Pikolo Espresso Bar), CC0; " + _SKIMAGE),
    Photo("rocket", "scikit-image", "skimage", "data/rocket.jpg", (300, 125, 342, 408),
          (657, 744, 812), "a Falcon 9 rocket on its launch pad",
          "SpaceX (DSCOVR on Falcon 9), released into the public domain; " + _SKIMAGE),
    Photo("motorcycle_left", "scikit-image", "skimage", "data/motorcycle_left.png", (92, 62, 686, 452),
          (665, 670), "a motorcycle",
          "Middlebury 2014 stereo benchmark (Scharstein et al.), as scikit-image redistributes it; " + _SKIMAGE),
    Photo("motorcycle_right", "scikit-image", "skimage", "data/motorcycle_right.png", (48, 14, 630, 452),
          (665, 670), "a motorcycle",
          "Middlebury 2014 stereo benchmark (Scharstein et al.), as scikit-image redistributes it; " + _SKIMAGE),
    Photo("camera", "scikit-image", "skimage", "data/camera.png", (228, 138, 408, 512),
          (872, 759, 732), "a camera on its tripod",
          "Lav Varshney, CC0; " + _SKIMAGE),
)
