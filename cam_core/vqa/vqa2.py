"""VQA v2 validation (Goyal et al., 2017) with COCO val2014 images, and a VGG16 basic VQA model.

Expected layout of ``data_dir`` (the file names of https://visualqa.org/download.html)::

    data_dir/v2_OpenEnded_mscoco_val2014_questions.json
    data_dir/v2_mscoco_val2014_annotations.json
    data_dir/val2014/COCO_val2014_000000262148.jpg ...     (COCO 2014 val, https://cocodataset.org)
    data_dir/vqa_vgg16.pt     (or checkpoint=...)   state dict of VQAModel(backbone="vgg16")
    data_dir/vqa_vocab.json   (or vocab=...)        {"question_vocab": [...], "answers": [...]}

The checkpoint is a ``state_dict`` of :class:`cam_core.vqa.model.VQAModel` with
``backbone="vgg16"``, whose sizes are read from the tensors, or ``{"state_dict": ..., "config":
{...}}`` with the :class:`~cam_core.vqa.model.VQAConfig` fields (any backbone).
``question_vocab`` is a list of words (index = token id) or a
``{word: id}`` map; id 0 must be padding, unknown words map to ``"<unk>"`` (or id 1).
``answers`` is the list of answers (index = class id), e.g. the 1,000 most frequent ones that
the public basic VQA code trains on. Nothing is downloaded.

Questions whose most common answer (``multiple_choice_answer``) is not among the model's
answers are left out (``only_known_answers=True``), as the paper's model cannot predict them.
There are no boxes: ``batch.boxes`` are empty (VQA v2 has no question-level grounding).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cam_core.benchmarks.base import Sample
from cam_core.vqa.benchmark import VQABenchmark
from cam_core.vqa.model import VQAConfig, VQAModel

QUESTIONS_FILE = "v2_OpenEnded_mscoco_val2014_questions.json"
ANNOTATIONS_FILE = "v2_mscoco_val2014_annotations.json"
IMAGES_DIR = "val2014"
CHECKPOINT_FILE = "vqa_vgg16.pt"
VOCAB_FILE = "vqa_vocab.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_WHERE = {
    QUESTIONS_FILE: "https://visualqa.org/download.html (Validation questions 2017 v2.0)",
    ANNOTATIONS_FILE: "https://visualqa.org/download.html (Validation annotations 2017 v2.0)",
    IMAGES_DIR: "https://cocodataset.org/#download (2014 Val images)",
    CHECKPOINT_FILE: "a VQAModel(backbone='vgg16') state dict you trained (see cam_core.vqa.vqa2)",
    VOCAB_FILE: "the vocabulary json saved with that checkpoint (question_vocab + answers)",
}


def _need(path: Path, what: str, param: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"VQA v2: {path} is missing. Get {what} from {_WHERE[what]} and put it there, or set {param}."
        )
    return path


def tokenize(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (apostrophes kept), as the basic VQA code does."""
    return re.findall(r"[a-z0-9']+", text.lower())


class VQA2Vocab:
    """Question words -> ids (0 = padding) and the answer list."""

    def __init__(
        self, question_vocab: list[str] | dict[str, int], answers: list[str], max_len: int = 26
    ) -> None:
        self.index = (
            dict(question_vocab)
            if isinstance(question_vocab, dict)
            else {w: i for i, w in enumerate(question_vocab)}
        )
        if 0 in self.index.values() and not any(
            w in ("<pad>", "", "<PAD>") for w, i in self.index.items() if i == 0
        ):
            raise ValueError("question_vocab: id 0 is reserved for padding; shift the word ids by one")
        self.unk = self.index.get("<unk>", self.index.get("UNK", 1))
        self.answers = list(answers)
        self.answer_id = {a: i for i, a in enumerate(self.answers)}
        self.max_len = int(max_len)

    @classmethod
    def load(cls, path: Path) -> VQA2Vocab:
        blob = json.loads(Path(path).read_text())
        missing = {"question_vocab", "answers"} - set(blob)
        if missing:
            raise ValueError(f"{path}: the vocabulary json needs the keys {sorted(missing)}")
        return cls(blob["question_vocab"], blob["answers"], blob.get("max_len", 26))

    def encode(self, text: str) -> Tensor:  # (max_len,)
        ids = [self.index.get(w, self.unk) for w in tokenize(text)][: self.max_len]
        return torch.tensor(ids + [0] * (self.max_len - len(ids)), dtype=torch.long)


def config_from_state_dict(state: dict[str, Tensor], dropout: float = 0.5) -> VQAConfig:
    """The sizes of a VGG16 :class:`VQAModel` read off its state dict."""
    try:
        num_words, word_dim = state["question_encoder.embedding.weight"].shape
        lstm_hidden = state["question_encoder.lstm.weight_hh_l0"].shape[1]
        embed_dim = state["question_encoder.fc.0.weight"].shape[0]
        classifier_hidden = state["classifier.0.weight"].shape[0]
        num_answers = state["classifier.3.weight"].shape[0]
    except KeyError as err:
        raise ValueError(
            f"the checkpoint is not a cam_core.vqa.VQAModel state dict (no {err.args[0]!r})"
        ) from None
    return VQAConfig(
        num_words=num_words,
        num_answers=num_answers,
        backbone="vgg16",
        word_dim=word_dim,
        lstm_hidden=lstm_hidden,
        embed_dim=embed_dim,
        classifier_hidden=classifier_hidden,
        dropout=dropout,
    )


