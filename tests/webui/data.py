"""Realistic-looking metric series for seeding runs in the browser tests."""

from __future__ import annotations

import math
import random
import time


def training_curves(
    seed: int, steps: int = 300, epochs: int = 10, lr: float = 1e-3, start: float | None = None
) -> list[dict]:
    """train_loss every step, val_loss / val_acc once per epoch, lr per step."""
    rng = random.Random(seed)
    t0 = start if start is not None else time.time() - steps * 0.5
    per_epoch = max(1, steps // epochs)
    speed = 1.0 + 0.4 * (seed % 3)
    points: list[dict] = []
    for step in range(steps):
        epoch = step // per_epoch
        base = 0.08 + 2.2 * math.exp(-speed * step / (steps / 4))
        loss = max(1e-4, base * (1 + rng.gauss(0, 0.12)))
        points.append(
            {"key": "train_loss", "step": step, "value": loss, "epoch": epoch, "wall_time": t0 + step * 0.5}
        )
        points.append(
            {
                "key": "lr",
                "step": step,
                "value": lr * 0.5 * (1 + math.cos(math.pi * step / steps)),
                "epoch": epoch,
                "wall_time": t0 + step * 0.5,
            }
        )
        if (step + 1) % per_epoch == 0:
            val = 0.1 + 2.0 * math.exp(-speed * step / (steps / 4)) + 0.01 * rng.random()
            points.append(
                {"key": "val_loss", "step": step, "value": val, "epoch": epoch, "wall_time": t0 + step * 0.5}
            )
            points.append(
                {
                    "key": "val_acc",
                    "step": step,
                    "value": min(0.995, 1 - val / 2.3 + rng.gauss(0, 0.004)),
                    "epoch": epoch,
                    "wall_time": t0 + step * 0.5,
                }
            )
    return points


SUMMARY = {
    "layers": [
        {
            "name": "encoder",
            "type": "Sequential",
            "params": 50_240 + 195,
            "mode": "train",
            "in_size": None,
            "out_size": None,
        },
        {
            "name": "decoder",
            "type": "Sequential",
            "params": 256 + 50_960,
            "mode": "train",
            "in_size": None,
            "out_size": None,
        },
        {"name": "head", "type": "Linear", "params": 30, "mode": "eval", "in_size": None, "out_size": None},
    ],
    "trainable_params": 101_651,
    "non_trainable_params": 30,
    "total_params": 101_681,
    "size_mb": 101_681 * 4 / 1e6,
    "train_modules": 7,
    "eval_modules": 1,
    "max_depth": 1,
    "has_sizes": False,
}
