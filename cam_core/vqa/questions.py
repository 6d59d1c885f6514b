"""Templated questions about a :class:`~cam_core.vqa.scenes.Scene`, their answers and a tokeniser.

Four question types; each records the objects it is about (``refs``, the answer's object
first), so localization can be measured against their boxes:

- ``shape`` (one object): "what shape is the red object ?" -> a shape
- ``colour`` (one object): "what colour is the square ?" -> a colour
- ``left`` (two objects): "is the red object left of the circle ?" -> yes / no
- ``nearest`` (two objects): "what colour is the object nearest to the triangle ?" -> a colour
  (refs: the nearest object, then the triangle)

Relations are only asked when they are unambiguous (centres at least ``MARGIN`` pixels apart
horizontally for ``left``; the nearest object at least ``MARGIN`` pixels nearer than the next).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor

from cam_core.vqa.scenes import COLOURS, SHAPES, Scene

QUESTION_TYPES: tuple[str, ...] = ("shape", "colour", "left", "nearest")
SINGLE_OBJECT_TYPES: tuple[str, ...] = ("shape", "colour")
ANSWERS: tuple[str, ...] = (*SHAPES, *COLOURS, "yes", "no")
MARGIN = 3.0
PAD, UNK = "<pad>", "<unk>"
_TEMPLATE_WORDS = "what shape is the object colour left of nearest to ?".split()
WORDS: tuple[str, ...] = (PAD, UNK, *dict.fromkeys([*_TEMPLATE_WORDS, *SHAPES, *COLOURS]))
MAX_LEN = 10


@dataclass(frozen=True)
class Question:
    text: str
    qtype: str
    answer: str
    refs: tuple[int, ...]  # indices into scene.objects, the answer's object first


def ask(scene: Scene, qtype: str, rng: random.Random) -> Question | None:
    """One random question of type ``qtype`` about ``scene`` (None when that type has no unambiguous one)."""
    objs = scene.objects
    n = len(objs)
    if qtype == "shape":
        i = rng.randrange(n)
        return Question(f"what shape is the {objs[i].colour} object ?", qtype, objs[i].shape, (i,))
    if qtype == "colour":
        i = rng.randrange(n)
        return Question(f"what colour is the {objs[i].shape} ?", qtype, objs[i].colour, (i,))
    if qtype == "left":
        pairs = [
            (i, j) for i in range(n) for j in range(n) if i != j and abs(objs[i].cx - objs[j].cx) >= MARGIN
        ]
        if not pairs:
            return None
        i, j = rng.choice(pairs)
        answer = "yes" if objs[i].cx < objs[j].cx else "no"
        return Question(
            f"is the {objs[i].colour} object left of the {objs[j].shape} ?", qtype, answer, (i, j)
        )
    if qtype == "nearest":
        anchors = []
        for j in range(n):
            d = sorted(
                (math.hypot(objs[i].cx - objs[j].cx, objs[i].cy - objs[j].cy), i) for i in range(n) if i != j
            )
            if len(d) == 1 or d[1][0] - d[0][0] >= MARGIN:
                anchors.append((j, d[0][1]))
        if not anchors:
            return None
        j, i = rng.choice(anchors)
        return Question(
            f"what colour is the object nearest to the {objs[j].shape} ?", qtype, objs[i].colour, (i, j)
        )
    raise ValueError(f"unknown question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")


def questions_for(
    scene: Scene, seed: int, index: int, types: tuple[str, ...] = QUESTION_TYPES, per_type: int = 1
) -> list[Question]:
    """Up to ``per_type`` distinct questions of each type in ``types`` for scene ``index``, in rounds
    (one of each type per round; a type with no unambiguous question is skipped)."""
    rng = random.Random(f"shapes-vqa-q/{int(seed)}/{int(index)}")
    out: list[Question] = []
    seen: set[str] = set()
    for _ in range(per_type):
        for t in types:
            q = ask(scene, t, rng)
            if q is not None and q.text not in seen:
                seen.add(q.text)
                out.append(q)
    return out


class Tokenizer:
    """Word-level tokeniser over a fixed vocabulary: ``<pad>`` = 0, ``<unk>`` = 1, right padding."""

    def __init__(self, words: tuple[str, ...] | list[str] = WORDS, max_len: int = MAX_LEN) -> None:
        if len(words) < 2 or words[0] != PAD or words[1] != UNK:
            raise ValueError(f"the vocabulary must start with {PAD!r}, {UNK!r}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_len = int(max_len)

    def __len__(self) -> int:
        return len(self.words)

    @staticmethod
    def split(text: str) -> list[str]:
        return text.lower().replace("?", " ?").replace(",", " ").split()

    def encode(self, text: str) -> Tensor:
        """(max_len,) long token ids; longer questions are truncated."""
        ids = [self.index.get(w, 1) for w in self.split(text)][: self.max_len]
        return torch.tensor(ids + [0] * (self.max_len - len(ids)), dtype=torch.long)

    def encode_batch(self, texts: list[str]) -> Tensor:
        return torch.stack([self.encode(t) for t in texts])  # (B, max_len)

    def decode(self, ids: Tensor) -> str:
        return " ".join(self.words[i] for i in ids.tolist() if i != 0)