def load_vqa2_model(checkpoint: Path | str, device: torch.device | str = "cpu") -> VQAModel:
    """A VGG16 basic VQA model (eval mode) from a state dict file."""
    blob = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    config = VQAConfig(**blob["config"]) if "config" in blob else config_from_state_dict(state)
    with torch.device("meta"):  # no random initialisation of VGG16's 138M weights: they are loaded next
        model = VQAModel(config)
    model.to_empty(device="cpu")
    model.load_state_dict(state)
    return model.to(device).eval()


class VQA2Benchmark(VQABenchmark):
    """VQA v2 val questions on COCO val2014 images; model: VGG16 basic VQA (``image_encoder.features.29``)."""

    name = "vqa2"
    has_boxes = False  # no question-level grounding
    arch = "vgg"

    def __init__(
        self,
        data_dir: Path | str,
        model: VQAModel,
        vocab: VQA2Vocab,
        image_size: int = 224,
        only_known_answers: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        from torchvision import transforms

        root = Path(data_dir)
        questions = json.loads(_need(root / QUESTIONS_FILE, QUESTIONS_FILE, "data_dir").read_text())[
            "questions"
        ]
        annotations = json.loads(_need(root / ANNOTATIONS_FILE, ANNOTATIONS_FILE, "data_dir").read_text())
        self.image_dir = _need(root / IMAGES_DIR, IMAGES_DIR, "data_dir")
        by_qid = {a["question_id"]: a for a in annotations["annotations"]}
        self.vocab = vocab
        self._records = []
        for q in sorted(questions, key=lambda q: q["question_id"]):
            ann = by_qid.get(q["question_id"])
            if ann is None:
                raise ValueError(f"{ANNOTATIONS_FILE} has no annotation for question_id {q['question_id']}")
            answer = ann["multiple_choice_answer"]
            if only_known_answers and answer not in vocab.answer_id:
                continue
            self._records.append((q["image_id"], q["question"], answer, ann.get("answer_type", "")))
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if model.config.num_answers != len(vocab.answers):
            raise ValueError(
                f"the checkpoint has {model.config.num_answers} answers, the vocabulary "
                f"{len(vocab.answers)}: they must come from the same training run"
            )
        self.target_layer = model.target_layer
        self.class_names = list(vocab.answers)
        self.mean = torch.tensor(IMAGENET_MEAN)
        self.std = torch.tensor(IMAGENET_STD)
        self.image_size = int(image_size)
        self.preprocess = transforms.Compose(
            [
                transforms.Resize((self.image_size, self.image_size)),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self._records)

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / f"COCO_val2014_{image_id:012d}.jpg"

    def sample(self, i: int) -> Sample:
        from PIL import Image

        image_id, text, answer, answer_type = self._records[i]
        path = self.image_path(image_id)
        if not path.is_file():
            raise FileNotFoundError(
                f"VQA v2: image {path} is missing from {self.image_dir} "
                f"(COCO 2014 val images, {_WHERE[IMAGES_DIR]})"
            )
        with Image.open(path) as img:
            x = self.preprocess(img.convert("RGB"))  # (3, S, S)
        label = self.vocab.answer_id.get(answer, -1)
        return Sample(
            x=x,
            label=torch.tensor(label),
            boxes=torch.zeros(0, 4),
            box_labels=torch.zeros(0, dtype=torch.long),
            extra={
                "question": self.vocab.encode(text),
                "question_text": text,
                "question_type": answer_type,
                "answer_text": answer,
                "image_id": image_id,
            },
        )


def load_vqa2(
    data_dir: str | None = None,
    device: torch.device | str = "cpu",
    checkpoint: str | None = None,
    vocab: str | None = None,
    image_size: int = 224,
    only_known_answers: bool = True,
    **_: Any,
) -> VQA2Benchmark:
    """Factory of ``vqa2``: files under ``data_dir``; ``checkpoint`` / ``vocab`` default to files there."""
    if data_dir is None:
        raise ValueError(
            f"the vqa2 benchmark needs data_dir (DATA_DIR in the book): a folder with {QUESTIONS_FILE}, "
            f"{ANNOTATIONS_FILE} (https://visualqa.org/download.html), {IMAGES_DIR}/ (COCO 2014 val images) "
            f"and a VGG16 VQA checkpoint {CHECKPOINT_FILE} + {VOCAB_FILE} (or pass checkpoint= and vocab=)."
        )
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"VQA v2: data_dir={str(data_dir)!r} is not a folder; set data_dir (DATA_DIR in the book) to the "
            f"folder holding {QUESTIONS_FILE}, {ANNOTATIONS_FILE} (https://visualqa.org/download.html) and "
            f"{IMAGES_DIR}/ (COCO 2014 val images, https://cocodataset.org/#download)"
        )
    ckpt = _need(Path(checkpoint) if checkpoint else root / CHECKPOINT_FILE, CHECKPOINT_FILE, "checkpoint")
    voc = _need(Path(vocab) if vocab else root / VOCAB_FILE, VOCAB_FILE, "vocab")
    model = load_vqa2_model(ckpt, device=device)
    return VQA2Benchmark(
        root,
        model,
        VQA2Vocab.load(voc),
        image_size=image_size,
        only_known_answers=only_known_answers,
        device=device,
    )
