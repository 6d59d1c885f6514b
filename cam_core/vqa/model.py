"""The basic VQA model of Antol et al. (ICCV 2015), as explained in Section 4.4 of Jung & Oh (2021).

``logits = classifier(tanh(image_encoder(x)) * tanh(question_encoder(q)))``: a CNN image encoder
with a non-linear head (conv blocks, max-pool, FC layers, tanh), an LSTM question encoder
(tanh), elementwise-product fusion, and an MLP over the answers.

CAM methods explain an image -> logits model, so :meth:`VQAModel.bind` fixes the questions::

    bound = model.bind(questions)          # questions: (N, T) token ids
    cc.LiftCAM(bound, model.target_layer)(images)   # images: (N, 3, H, W)

The bound module shares the image CNN and the classifier (same dotted names), holds the N
question embeddings fixed, and follows the tile layout of ``cam_core.methods.base``: a batch
of ``R * N`` images uses question ``b % N`` for row ``b``. Its :meth:`BoundVQA.cam_split`
gives ``head = rest of the CNN -> FC -> tanh -> (* fixed question embedding) -> classifier``,
made only of modules DeepLIFT has rules for; the product with a fixed tensor is linear in the
activations, so DeepLIFT passes multipliers through it by the chain rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from cam_core.kernels.rescale import LINEAR_MODULES


@dataclass(frozen=True)
class VQAConfig:
    """Sizes of a :class:`VQAModel`; saved with every checkpoint."""

    num_words: int
    num_answers: int
    backbone: str = "small"  # "small" (64 px, embedded benchmark) or "vgg16" (224 px, VQA v2)
    word_dim: int = 32
    lstm_hidden: int = 96
    embed_dim: int = 128  # the shared embedding space of image and question
    classifier_hidden: int = 128
    dropout: float = 0.1
    coords: bool = False  # "small" only: CoordConv channels at the input (see AddCoords)
    map_size: int = 16  # "small" only: side of the last conv maps, 16 (two 2x2 pools) or 8 (three)


class FixedMultiply(nn.Module):
    """``y = x * context[b % N]``: elementwise product with a fixed (N, D) tensor, tile layout.

    Linear in ``x`` for a fixed context, so DeepLIFT's multiplier through it is ``context``.
    """

    def __init__(self, context: Tensor) -> None:
        super().__init__()
        if context.dim() != 2:
            raise ValueError(f"context must be (N, D), got shape {tuple(context.shape)}")
        self.register_buffer("context", context.detach().clone())

    def forward(self, x: Tensor) -> Tensor:  # (R*N, D) -> (R*N, D)
        n = self.context.shape[0]
        if x.dim() != 2 or x.shape[1] != self.context.shape[1] or x.shape[0] % n != 0:
            raise ValueError(
                f"FixedMultiply holds {n} contexts of size {self.context.shape[1]}; "
                f"its input must be (R*{n}, "
                f"{self.context.shape[1]}) in tile layout (row b uses context b % {n}), got {tuple(x.shape)}"
            )
        return x * self.context.repeat(x.shape[0] // n, 1)

    def extra_repr(self) -> str:
        return f"contexts={self.context.shape[0]}, dim={self.context.shape[1]}"


# the product with a fixed tensor is linear in x: DeepLIFT passes multipliers by the chain rule
LINEAR_MODULES.add(FixedMultiply)


class ImageEncoder(nn.Module):
    """``fc(pool(features(x)))``: conv feature extractor, a pool, then FC layers ending in tanh."""

    def __init__(self, features: nn.Sequential, pool: nn.Module, fc: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.pool = pool
        self.fc = fc

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) -> (N, D)
        return self.fc(self.pool(self.features(x)))


class AddCoords(nn.Module):
    """Append two channels holding each pixel's x and y in [0, 1] (CoordConv, Liu et al., 2018).

    With them a channel can carry *where* a feature is, so that a global max-pool keeps the
    positions the relation questions ("left of", "nearest to") need. Part of the body (before
    the explained layer), so no DeepLIFT rule is needed for it.
    """

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W) -> (N, C + 2, H, W)
        n, _, h, w = x.shape
        ys = torch.linspace(0, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = torch.linspace(0, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return torch.cat([x, xs, ys], dim=1)


def small_image_encoder(embed_dim: int, coords: bool = False, map_size: int = 16) -> ImageEncoder:
    """VGG-style CNN for 64 px scenes: conv-BN-ReLU blocks with max-pools (last maps 16x16, or 8x8
    with ``map_size=8``), a last max-pool (global), FC-ReLU-FC-BN-tanh.

    The last max-pool is global rather than VGG16's 2x2: with a 2x2 pool and a flatten the small FC
    head has to learn every position apart, and in our runs it never learned to tell the shapes
    apart within the CPU budget. The committed model (``python -m cam_core train-vqa``) keeps 16x16
    maps and is trained with an L1 penalty on them (``TrainConfig.activity_l1``): with 8x8 maps and
    no penalty, 61-65% of LIFT-CAM's energy lay on the background (the maps' resolution alone
    caps the box's share at 66% for an ideal 8x8 map of an 8%-of-the-image box, 82% at 16x16) and
    ~1% of single-object questions had more than half of it in the object's box; with both, 92%.
    ``coords=True`` appends CoordConv channels (:class:`AddCoords`); it did not help the relation
    questions in our runs and spread the maps further, so it is off by default.
    """

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    if map_size not in (8, 16):
        raise ValueError(f"map_size must be 8 or 16, got {map_size}")
    features = nn.Sequential(
        AddCoords() if coords else nn.Identity(),  # (N, 5, 64, 64) or (N, 3, 64, 64)
        *block(5 if coords else 3, 16),
        nn.MaxPool2d(2),  # 64 -> 32
        *block(16, 32),
        nn.MaxPool2d(2),  # 32 -> 16
        *block(32, 64),
        *([nn.MaxPool2d(2)] if map_size == 8 else []),  # 16 -> 8
        *block(64, 64),
        *block(64, 64),  # the last conv layer's maps (after BN, ReLU), (N, 64, map_size, map_size)
        nn.MaxPool2d(map_size),  # the last max-pool, global: (N, 64, 1, 1)
    )
    # BatchNorm1d before the tanh keeps the embedding from saturating into a constant early in
    # training (without it the image path collapses and the model learns only the answer prior);
    # in eval mode it is affine, so DeepLIFT passes through it by the chain rule.
    fc = nn.Sequential(
        nn.Flatten(1),
        nn.Linear(64, 256),
        nn.ReLU(),
        nn.Linear(256, embed_dim),
        nn.BatchNorm1d(embed_dim),
        nn.Tanh(),
    )
    return ImageEncoder(features, nn.Identity(), fc)


def vgg16_image_encoder(embed_dim: int, dropout: float = 0.5) -> ImageEncoder:
    """torchvision VGG16 (features, 7x7 avg-pool, fc6, fc7) + Linear(4096, D) + tanh, as Antol et al.

    Weights are not downloaded: load them from a checkpoint (see :func:`cam_core.vqa.vqa2.load_vqa2_model`).
    The last conv layer's maps are ``image_encoder.features.29`` (after its ReLU), as the paper's VGG16.
    """
    from torchvision.models import vgg16

    vgg = vgg16(weights=None)
    fc = nn.Sequential(
        nn.Flatten(1), *list(vgg.classifier.children())[:-1], nn.Linear(4096, embed_dim), nn.Tanh()
    )
    return ImageEncoder(vgg.features, vgg.avgpool, fc)


class QuestionEncoder(nn.Module):
    """tanh word embeddings -> LSTM -> [last hidden state, last cell state] -> Linear -> tanh.

    As Antol et al., the question embedding is read from both the hidden and the cell state of
    the LSTM at each question's last word (the cell state keeps the early content words, e.g.
    the colour in "what shape is the red object ?", within reach of the gradient).
    """

    def __init__(self, num_words: int, word_dim: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_words, word_dim, padding_idx=0)
        self.lstm = nn.LSTM(word_dim, hidden, batch_first=True)
        self.fc = nn.Sequential(nn.Linear(2 * hidden, embed_dim), nn.Tanh())

    def forward(self, tokens: Tensor) -> Tensor:  # (N, T) -> (N, D)
        if tokens.dim() != 2:
            raise ValueError(f"questions must be (N, T) token ids, got shape {tuple(tokens.shape)}")
        lengths = (tokens != 0).sum(dim=1).clamp_min(1)  # (N,)
        packed = nn.utils.rnn.pack_padded_sequence(
            torch.tanh(self.embedding(tokens)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h, c) = self.lstm(packed)  # (1, N, H) each, at each question's last word
        return self.fc(torch.cat([h[0], c[0]], dim=1))  # (N, 2H) -> (N, D)


class VQAModel(nn.Module):
    """Antol et al.'s basic VQA model: ``model(images, questions) -> (N, num_answers)`` logits."""

    def __init__(self, config: VQAConfig) -> None:
        super().__init__()
        self.config = config
        if config.backbone == "small":
            self.image_encoder = small_image_encoder(config.embed_dim, config.coords, config.map_size)
            # the last conv layer's maps: the output of the last ReLU (features.17 with 16x16 maps)
            self.target_layer = f"image_encoder.features.{len(self.image_encoder.features) - 2}"
        elif config.backbone == "vgg16":
            self.image_encoder = vgg16_image_encoder(config.embed_dim)
            self.target_layer = "image_encoder.features.29"
        else:
            raise ValueError(f"unknown backbone {config.backbone!r}; use 'small' or 'vgg16'")
        self.question_encoder = QuestionEncoder(
            config.num_words, config.word_dim, config.lstm_hidden, config.embed_dim
        )
        self.classifier = nn.Sequential(
            nn.Linear(config.embed_dim, config.classifier_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.classifier_hidden, config.num_answers),
        )

    def forward(self, images: Tensor, questions: Tensor) -> Tensor:  # (N, 3, H, W), (N, T) -> (N, A)
        return self.classifier(self.image_encoder(images) * self.question_encoder(questions))

    def bind(self, questions: Tensor) -> BoundVQA:
        """An image -> logits module with ``questions`` (N, T) encoded once and held fixed (tile layout)."""
        questions = torch.as_tensor(questions, device=next(self.parameters()).device).long()
        was = [(m, m.training) for m in self.question_encoder.modules()]
        try:
            self.question_encoder.eval()
            with torch.no_grad():
                q = self.question_encoder(questions)  # (N, D)
        finally:
            for m, flag in was:
                m.training = flag
        return BoundVQA(self.image_encoder, q, self.classifier)

    def config_dict(self) -> dict:
        return asdict(self.config)


