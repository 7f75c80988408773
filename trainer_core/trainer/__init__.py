from trainer_core.trainer.trainer import Trainer

__all__ = ["Trainer"]
