"""VQA benchmarks: ``shapes-vqa`` (embedded, generated here) and ``vqa2`` (VQA v2 val, when present).

A VQA benchmark is a conditioned benchmark: ``bench.model`` takes (images, questions), and
``bench.model_for(batch)`` binds the batch's questions, giving the image -> logits model that
every CAM method and metric explains (the question embedding held fixed, as in the paper's
Section 4.4). ``batch.extra["question"]`` holds the (B, T) token ids, ``"question_text"`` the
text, ``"question_type"`` the template (or VQA v2's answer type).

Boxes (``shapes-vqa``): ``batch.boxes[i]`` are the boxes of the object(s) question ``i`` is
about (the answer's object first), *whatever the answer*; ``batch.box_labels[i]`` is the
answer id for every one of them. The energy pointing game of a question is measured against
the referenced objects' boxes: ``batch.boxes_for(i, label)`` returns them when the target is
the ground-truth answer (it is also the predicted one whenever the model is right); when the
model answers wrong, the right region is still the referenced object, so use ``batch.boxes[i]``
(all boxes of the image are referenced boxes). ``batch.extra["ref_boxes"]`` is a list with
the same boxes, for code that looks for them by that name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from cam_core.benchmarks.base import Batch, Benchmark, Sample, register
from cam_core.vqa.dataset import VQAItem, cached_scene, items, scene_index
from cam_core.vqa.model import BoundVQA, VQAModel
from cam_core.vqa.questions import ANSWERS, QUESTION_TYPES, SINGLE_OBJECT_TYPES, Tokenizer


class VQABenchmark(Benchmark):
    """Common part of the VQA benchmarks: the model is bound to each batch's questions."""

    model: VQAModel

    def model_for(self, batch: Batch) -> BoundVQA:
        if "question" not in batch.extra:
            raise ValueError("a VQA batch needs batch.extra['question'] (B, T) token ids")
        return self.model.bind(batch.extra["question"].to(self.device))

    @torch.no_grad()
    def accuracy(self, n: int | None = None, seed: int = 0, batch_size: int = 256) -> pd.DataFrame:
        """The model's top-1 accuracy (%) on ``n`` seeded questions, overall and per question type,
        beside the majority-answer baseline on the same questions (always answering the most
        frequent answer of that group: what a model that ignores the image can reach at best
        without the question; per type, what a model that reads only the question's type can reach).
        ``ci_low`` / ``ci_high``: the accuracy's 95% bootstrap interval over questions (seeded by ``seed``).
        """
        from cam_core.evaluation.statistics import bootstrap_ci

        qtypes: list[str] = []
        labels, preds = [], []
        was = self.model.training
        self.model.eval()
        try:
            for batch in self.images(n=n, seed=seed, batch_size=batch_size):
                preds.append(self.model(batch.x, batch.extra["question"]).argmax(1).cpu())
                labels.append(batch.labels.cpu())
                qtypes += list(batch.extra.get("question_type", ["all"] * len(batch)))
        finally:
            self.model.train(was)
        df = pd.DataFrame(
            {"type": qtypes, "label": torch.cat(labels).numpy(), "pred": torch.cat(preds).numpy()}
        )
        df["correct"] = df["label"] == df["pred"]

        def row(g: pd.DataFrame) -> dict[str, float]:
            low, high = bootstrap_ci(100 * g["correct"].to_numpy(float), 0.95, seed=seed)
            return {
                "questions": len(g),
                "accuracy": 100 * g["correct"].mean(),
                "ci_low": low,
                "ci_high": high,
                "majority answer": self.class_names[int(g["label"].mode().iloc[0])],
                "majority baseline": 100 * g["label"].value_counts(normalize=True).iloc[0],
            }

        rows = {"all": row(df)} | {t: row(g) for t, g in df.groupby("type", sort=False)}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("question type")


def _to_float_image(img: Any) -> Tensor:
    """uint8 (3, H, W) tensor, float tensor in [0, 1], or PIL image -> float (3, H, W) in [0, 1]."""
    if isinstance(img, Tensor):
        return img.float() / 255 if img.dtype == torch.uint8 else img.float()
    import numpy as np

    arr = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())  # (H, W, 3)
    return arr.permute(2, 0, 1).float() / 255


