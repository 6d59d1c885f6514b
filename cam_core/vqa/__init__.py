"""Visual question answering (Section 4.4 of Jung & Oh, 2021): the embedded ``shapes-vqa``
benchmark, Antol et al.'s basic VQA model, its training, and a VQA v2 loader.

``model.bind(questions)`` turns the two-input model into the image -> logits model every CAM
method explains (question embeddings held fixed; see :mod:`cam_core.vqa.model`).

May import: every package but book (benchmarks for the benchmark API, evaluation's statistics
for intervals; see cam_core/ARCHITECTURE.md).
"""

from cam_core.vqa.model import BoundVQA, FixedMultiply, VQAConfig, VQAModel
from cam_core.vqa.questions import ANSWERS, QUESTION_TYPES, SINGLE_OBJECT_TYPES, WORDS, Tokenizer

__all__ = [
    "ANSWERS",
    "QUESTION_TYPES",
    "SINGLE_OBJECT_TYPES",
    "WORDS",
    "BoundVQA",
    "FixedMultiply",
    "Tokenizer",
    "VQAConfig",
    "VQAModel",
]
