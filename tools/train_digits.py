"""Train the ``micro`` VMamba on sklearn's digits (the project's embedded default weights).

    python -m tools.train_digits            # ~4 min on 2 CPU cores
    python -m tools.train_digits --epochs 2 --out /tmp/w.pt   # quick smoke run

Writes vmamba_ref/weights/micro_digits.pt (float16 state dict, upcast on load) and
micro_digits.json (held-out accuracy, split, seed, epochs). The recorded accuracy is the
one ``tools/eval_digits.py`` reproduces: float16-stored weights, float32 sequential scan.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from passes.files import write_text_atomic
from passes.one_line import OneLineArgumentParser, number_text, positive_int, seed_int
from vmamba_ref import DIGITS_WEIGHTS, build_model, get_config, load_checkpoint, save_checkpoint
from vmamba_ref.digits import HELD_OUT, NORM_MEAN, NORM_STD, SPLIT_SEED, load_digits_split


def accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 100) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[i:i + batch]))
            correct += int((logits.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to max_shift pixels (zero-filled in normalised units)."""
    pad_value = -NORM_MEAN / NORM_STD
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=pad_value)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def _learning_rate(text: str) -> float:
    """'--lr inf' trained the whole run into NaN weights and wrote them over the digits checkpoint (torch's
    AdamW refuses nan and -1, as a traceback; 0 trains nothing)."""
    return number_text(text, "a positive, finite number", low=0.0, above_low=True)


def main(argv=None) -> int:
    ap = OneLineArgumentParser(prog="python -m tools.train_digits", description=__doc__.splitlines()[1])
    ap.add_argument("--epochs", type=positive_int, default=14)
    ap.add_argument("--batch", type=positive_int, default=64)
    ap.add_argument("--lr", type=_learning_rate, default=2e-3)
    ap.add_argument("--seed", type=seed_int, default=0)
    ap.add_argument("--out", type=Path, default=DIGITS_WEIGHTS)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    split = load_digits_split()
    cfg = get_config("micro")
    model = build_model(cfg, scan="chunked", seed=args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    x_train, y_train = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    steps_per_epoch = math.ceil(len(x_train) / args.batch)
    total = args.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / steps_per_epoch) * 0.5 * (1 + math.cos(math.pi * s / total)))
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        running = 0.0
        for i in range(0, len(perm), args.batch):
            idx = perm[i:i + args.batch]
            xb = random_shift(x_train[idx], 4, gen)
            loss = F.cross_entropy(model(xb), y_train[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {running / len(perm):.4f}  {time.time() - t0:.0f}s",
              flush=True)
    train_seconds = time.time() - t0

    save_checkpoint(model, args.out, half=True, config=cfg.to_dict(), seed=args.seed, epochs=args.epochs)
    # Measure what users get: the float16 file upcast to float32, sequential scan.
    reloaded = build_model(cfg, scan="sequential")
    load_checkpoint(reloaded, args.out)
    acc = accuracy(reloaded, split.x_test, split.y_test)
    meta = {
        "config": "micro",
        "held_out_accuracy": acc,
        "held_out_correct": round(acc * HELD_OUT),
        "held_out": HELD_OUT,
        "train": len(split.y_train),
        "split": {"function": "sklearn.model_selection.train_test_split", "test_size": HELD_OUT,
                  "stratify": "target", "random_state": SPLIT_SEED},
        "preprocess": {"resize": "bilinear 8x8 -> 64x64", "channels": 3, "scale": "x / 16",
                       "mean": NORM_MEAN, "std": NORM_STD},
        "seed": args.seed,
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "train_scan": "chunked",
        "eval_scan": "sequential",
        "stored_dtype": "float16",
        "train_seconds": round(train_seconds, 1),
        "torch": torch.__version__,
    }
    meta_path = args.out.with_suffix(".json")
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    print(f"held-out accuracy {acc:.4f} ({meta['held_out_correct']}/{HELD_OUT}); wrote {args.out} "
          f"({args.out.stat().st_size / 1e6:.1f} MB) and {meta_path}")
    return 0


if __name__ == "__main__":
    from passes.interrupts import run_command_line
    sys.exit(run_command_line(main))