class BoundVQA(nn.Module):
    """``x -> classifier(image_encoder(x) * q[b % N])`` with N fixed question embeddings ``q``.

    Shares ``image_encoder`` and ``classifier`` with the :class:`VQAModel` it came from.
    """

    def __init__(
        self, image_encoder: ImageEncoder, question_embedding: Tensor, classifier: nn.Sequential
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.fuse = FixedMultiply(question_embedding)
        self.classifier = classifier

    @property
    def num_questions(self) -> int:
        return self.fuse.context.shape[0]

    def forward(self, x: Tensor) -> Tensor:  # (R*N, 3, H, W) -> (R*N, A)
        return self.classifier(self.fuse(self.image_encoder(x)))

    def cam_split(self, target_layer: str) -> tuple[nn.Module, nn.Module]:
        """``body``: the CNN up to ``target_layer``; ``head``: the rest of the CNN, pool, FC, tanh,
        the product with the fixed question embedding, the classifier. ``head(body(x)) == self(x)``."""
        prefix = "image_encoder.features"
        feats = list(self.image_encoder.features.children())
        if target_layer == prefix:
            cut = len(feats)
        elif target_layer.startswith(prefix + ".") and target_layer[len(prefix) + 1 :].isdigit():
            cut = int(target_layer[len(prefix) + 1 :]) + 1
        else:
            raise ValueError(
                f"BoundVQA splits only inside the image CNN: target_layer must be '{prefix}.<i>' "
                f"(0 .. {len(feats) - 1}), got {target_layer!r}"
            )
        if not 0 < cut <= len(feats):
            raise ValueError(
                f"{target_layer!r} is out of range: the image CNN has layers 0 .. {len(feats) - 1}"
            )
        head = [
            *feats[cut:],
            self.image_encoder.pool,
            *self.image_encoder.fc.children(),
            self.fuse,
            *self.classifier.children(),
        ]
        return nn.Sequential(*feats[:cut]), nn.Sequential(*head)
