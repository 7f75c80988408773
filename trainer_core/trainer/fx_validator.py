"""Lightning 2.6's ``_FxValidator``: in which hooks ``self.log`` is allowed, and its ``on_step``/``on_epoch`` defaults."""

from __future__ import annotations

from trainer_core.utilities.exceptions import MisconfigurationException

# hook -> (allowed on_step, allowed on_epoch, default on_step, default on_epoch); Lightning 2.6's table.
# ``None``: logging is not allowed in that hook.
_LogOptions = tuple[tuple[bool, ...], tuple[bool, ...], bool, bool]
_STEP_HOOK: _LogOptions = ((False, True), (False, True), True, False)
_EVAL_STEP_HOOK: _LogOptions = ((False, True), (False, True), False, True)
_EPOCH_HOOK: _LogOptions = ((False,), (True,), False, True)
FX_OPTIONS: dict[str, _LogOptions | None] = {
    "on_before_backward": _STEP_HOOK,
    "backward": _STEP_HOOK,
    "on_after_backward": _STEP_HOOK,
    "on_before_optimizer_step": _STEP_HOOK,
    "optimizer_step": _STEP_HOOK,
    "lr_scheduler_step": None,
    "configure_gradient_clipping": _STEP_HOOK,
    "clip_gradients": _STEP_HOOK,
    "on_before_zero_grad": _STEP_HOOK,
    "optimizer_zero_grad": _STEP_HOOK,
    "on_fit_start": None,
    "on_fit_end": None,
    "on_sanity_check_start": None,
    "on_sanity_check_end": None,
    "on_train_start": _EPOCH_HOOK,
    "on_train_end": None,
    "on_validation_start": _EPOCH_HOOK,
    "on_validation_end": None,
    "on_test_start": _EPOCH_HOOK,
    "on_test_end": None,
    "on_predict_start": None,
    "on_predict_end": None,
    "on_train_epoch_start": _EPOCH_HOOK,
    "on_train_epoch_end": _EPOCH_HOOK,
    "on_validation_epoch_start": _EPOCH_HOOK,
    "on_validation_epoch_end": _EPOCH_HOOK,
    "on_test_epoch_start": _EPOCH_HOOK,
    "on_test_epoch_end": _EPOCH_HOOK,
    "on_predict_epoch_start": None,
    "on_predict_epoch_end": None,
    "on_before_batch_transfer": None,
    "transfer_batch_to_device": None,
    "on_after_batch_transfer": None,
    "on_train_batch_start": _STEP_HOOK,
    "on_train_batch_end": _STEP_HOOK,
    "on_validation_batch_start": _EVAL_STEP_HOOK,
    "on_validation_batch_end": _EVAL_STEP_HOOK,
    "on_test_batch_start": _EVAL_STEP_HOOK,
    "on_test_batch_end": _EVAL_STEP_HOOK,
    "on_predict_batch_start": None,
    "on_predict_batch_end": None,
    "on_exception": None,
    "state_dict": None,
    "on_save_checkpoint": None,
    "on_load_checkpoint": None,
    "load_state_dict": None,
    "setup": None,
    "teardown": None,
    "configure_sharded_model": None,
    "configure_model": None,
    "training_step": _STEP_HOOK,
    "validation_step": _EVAL_STEP_HOOK,
    "test_step": _EVAL_STEP_HOOK,
    "predict_step": None,
    "configure_optimizers": None,
    "train_dataloader": None,
    "val_dataloader": None,
    "test_dataloader": None,
    "prepare_data": None,
    "configure_callbacks": None,
    "on_validation_model_zero_grad": None,
    "on_validation_model_eval": None,
    "on_test_model_eval": None,
    "on_validation_model_train": None,
    "on_test_model_train": None,
}


def check_logging(fx: str | None, on_step: bool | None, on_epoch: bool | None) -> tuple[bool, bool]:
    """Lightning's ``_FxValidator.check_logging_and_get_default_levels``: the resolved ``(on_step, on_epoch)``."""
    if fx is None or fx not in FX_OPTIONS:
        raise RuntimeError(
            f"Logging inside `{fx}` is not implemented."
            " Please, open an issue in `https://github.com/Lightning-AI/pytorch-lightning/issues`."
        )
    options = FX_OPTIONS[fx]
    if options is None:
        raise MisconfigurationException(
            f"You can't `self.log()` inside `{fx}`. HINT: You can still log directly to the logger by using"
            " `self.logger.experiment`."
        )
    allowed_step, allowed_epoch, default_step, default_epoch = options
    step = default_step if on_step is None else bool(on_step)
    epoch = default_epoch if on_epoch is None else bool(on_epoch)
    m = "You can't `self.log({}={})` inside `{}`, must be one of {}."
    if step not in allowed_step:
        raise MisconfigurationException(m.format("on_step", step, fx, allowed_step))
    if epoch not in allowed_epoch:
        raise MisconfigurationException(m.format("on_epoch", epoch, fx, allowed_epoch))
    return step, epoch
