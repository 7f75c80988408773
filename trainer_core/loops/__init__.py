"""The loops, in Lightning's shape: fit → training epoch → (automatic | manual) optimization, evaluation, prediction."""

from trainer_core.loops.evaluation_loop import _EvaluationLoop
from trainer_core.loops.fit_loop import _FitLoop
from trainer_core.loops.loop import _Loop
from trainer_core.loops.prediction_loop import _PredictionLoop
from trainer_core.loops.training_epoch_loop import _TrainingEpochLoop

__all__ = ["_EvaluationLoop", "_FitLoop", "_Loop", "_PredictionLoop", "_TrainingEpochLoop"]
