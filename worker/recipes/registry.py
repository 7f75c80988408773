"""What a run may execute: registered recipes, their parameter schemas, and the trainer whitelist.

A :class:`Recipe` names a LightningModule class and its data (a LightningDataModule class or
a dataloader factory). Its parameters are the keyword arguments of those callables: the
JSON schema comes from their ``__init__`` signatures and type hints (``Annotated[int,
Field(ge=1)]`` carries bounds and descriptions), built with pydantic's ``create_model``.
Arguments the worker supplies itself (``data_dir``, a resolved checkpoint) are *context*
arguments and never part of the schema: the API only ever sends plain values that pass
validation, and only registered recipes run.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

# Arguments filled by the worker, never by the user.
CONTEXT_ARGS = frozenset({"data_dir", "download"})


@dataclass
class RecipeContext:
    """What the run's process knows when it builds a recipe (nothing here comes from the API).

    ``inputs`` are the checkpoints of other runs that the parameters name (the server lists
    them when the run is claimed, and the run's token may download just those);
    ``fetch_input(checkpoint)`` downloads one into the run's folder and returns its path."""

    data_dir: str
    download: bool = True
    run_id: int | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    fetch_input: Callable[[dict[str, Any]], Any] | None = None


@dataclass
class Built:
    """A recipe instantiated for one run."""

    model: Any
    datamodule: Any = None
    train_dataloaders: Any = None
    val_dataloaders: Any = None
    test_dataloaders: Any = None
    has_test: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


def _schema_fields(fn: Callable[..., Any], skip: frozenset[str]) -> dict[str, tuple[Any, Any]]:
    """``name -> (annotation, default)`` for the keyword parameters of ``fn`` (a class: its ``__init__``)."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolved hints fall back to the raw annotations
        hints = {}
    fields: dict[str, tuple[Any, Any]] = {}
    for name, param in inspect.signature(target).parameters.items():
        if name == "self" or name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, param.annotation)
        if annotation is inspect.Parameter.empty:
            annotation = Any if param.default is inspect.Parameter.empty else type(param.default)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (annotation, default)
    return fields


def _accepted(fn: Callable[..., Any]) -> set[str]:
    target = fn.__init__ if inspect.isclass(fn) else fn
    return {n for n in inspect.signature(target).parameters if n != "self"}


class Recipe:
    """A LightningModule class plus its data, runnable by name.

    ``data`` is a LightningDataModule class, or a function returning ``(train, val, test)``
    dataloaders (``val``/``test`` may be ``None``). ``prepare(params, ctx)`` may turn
    user parameters into extra context arguments (e.g. a checkpoint id into weights);
    ``hidden`` names further constructor arguments the worker fills in.
    """

    def __init__(
        self,
        name: str,
        model: type,
        data: Callable[..., Any] | None = None,
        *,
        description: str = "",
        hidden: tuple[str, ...] = (),
        prepare: Callable[[dict[str, Any], RecipeContext], tuple[dict[str, Any], Callable[[Any], None] | None]]
        | None = None,
        check: Callable[[Any], None] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.data = data
        self.description = description or (inspect.getdoc(model) or "").split("\n\n")[0]
        self.hidden = frozenset(hidden) | CONTEXT_ARGS
        self.prepare = prepare
        # Rules across parameters (raise ValueError): they become part of the pydantic validation.
        self.check = check
        self._params_model: type[BaseModel] | None = None

    # -- schema -------------------------------------------------------------------------
    def params_model(self) -> type[BaseModel]:
        if self._params_model is None:
            fields = _schema_fields(self.model, self.hidden)
            if self.data is not None:
                for name, spec in _schema_fields(self.data, self.hidden).items():
                    fields.setdefault(name, spec)
            model_name = "".join(part.title() for part in self.name.split("_")) + "Params"
            validators = {}
            if self.check is not None:
                check = self.check

                def _check(values: Any) -> Any:
                    check(values)
                    return values

                validators["recipe_check"] = model_validator(mode="after")(_check)
            self._params_model = create_model(
                model_name, __config__=ConfigDict(extra="forbid"), __validators__=validators, **fields
            )  # type: ignore[call-overload]
        return self._params_model

    def params_schema(self) -> dict[str, Any]:
        return self.params_model().model_json_schema()

    def trainer_schema(self) -> dict[str, Any]:
        return trainer_schema()

    def describe(self) -> dict[str, Any]:
        """What a worker publishes to the server for this recipe."""
        return {"name": self.name, "description": self.description, "params_schema": self.params_schema(),
                "trainer_schema": self.trainer_schema()}

    def validate_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Validated, JSON-ready parameters with defaults filled in; raises ``ValidationError``."""
        return self.params_model().model_validate(dict(params or {})).model_dump(mode="json")

    def validate_trainer(self, trainer: Mapping[str, Any] | None) -> dict[str, Any]:
        return validate_trainer(trainer)

    # -- building -------------------------------------------------------------------------
    def build(self, params: Mapping[str, Any], ctx: RecipeContext) -> Built:
        values = self.validate_params(params)
        extra: dict[str, Any] = {"data_dir": ctx.data_dir, "download": ctx.download}
        after_build = None
        if self.prepare is not None:
            more, after_build = self.prepare(values, ctx)
            extra.update(more)
        everything = {**values, **extra}
        model_args = {k: v for k, v in everything.items() if k in _accepted(self.model)}
        model = self.model(**model_args)
        if after_build is not None:
            after_build(model)
        built = Built(model=model)
        if self.data is None:
            return built
        data_args = {k: v for k, v in everything.items() if k in _accepted(self.data)}
        data = self.data(**data_args)
        if hasattr(data, "setup") and hasattr(data, "train_dataloader"):
            built.datamodule = data
            built.has_test = _overrides(data, "test_dataloader")
        else:
            train, val, test = data
            built.train_dataloaders, built.val_dataloaders, built.test_dataloaders = train, val, test
            built.has_test = test is not None
        return built

    def __repr__(self) -> str:
        return f"Recipe({self.name!r}, model={self.model.__qualname__})"


def _overrides(obj: Any, method: str) -> bool:
    import trainer_core as L

    own = getattr(type(obj), method, None)
    base = getattr(L.LightningDataModule, method, None)
    return own is not None and own is not base


# -- trainer arguments ------------------------------------------------------------------------

Limit = int | float
# trainer_core's (and Lightning's) max_time: 'DD:HH:MM:SS', or timedelta arguments
MaxTimeText = typing.Annotated[str, Field(pattern=r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")]
MaxTimeParts = dict[Literal["weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds"],
                    typing.Annotated[float, Field(ge=0)]]


MAX_EPOCHS = 100_000  # a sane upper bound (issue 14): longer runs set max_steps or max_time


class TrainerArgs(BaseModel):
    """The trainer arguments a run may set through the API (anything else is refused)."""

    model_config = ConfigDict(extra="forbid")

    max_epochs: int | None = Field(None, ge=-1, le=MAX_EPOCHS,
                                   description=f"Stop after this many epochs (-1: no limit; at most {MAX_EPOCHS:,}).")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1: no limit).")
    max_time: MaxTimeText | MaxTimeParts | None = Field(
        None, description="Stop after this much training time: 'DD:HH:MM:SS' or timedelta arguments such as "
        "{\"hours\": 12}. The server sets it to the project's longest run time when absent or longer.")
    precision: Literal["32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true", "64"] | None = (
        Field(None, description="Numeric precision; mixed precision needs a GPU for 16-bit.")
    )
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = Field("auto", description="Where to train.")
    devices: typing.Annotated[int, Field(ge=-1)] | list[typing.Annotated[int, Field(ge=0)]] | Literal["auto"] = Field(
        "auto", description="Devices to train on: a count (-1: all GPUs the worker reserves for the run), a list of "
        "ids (its length counts) or 'auto'. More than one starts one process per device (DDP).")
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "single_device"] = Field(
        "auto", description="How several devices train together ('auto' or a DDP strategy: one process each).")
    num_nodes: typing.Annotated[int, Field(ge=1, le=1)] = Field(
        1, description="Machines in the run; the job queue runs a run on one machine (see docs for torchrun/SLURM).")
    limit_train_batches: Limit | None = Field(None, ge=0, description="Batches per epoch (int) or fraction (float).")
    limit_val_batches: Limit | None = Field(None, ge=0)
    limit_test_batches: Limit | None = Field(None, ge=0)
    fast_dev_run: bool | int = Field(False, description="Run a few batches of everything to find bugs.")
    val_check_interval: Limit | None = Field(None, gt=0)
    check_val_every_n_epoch: int | None = Field(1, ge=1)
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(None, ge=0)
    log_every_n_steps: int = Field(50, ge=1)
    deterministic: bool | None = None
    early_stopping_monitor: str | None = Field(None, description="Stop when this metric stops improving.")
    early_stopping_patience: int = Field(3, ge=0)
    early_stopping_mode: Literal["min", "max"] = "min"
    checkpoint_monitor: str | None = Field(None, description="Metric that picks the best checkpoint.")
    checkpoint_mode: Literal["min", "max"] = "min"
    checkpoint_save_top_k: int = Field(1, ge=-1)
    checkpoint_every_n_train_steps: int | None = Field(
        None, ge=1, description="Also save (and make resumable) every N steps, not only at epoch ends."
    )
    seed: int | None = Field(None, description="seed_everything(seed) before building the recipe.")

    def trainer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments that go straight to ``Trainer(...)``."""
        special = {name for name in type(self).model_fields if name.startswith(("early_stopping_", "checkpoint_"))}
        special.add("seed")
        data = self.model_dump(exclude=special, exclude_unset=True)
        return data


def trainer_schema() -> dict[str, Any]:
    return TrainerArgs.model_json_schema()


def validate_trainer(trainer: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated trainer arguments (only those given, JSON-ready); raises ``ValidationError``."""
    return TrainerArgs.model_validate(dict(trainer or {})).model_dump(mode="json", exclude_unset=True)


__all__ = [
    "Built",
    "Recipe",
    "RecipeContext",
    "TrainerArgs",
    "ValidationError",
    "trainer_schema",
    "validate_trainer",
]
