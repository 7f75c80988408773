"""A recipe module for the multi-process tests: ``rank_probe`` prints what each rank sees (its
rank, world size, reserved GPUs, pid) so a test can find every rank process."""

from __future__ import annotations

import os

import trainer_core as L
from tests.worker.recipes_for_tests import SlowRegressor, regression_data
from worker.recipes import Recipe


class RankProbe(SlowRegressor):
    def on_fit_start(self) -> None:
        print(f"[probe] rank={os.environ.get('RANK')} global_rank={self.trainer.global_rank} "
              f"world={self.trainer.world_size} cvd={os.environ.get('CUDA_VISIBLE_DEVICES')} pid={os.getpid()} "
              f"run={os.environ.get('RUNYARD_RUN_ID')}", flush=True)


assert L.LightningModule is not None
RECIPES = [Recipe("rank_probe", RankProbe, regression_data, description="Test recipe: a rank-printing regression.")]
