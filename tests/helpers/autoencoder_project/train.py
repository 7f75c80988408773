"""A plain script: python train.py --lr 0.01 --max-steps 20 --data-dir /data (no Runyard code in it)."""

import argparse

from pkg.data import MNISTData
from pkg.models import LitAutoEncoder

import trainer_core as L


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=50)
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--fail-with", type=int, default=0, help="exit with this code at once (tests)")
    parser.add_argument("--sleep", type=float, default=0.0, help="sleep this long before training (tests)")
    args = parser.parse_args()
    print(f"train.py: lr={args.lr} max_steps={args.max_steps}", flush=True)
    if args.fail_with:
        import sys

        print("train.py: failing on purpose", file=sys.stderr, flush=True)
        sys.exit(args.fail_with)
    if args.sleep:
        import time

        time.sleep(args.sleep)
    trainer = L.Trainer(
        max_steps=args.max_steps, log_every_n_steps=1, enable_progress_bar=False, limit_val_batches=2
    )
    trainer.fit(LitAutoEncoder(lr=args.lr, hidden=args.hidden), datamodule=MNISTData(args.data_dir))
    print("train.py: done", flush=True)


if __name__ == "__main__":
    main()
