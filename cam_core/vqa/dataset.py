"""The embedded VQA dataset: seeded scenes, one question of each type per scene, train/test splits.

Scene ``i`` of split ``"train"`` is ``make_scene(seed, i)``; the test split draws its scenes
from indices ``TEST_OFFSET + i``, so no test scene is ever a training scene. Nothing is stored:
every item is regenerated from ``(seed, split, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from cam_core.vqa.questions import ANSWERS, QUESTION_TYPES, Question, Tokenizer, questions_for
from cam_core.vqa.scenes import COLOURS, SHAPES, Scene, make_scene

TEST_OFFSET = 10_000_000
SPLITS = ("train", "test")


def scene_index(split: str, i: int) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return i if split == "train" else TEST_OFFSET + i


@lru_cache(maxsize=512)
def cached_scene(seed: int, index: int) -> Scene:
    return make_scene(seed, index)


@dataclass(frozen=True)
class VQAItem:
    scene: int  # scene number inside the split
    question: Question


def items(seed: int, split: str, n_scenes: int, types: tuple[str, ...] = QUESTION_TYPES) -> list[VQAItem]:
    """All questions (one per type, when unambiguous) of the first ``n_scenes`` scenes of ``split``."""
    out = []
    for i in range(n_scenes):
        idx = scene_index(split, i)
        out += [VQAItem(i, q) for q in questions_for(cached_scene(seed, idx), seed, idx, types)]
    return out


def render_split(
    seed: int, split: str, n_scenes: int, per_type: int = 1
) -> tuple[Tensor, list[list[Question]], Tensor]:
    """Images of the first ``n_scenes`` scenes as uint8 (S, 3, 64, 64), each scene's questions (up
    to ``per_type`` of each type), and which (shape, colour) pairs each scene holds: (S, 5 * 6)."""
    images, questions, present = [], [], torch.zeros(n_scenes, len(SHAPES) * len(COLOURS))
    colours = list(COLOURS)
    for i in range(n_scenes):
        idx = scene_index(split, i)
        scene = make_scene(seed, idx)
        images.append((scene.image * 255).round().to(torch.uint8))
        questions.append(questions_for(scene, seed, idx, per_type=per_type))
        for o in scene.objects:
            present[i, SHAPES.index(o.shape) * len(COLOURS) + colours.index(o.colour)] = 1.0
    return torch.stack(images), questions, present


def encode_questions(questions: list[Question], tokenizer: Tokenizer) -> tuple[Tensor, Tensor]:
    """Token ids (Q, T) and answer ids (Q,) of a list of questions."""
    answer_id = {a: i for i, a in enumerate(ANSWERS)}
    tokens = tokenizer.encode_batch([q.text for q in questions])
    answers = torch.tensor([answer_id[q.answer] for q in questions], dtype=torch.long)
    return tokens, answers