class ShapesVQABenchmark(VQABenchmark):
    """The embedded VQA benchmark: held-out scenes of the seeded generator and their questions.

    Args:
        model: the trained :class:`VQAModel` (default: the committed checkpoint).
        seed: the generator's seed (the model was trained on the same seed's *train* scenes).
        n_scenes: how many test scenes (about 4 questions each).
        question_types: which templates to ask (default all; ``SINGLE_OBJECT_TYPES`` for localization).
    """

    name = "shapes-vqa"
    arch = "vgg"

    def __init__(
        self,
        model: VQAModel,
        seed: int = 0,
        n_scenes: int = 1500,
        question_types: tuple[str, ...] = QUESTION_TYPES,
        device: torch.device | str = "cpu",
    ) -> None:
        unknown = set(question_types) - set(QUESTION_TYPES)
        if unknown:
            raise ValueError(f"unknown question types {sorted(unknown)}; known: {', '.join(QUESTION_TYPES)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.target_layer = model.target_layer
        self.class_names = list(ANSWERS)
        self.preprocess = _to_float_image
        self.mean = None
        self.std = None
        self.seed = int(seed)
        self.question_types = tuple(question_types)
        self.tokenizer = Tokenizer()
        self._items: list[VQAItem] = items(self.seed, "test", n_scenes, self.question_types)
        self._answer_id = {a: i for i, a in enumerate(ANSWERS)}

    def __len__(self) -> int:
        return len(self._items)

    def object_boxes(self, i: int) -> tuple[Tensor, int]:
        """Boxes of *every* object in question ``i``'s scene (M, 4), and the position among them of
        the object the answer is about (its first referenced object)."""
        item = self._items[i]
        scene = cached_scene(self.seed, scene_index("test", item.scene))
        return torch.tensor([o.box for o in scene.objects], dtype=torch.float32), item.question.refs[0]

    def sample(self, i: int) -> Sample:
        item = self._items[i]
        scene = cached_scene(self.seed, scene_index("test", item.scene))
        q = item.question
        x = (scene.image * 255).round() / 255  # the same 8-bit quantisation the model was trained on
        answer = self._answer_id[q.answer]
        boxes = torch.tensor([scene.objects[r].box for r in q.refs], dtype=torch.float32)  # (M, 4)
        return Sample(
            x=x,
            label=torch.tensor(answer),
            boxes=boxes,
            box_labels=torch.full((len(q.refs),), answer),
            extra={
                "question": self.tokenizer.encode(q.text),
                "question_text": q.text,
                "question_type": q.qtype,
                "answer_text": q.answer,
            },
        )

    def images(self, *args: Any, **kwargs: Any) -> Iterator[Batch]:
        """As :meth:`Benchmark.images`; each batch also carries ``extra["ref_boxes"]`` (= ``batch.boxes``)."""
        for batch in super().images(*args, **kwargs):
            batch.extra["ref_boxes"] = batch.boxes
            yield batch

    def card(self) -> str:
        import json

        from cam_core.vqa.training import DEFAULT_DIR, MANIFEST

        lines = [
            f"# {self.name}",
            "",
            f"{len(self)} held-out questions on 64 px generated scenes (seed {self.seed}), "
            f"types: {', '.join(self.question_types)}; {self.num_classes} answers: {', '.join(ANSWERS)}.",
            f"Model: Antol et al.'s basic VQA (CNN + LSTM, product fusion), CAM layer `{self.target_layer}`.",
        ]
        manifest = Path(DEFAULT_DIR) / MANIFEST
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            lines.append(
                f"Held-out accuracy {m['accuracy']['all']:.1f}% "
                f"(answer prior {m['answer_prior']['all']:.1f}%)."
            )
        return "\n".join(lines) + "\n"


def load_shapes_vqa(
    data_dir: str | None = None,
    device: torch.device | str = "cpu",
    checkpoint: str | None = None,
    seed: int = 0,
    n_scenes: int = 1500,
    question_types: tuple[str, ...] | str = QUESTION_TYPES,
    **_: Any,
) -> ShapesVQABenchmark:
    """Factory of ``shapes-vqa``; ``data_dir`` is ignored (everything is generated), ``checkpoint``
    overrides the committed model; ``question_types="single"`` keeps the single-object questions."""
    from cam_core.vqa.training import load_checkpoint

    if question_types == "single":
        question_types = SINGLE_OBJECT_TYPES
    elif isinstance(question_types, str):
        question_types = tuple(t.strip() for t in question_types.split(","))
    model = load_checkpoint(checkpoint, device=device)
    return ShapesVQABenchmark(
        model, seed=seed, n_scenes=n_scenes, question_types=tuple(question_types), device=device
    )


register(
    "shapes-vqa",
    "cam_core.vqa.benchmark:load_shapes_vqa",
    "embedded VQA: generated scenes of coloured shapes, templated questions, Antol et al.'s model",
)
register(
    "vqa2",
    "cam_core.vqa.vqa2:load_vqa2",
    "VQA v2 val2014 with COCO images and a VGG16 basic VQA model from a checkpoint (needs DATA_DIR)",
)
