"""Training the embedded VQA model: ``python -m cam_core train-vqa [--seed 0] [--out data/vqa]``.

Deterministic under a seed (same seed, same thread count, same torch -> the same weights):
scenes and questions are generated from the seed, the initialisation and the batch order come
from seeded generators. Each step encodes a batch of scenes once and answers all of their
questions (``questions_per_type`` of each type), which is what makes CPU training take minutes.

Writes ``<out>/shapes_vqa.pt`` (config, state dict, vocabulary, answers) and
``<out>/manifest.json`` (seed, sizes, held-out accuracy overall and per question type, the
answer prior, the checkpoint's sha256, the time it took).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cam_core.vqa.dataset import encode_questions, render_split
from cam_core.vqa.model import VQAConfig, VQAModel
from cam_core.vqa.questions import ANSWERS, QUESTION_TYPES, WORDS, Tokenizer

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "data" / "vqa"
CHECKPOINT = "shapes_vqa.pt"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    train_scenes: int = 8_000
    test_scenes: int = 1_500
    epochs: int = 20
    batch_scenes: int = 32
    questions_per_type: int = 3  # training questions per scene and type (the test split asks 1)
    lr: float = 2e-3
    aux_weight: float = 1.0  # weight of the auxiliary "which coloured shapes are here" loss
    weight_decay: float = 1e-5
    coords: bool = False  # CoordConv channels at the image encoder's input
    map_size: int = 16  # side of the last conv maps (the explained layer): 16 or 8
    activity_l1: float = 0.5  # L1 penalty on the mean of the last conv maps (the explained layer)
    activity_warmup: float = 0.3  # share of the steps over which that penalty ramps up from 0
    device: str = "cpu"


def _flatten(per_scene: list[list], tokenizer: Tokenizer) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """(Q,) scene id, (Q, T) tokens, (Q,) answers and (Q,) question types of every question."""
    scene_ids = torch.tensor([s for s, qs in enumerate(per_scene) for _ in qs], dtype=torch.long)
    flat = [q for qs in per_scene for q in qs]
    tokens, answers = encode_questions(flat, tokenizer)
    return scene_ids, tokens, answers, [q.qtype for q in flat]


@torch.no_grad()
def evaluate_accuracy(
    model: VQAModel,
    images: Tensor,
    scene_ids: Tensor,
    tokens: Tensor,
    answers: Tensor,
    qtypes: list[str],
    batch_size: int = 512,
) -> dict[str, float]:
    """Held-out accuracy overall and per question type (in %)."""
    was = model.training
    model.eval()
    try:
        preds = []
        for s in range(0, len(answers), batch_size):
            sl = slice(s, s + batch_size)
            x = images[scene_ids[sl]].float() / 255
            preds.append(model(x, tokens[sl]).argmax(1))
        correct = (torch.cat(preds) == answers).float()
    finally:
        model.train(was)
    out = {"all": 100 * correct.mean().item()}
    for t in QUESTION_TYPES:
        m = torch.tensor([q == t for q in qtypes], device=correct.device)
        if m.any():
            out[t] = 100 * correct[m].mean().item()
    return out


def answer_prior(train_answers: Tensor, answers: Tensor, qtypes: list[str], train_qtypes: list[str]) -> dict:
    """Accuracy (%) of always answering the most frequent training answer: overall and per type."""

    def best(ans: Tensor) -> int:
        return int(torch.bincount(ans, minlength=len(ANSWERS)).argmax())

    out = {"all": 100 * (answers == best(train_answers)).float().mean().item()}
    for t in QUESTION_TYPES:
        m = torch.tensor([q == t for q in qtypes])
        tm = torch.tensor([q == t for q in train_qtypes])
        if m.any():
            out[t] = 100 * (answers[m] == best(train_answers[tm])).float().mean().item()
    return out


def train(cfg: TrainConfig, out_dir: Path | str = DEFAULT_DIR, log: bool = True) -> dict:
    """Train the model, write the checkpoint and the manifest; return the manifest."""
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    tokenizer = Tokenizer()
    tr_images, tr_q, tr_present = render_split(
        cfg.seed, "train", cfg.train_scenes, cfg.questions_per_type
    )  # (S, 3, 64, 64), questions, (S, 30)
    te_images, te_q, _ = render_split(cfg.seed, "test", cfg.test_scenes)
    tr_scene, tr_tok, tr_ans, tr_types = _flatten(tr_q, tokenizer)
    te_scene, te_tok, te_ans, te_types = _flatten(te_q, tokenizer)
    # per training scene: the rows of its questions, padded with -1
    per = max(len(q) for q in tr_q)
    rows = torch.full((cfg.train_scenes, per), -1, dtype=torch.long)
    starts = torch.cumsum(torch.tensor([0] + [len(q) for q in tr_q[:-1]]), 0)
    for s, q in enumerate(tr_q):
        rows[s, : len(q)] = starts[s] + torch.arange(len(q))

    device = torch.device(cfg.device)
    tr_images, rows, tr_ans, tr_tok, tr_present = (
        t.to(device) for t in (tr_images, rows, tr_ans, tr_tok, tr_present)
    )
    te_images, te_scene, te_tok, te_ans = (t.to(device) for t in (te_images, te_scene, te_tok, te_ans))
    model = VQAModel(VQAConfig(
        num_words=len(WORDS), num_answers=len(ANSWERS), coords=cfg.coords, map_size=cfg.map_size
    )).to(device)
    # auxiliary object-recognition head on the image embedding (not part of the saved model): our
    # stand-in for the ImageNet pre-training of Antol et al.'s image encoder
    aux = torch.nn.Linear(model.config.embed_dim, tr_present.shape[1]).to(device)
    params = [*model.parameters(), *aux.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((cfg.train_scenes + cfg.batch_scenes - 1) // cfg.batch_scenes)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(cfg.seed)
    # the explained layer's output of the current training step (for activity_l1; not in eval mode,
    # so the held-out evaluation between epochs does not keep its maps alive)
    maps: dict[str, Tensor] = {}
    hook = model.get_submodule(model.target_layer).register_forward_hook(
        lambda m, i, o: maps.update(last=o) if m.training else None
    )
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(cfg.train_scenes, generator=gen).to(device)
        total, n = 0.0, 0
        for s in range(0, cfg.train_scenes, cfg.batch_scenes):
            scenes = order[s : s + cfg.batch_scenes]  # (b,)
            img = model.image_encoder(tr_images[scenes].float() / 255)  # (b, D), once per scene
            r = rows[scenes]  # (b, per)
            valid = r >= 0
            local = torch.arange(len(scenes), device=device)[:, None].expand_as(r)[valid]  # (Q,)
            qrows = r[valid]
            q = model.question_encoder(tr_tok[qrows])  # (Q, D)
            logits = model.classifier(img[local] * q)  # (Q, A)
            loss = F.cross_entropy(logits, tr_ans[qrows])
            if cfg.aux_weight > 0:
                loss = loss + cfg.aux_weight * F.binary_cross_entropy_with_logits(
                    aux(img), tr_present[scenes]
                )
            if cfg.activity_l1 > 0:  # maps are >= 0 (after a ReLU): their mean is their L1 norm
                # ramped up from 0: at full strength from the first step, it switches the maps off
                # before they have learned anything (training collapses to the answer prior)
                ramp = min(1.0, sched.last_epoch / max(1.0, cfg.activity_warmup * steps))  # steps done
                loss = loss + ramp * cfg.activity_l1 * maps["last"].mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(qrows)
            n += len(qrows)
        if log:
            acc = evaluate_accuracy(model, te_images, te_scene, te_tok, te_ans, te_types)
            print(
                f"epoch {epoch + 1}/{cfg.epochs}: train loss {total / n:.3f}, "
                f"held-out accuracy {acc['all']:.1f}% ("
                + ", ".join(f"{t} {acc[t]:.0f}" for t in QUESTION_TYPES if t in acc)
                + f") ({time.time() - t0:.0f} s)",
                flush=True,
            )
    hook.remove()
    model = model.cpu()
    tr_ans, te_images, te_scene, te_tok, te_ans = (
        t.cpu() for t in (tr_ans, te_images, te_scene, te_tok, te_ans)
    )
    model.eval()
    acc = evaluate_accuracy(model, te_images, te_scene, te_tok, te_ans, te_types)
    prior = answer_prior(tr_ans, te_ans, te_types, tr_types)
    ckpt = out_dir / CHECKPOINT
    torch.save(
        {
            "config": model.config_dict(),
            "state_dict": model.state_dict(),
            "words": list(WORDS),
            "answers": list(ANSWERS),
        },
        ckpt,
    )
    manifest = {
        "checkpoint": CHECKPOINT,
        "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
        "train": asdict(cfg),
        "train_questions": len(tr_ans),
        "test_questions": len(te_ans),
        "accuracy": acc,
        "answer_prior": prior,
        "seconds": round(time.time() - t0, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if log:
        print(json.dumps({"accuracy": acc, "answer_prior": prior}, indent=2))
    return manifest


def load_checkpoint(path: Path | str | None = None, device: str | torch.device = "cpu") -> VQAModel:
    """The trained embedded VQA model (eval mode) from ``path`` (default: the committed one)."""
    path = Path(path) if path is not None else DEFAULT_DIR / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(
            f"no VQA checkpoint at {path}; create it with `python -m cam_core train-vqa` "
            f"({TrainConfig.epochs} epochs, about 15 minutes on one CPU core)"
        )
    blob = torch.load(path, map_location=device, weights_only=True)
    if list(blob["words"]) != list(WORDS) or list(blob["answers"]) != list(ANSWERS):
        raise ValueError(
            f"{path} was trained on another vocabulary or answer set; retrain with "
            "`python -m cam_core train-vqa`"
        )
    model = VQAModel(VQAConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


def read_manifest(out_dir: Path | str = DEFAULT_DIR) -> dict:
    """The manifest ``train-vqa`` wrote beside the checkpoint (its config, sizes, accuracy, time)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no VQA model manifest at {path}; `python -m cam_core train-vqa --out "
                                f"{out_dir}` writes it with the checkpoint")
    return json.loads(path.read_text())


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-vqa", help="train the embedded VQA model (Antol et al.'s architecture)",
                              description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = TrainConfig()
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the scenes, the questions, the initialisation and the batch order")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training scenes")
    p.add_argument("--train-scenes", type=int, default=d.train_scenes, help="generated training scenes")
    p.add_argument("--test-scenes", type=int, default=d.test_scenes,
                   help="held-out scenes (one question of each type) for the accuracy in the manifest")
    p.add_argument("--questions-per-type", type=int, default=d.questions_per_type,
                   help="training questions per scene and question type")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--aux-weight", type=float, default=d.aux_weight,
                   help="weight of the auxiliary 'which coloured shapes are here' loss")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="Adam weight decay")
    p.add_argument("--batch-scenes", type=int, default=d.batch_scenes,
                   help="scenes per training step (each encoded once for all its questions)")
    p.add_argument("--coords", action="store_true", help="add CoordConv channels (x, y) at the input")
    p.add_argument("--map-size", type=int, default=d.map_size, choices=(8, 16),
                   help="side of the last conv maps (the layer the CAMs explain)")
    p.add_argument("--activity-l1", type=float, default=d.activity_l1,
                   help="L1 penalty on the explained maps (sparser maps: less energy off the objects)")
    p.add_argument("--activity-warmup", type=float, default=d.activity_warmup,
                   help="share of the training steps over which --activity-l1 ramps up from 0")
    p.add_argument("--device", default=d.device, help="cpu (the committed model) or cuda (not bit-for-bit)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 by default: robust when the machine is shared); the weights are "
        "reproducible bit-for-bit for the same seed, thread count and torch version",
    )
    p.add_argument("--out", default=str(DEFAULT_DIR), help="folder for the checkpoint and manifest")
    p.set_defaults(func=_run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``train-vqa`` arguments (one flag per field)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def _run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    train(config_from_args(args), args.out)
    return 0
