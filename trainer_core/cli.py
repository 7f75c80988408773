"""``LightningCLI``: a command line for a LightningModule (and DataModule) built on jsonargparse.

    python main.py fit --model.lr 0.01 --data.batch_size 32 --trainer.max_epochs 3
    python main.py fit --config cfg.yaml
    python main.py fit --print_config > cfg.yaml

Subcommands ``fit | validate | test | predict`` call the Trainer method of that name. Every
constructor argument of the model, the datamodule and the Trainer becomes an option (from
their signatures and type hints), ``--optimizer`` / ``--lr_scheduler`` pick any torch optimizer
and scheduler, and the parsed config is saved as ``config.yaml`` in the run's log_dir.

jsonargparse is an optional extra (``pip install runyard[cli]``); without it, constructing
``LightningCLI`` raises an ImportError saying so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import partial, update_wrapper
from types import MethodType
from typing import Any, Optional, Union, cast

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from trainer_core.callbacks.callback import Callback

try:
    from jsonargparse import ActionConfigFile, ArgumentParser, Namespace, class_from_function

    _JSONARGPARSE_AVAILABLE = True
    # jsonargparse 4.49 renamed instantiate_classes -> instantiate and skip_none -> skip_unset
    _NEW_JSONARGPARSE_API = hasattr(ArgumentParser, "instantiate")
except ImportError:  # pragma: no cover - exercised only without the extra
    _JSONARGPARSE_AVAILABLE = False
    _NEW_JSONARGPARSE_API = False
    ArgumentParser = object  # type: ignore[assignment,misc]
    Namespace = dict  # type: ignore[assignment,misc]

_MISSING_JSONARGPARSE = (
    "LightningCLI needs the `jsonargparse` package, which is not installed. "
    "Install it with `pip install runyard[cli]` (or `pip install 'jsonargparse[signatures]'`)."
)


class ReduceLROnPlateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
    """torch's ReduceLROnPlateau with the ``monitor`` key the trainer needs (as Lightning's CLI has)."""

    def __init__(self, optimizer: Optimizer, monitor: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, *args, **kwargs)
        self.monitor = monitor


LRSchedulerTypeTuple = (LRScheduler, ReduceLROnPlateau)
LRSchedulerTypeUnion = Union[LRScheduler, ReduceLROnPlateau]  # noqa: UP007 - used at runtime by jsonargparse
ArgsType = Union[list[str], dict[str, Any], Namespace, None]  # noqa: UP007
OptimizerCallable = Callable[[Iterable[Any]], Optimizer]
LRSchedulerCallable = Callable[[Optimizer], LRSchedulerTypeUnion]


def _import_builtin_callbacks_and_loggers() -> None:
    """Import every built-in callback and logger so jsonargparse resolves short names like ``CSVLogger``."""
    import trainer_core.callbacks.lr_monitor
    import trainer_core.callbacks.model_summary
    import trainer_core.callbacks.progress
    import trainer_core.loggers  # noqa: F401


def _core_classes() -> tuple[type, type, type]:
    from trainer_core.core.datamodule import LightningDataModule
    from trainer_core.core.module import LightningModule
    from trainer_core.trainer.trainer import Trainer

    return Trainer, LightningModule, LightningDataModule


class LightningArgumentParser(ArgumentParser):
    """jsonargparse's ArgumentParser with helpers for the trainer_core classes."""

    def __init__(
        self,
        *args: Any,
        description: str = "trainer_core command line tool",
        env_prefix: str = "PL",
        default_env: bool = False,
        **kwargs: Any,
    ) -> None:
        if not _JSONARGPARSE_AVAILABLE:
            raise ImportError(_MISSING_JSONARGPARSE)
        super().__init__(
            *args, description=description, env_prefix=env_prefix, default_env=default_env, **kwargs
        )
        self.callback_keys: list[str] = []
        self._optimizers: dict[str, tuple[type | tuple[type, ...], str]] = {}
        self._lr_schedulers: dict[str, tuple[type | tuple[type, ...], str]] = {}

    def add_lightning_class_args(
        self,
        lightning_class: Any,
        nested_key: str,
        subclass_mode: bool = False,
        required: bool = True,
    ) -> list[str]:
        """Add the constructor arguments of a Trainer, module, datamodule or callback under ``nested_key``."""
        Trainer, LightningModule, LightningDataModule = _core_classes()
        if callable(lightning_class) and not isinstance(lightning_class, type):
            lightning_class = class_from_function(lightning_class)
        if not (
            isinstance(lightning_class, type)
            and issubclass(lightning_class, (Trainer, LightningModule, LightningDataModule, Callback))
        ):
            raise TypeError(
                f"Cannot add arguments from {lightning_class!r}: pass a callable or a subclass of "
                "Trainer, LightningModule, LightningDataModule or Callback."
            )
        if issubclass(lightning_class, Callback):
            self.callback_keys.append(nested_key)
        if subclass_mode:
            return cast("list[str]", self.add_subclass_arguments(
                lightning_class, nested_key, fail_untyped=False, required=required
            ))
        if issubclass(lightning_class, Trainer):
            return self._add_trainer_arguments(lightning_class, nested_key)
        return cast("list[str]", self.add_class_arguments(lightning_class, nested_key, fail_untyped=False,
                                                          sub_configs=True))

    def _add_trainer_arguments(self, trainer_class: type, nested_key: str) -> list[str]:
        """The Trainer's arguments, with ``callbacks`` and ``logger`` typed as Lightning types them.

        So ``--trainer.callbacks+=EarlyStopping --trainer.callbacks.monitor=val_loss`` and
        ``--trainer.logger=CSVLogger`` work whatever annotations the trainer class carries.
        """
        import inspect

        _import_builtin_callbacks_and_loggers()
        from trainer_core.loggers.logger import Logger

        params = inspect.signature(trainer_class.__init__).parameters  # type: ignore[misc]
        typed = {"callbacks", "logger"} & set(params)
        added: list[str] = self.add_class_arguments(
            trainer_class, nested_key, fail_untyped=False, instantiate=False, sub_configs=True, skip=typed
        )
        if "callbacks" in typed:
            self.add_argument(
                f"--{nested_key}.callbacks",
                type=Optional[Union[list[Callback], Callback]],  # noqa: UP007, UP045 - evaluated by jsonargparse
                default=params["callbacks"].default
                if params["callbacks"].default is not inspect.Parameter.empty
                else None,
                help="Callbacks to add (class path or short name, e.g. EarlyStopping).",
            )
            added.append(f"{nested_key}.callbacks")
        if "logger" in typed:
            self.add_argument(
                f"--{nested_key}.logger",
                type=Optional[Union[bool, Logger, list[Logger]]],  # noqa: UP007, UP045
                default=params["logger"].default
                if params["logger"].default is not inspect.Parameter.empty
                else None,
                help="Logger(s) (class path or short name, e.g. CSVLogger), or false for none.",
            )
            added.append(f"{nested_key}.logger")
        return added

    def add_optimizer_args(
        self,
        optimizer_class: type[Optimizer] | tuple[type[Optimizer], ...] = (Optimizer,),
        nested_key: str = "optimizer",
        link_to: str = "AUTOMATIC",
    ) -> None:
        kwargs: dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": {"params"}}
        if isinstance(optimizer_class, tuple):
            self.add_subclass_arguments(optimizer_class, nested_key, **kwargs)
        else:
            self.add_class_arguments(optimizer_class, nested_key, sub_configs=True, **kwargs)
        self._optimizers[nested_key] = (optimizer_class, link_to)

    def add_lr_scheduler_args(
        self,
        lr_scheduler_class: type | tuple[type, ...] = LRSchedulerTypeTuple,
        nested_key: str = "lr_scheduler",
        link_to: str = "AUTOMATIC",
    ) -> None:
        kwargs: dict[str, Any] = {"instantiate": False, "fail_untyped": False, "skip": {"optimizer"}}
        if isinstance(lr_scheduler_class, tuple):
            self.add_subclass_arguments(lr_scheduler_class, nested_key, **kwargs)
        else:
            self.add_class_arguments(lr_scheduler_class, nested_key, sub_configs=True, **kwargs)
        self._lr_schedulers[nested_key] = (lr_scheduler_class, link_to)


class SaveConfigCallback(Callback):
    """Writes the parsed config as ``config.yaml`` into ``trainer.log_dir`` at setup (once).

    Refuses to overwrite an existing file unless ``overwrite=True``, so a rerun into the same
    folder does not silently replace the record of an earlier run.
    """

    def __init__(
        self,
        parser: LightningArgumentParser,
        config: Any,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = True,
    ) -> None:
        self.parser = parser
        self.config = config
        self.config_filename = config_filename
        self.overwrite = overwrite
        self.multifile = multifile
        self.save_to_log_dir = save_to_log_dir
        self.already_saved = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        if self.save_to_log_dir:
            log_dir = trainer.log_dir
            if log_dir is None:
                raise RuntimeError("SaveConfigCallback needs trainer.log_dir; the trainer has none.")
            config_path = os.path.join(log_dir, self.config_filename)
            if not self.overwrite and os.path.isfile(config_path):
                raise RuntimeError(
                    f"{type(self).__name__} expected {config_path} to NOT exist. Aborting to avoid overwriting "
                    "the results of a previous run. Delete that file, set `LightningCLI(save_config_callback=None)` "
                    'to disable config saving, or set `LightningCLI(save_config_kwargs={"overwrite": True})`.'
                )
            os.makedirs(log_dir, exist_ok=True)
            # keep None values in the file (jsonargparse >= 4.49 renamed skip_none to skip_unset)
            skip = {"skip_unset": False} if _NEW_JSONARGPARSE_API else {"skip_none": False}
            self.parser.save(
                self.config, config_path, overwrite=self.overwrite, multifile=self.multifile, **skip
            )
        self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Override to store the config somewhere else as well (e.g. ``logger.log_hyperparams``)."""


def _short_description(component: object) -> str | None:
    doc = getattr(component, "__doc__", None)
    if not doc:
        return None
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip() or None


class LightningCLI:
    """Command line for training: ``fit | validate | test | predict`` with ``--model.*``, ``--data.*``,
    ``--trainer.*``, ``--optimizer``, ``--lr_scheduler``, ``--config`` and ``--print_config``.

    With ``run=False`` there are no subcommands: the classes are parsed and instantiated
    (``cli.model``, ``cli.datamodule``, ``cli.trainer``) and nothing runs.
    """

    def __init__(
        self,
        model_class: type | Callable[..., Any] | None = None,
        datamodule_class: type | Callable[..., Any] | None = None,
        save_config_callback: type[SaveConfigCallback] | None = SaveConfigCallback,
        save_config_kwargs: dict[str, Any] | None = None,
        trainer_class: type | Callable[..., Any] | None = None,
        trainer_defaults: dict[str, Any] | None = None,
        seed_everything_default: bool | int = True,
        parser_kwargs: dict[str, Any] | None = None,
        parser_class: type[LightningArgumentParser] = LightningArgumentParser,
        subclass_mode_model: bool = False,
        subclass_mode_data: bool = False,
        args: ArgsType = None,
        run: bool = True,
        auto_configure_optimizers: bool = True,
    ) -> None:
        if not _JSONARGPARSE_AVAILABLE:
            raise ImportError(_MISSING_JSONARGPARSE)
        Trainer, LightningModule, LightningDataModule = _core_classes()
        self.save_config_callback = save_config_callback
        self.save_config_kwargs = save_config_kwargs or {}
        self.trainer_class = trainer_class or Trainer
        self.trainer_defaults = trainer_defaults or {}
        self.seed_everything_default = seed_everything_default
        self.parser_kwargs = parser_kwargs or {}
        self.parser_class = parser_class
        self.auto_configure_optimizers = auto_configure_optimizers

        self.model_class = model_class
        self._model_class = model_class or LightningModule
        self.subclass_mode_model = model_class is None or subclass_mode_model
        self.datamodule_class = datamodule_class
        self._datamodule_class = datamodule_class or LightningDataModule
        self.subclass_mode_data = datamodule_class is None or subclass_mode_data

        names = self.subcommands().keys()
        main_kwargs = {k: v for k, v in self.parser_kwargs.items() if k not in names}
        sub_kwargs = {k: v for k, v in self.parser_kwargs.items() if k in names}
        self.setup_parser(run, main_kwargs, sub_kwargs)
        self.parse_arguments(self.parser, args)
        self.subcommand: str | None = self.config["subcommand"] if run else None
        self._set_seed()
        self.before_instantiate_classes()
        self.instantiate_classes()
        self.after_instantiate_classes()
        if self.subcommand is not None:
            self._run_subcommand(self.subcommand)

    # -- parser ------------------------------------------------------------------------------
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        from trainer_core import __version__

        kwargs.setdefault("dump_header", [f"trainer_core=={__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument(
            "-c",
            "--config",
            action=ActionConfigFile,
            help="Path to a configuration file in json or yaml format.",
        )
        return parser

    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], sub_kwargs: dict[str, Any]
    ) -> None:
        self.parser = self.init_parser(**main_kwargs)
        if add_subcommands:
            self._subcommand_method_arguments: dict[str, list[str]] = {}
            self._add_subcommands(self.parser, **sub_kwargs)
        else:
            self._add_arguments(self.parser)

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--seed_everything",
            type=Union[bool, int],  # noqa: UP007
            default=self.seed_everything_default,
            help="An int runs seed_everything with this value before the classes are created; True picks a random seed.",
        )

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        defaults = {"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"}
        parser.set_defaults(defaults)
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(
            self._datamodule_class,
            "data",
            subclass_mode=self.subclass_mode_data,
            required=self.datamodule_class is not None,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Override to add extra arguments or links."""

    def _add_arguments(self, parser: LightningArgumentParser) -> None:
        self.add_default_arguments_to_parser(parser)
        self.add_core_arguments_to_parser(parser)
        self.add_arguments_to_parser(parser)
        if self.auto_configure_optimizers:
            if not parser._optimizers:
                parser.add_optimizer_args((Optimizer,))
            if not parser._lr_schedulers:
                parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        for key, (_cls, link_to) in {**parser._optimizers, **parser._lr_schedulers}.items():
            if link_to != "AUTOMATIC":
                parser.link_arguments(key, link_to)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Subcommands and the Trainer method arguments they don't expose as options."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "test": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        subcommands = parser.add_subcommands()
        trainer_class = (
            self.trainer_class
            if isinstance(self.trainer_class, type)
            else class_from_function(self.trainer_class)
        )
        for name in self.subcommands():
            description = _short_description(getattr(trainer_class, name))
            sub_kwargs = dict(kwargs.get(name, {}))
            sub_kwargs.setdefault("description", description)
            sub_parser = self.init_parser(**sub_kwargs)
            self._add_arguments(sub_parser)
            added = sub_parser.add_method_arguments(
                trainer_class, name, skip=set(self.subcommands()[name]), fail_untyped=False
            )
            self._subcommand_method_arguments[name] = added
            self._subcommand_parsers[name] = sub_parser
            subcommands.add_subcommand(name, sub_parser, help=description)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        if isinstance(args, (dict, Namespace)):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    # -- instantiation -------------------------------------------------------------------------
    def _get(self, config: Any, key: str, default: Any = None) -> Any:
        return config.get(str(self.subcommand), config).get(key, default)

    def _parser(self, subcommand: str | None) -> LightningArgumentParser:
        return self.parser if subcommand is None else self._subcommand_parsers[subcommand]

    def _set_seed(self) -> None:
        from trainer_core.seed import seed_everything

        seed = self._get(self.config, "seed_everything")
        if seed is False or seed is None:
            return
        seed = seed_everything(workers=True) if seed is True else seed_everything(seed, workers=True)
        if self.subcommand:
            self.config[self.subcommand]["seed_everything"] = seed
        else:
            self.config["seed_everything"] = seed

    def before_instantiate_classes(self) -> None:
        """Override to run code before the classes are created."""

    def after_instantiate_classes(self) -> None:
        """Override to run code after the classes are created."""

    def instantiate_classes(self) -> None:
        instantiate = self.parser.instantiate if _NEW_JSONARGPARSE_API else self.parser.instantiate_classes
        self.config_init = instantiate(self.config)
        self.datamodule = self._get(self.config_init, "data")
        self.model = self._get(self.config_init, "model")
        self._add_configure_optimizers_method_to_model(self.subcommand)
        self.trainer = self.instantiate_trainer()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        extra_callbacks = [
            self._get(self.config_init, c) for c in self._parser(self.subcommand).callback_keys
        ]
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        callbacks = config.get("callbacks")
        callbacks = (
            [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
        )
        callbacks.extend(extra_callbacks)
        if "callbacks" in self.trainer_defaults:
            value = self.trainer_defaults["callbacks"]
            callbacks += value if isinstance(value, list) else [value]
        if self.save_config_callback and not config.get("fast_dev_run", False):
            callbacks.append(
                self.save_config_callback(
                    self._parser(self.subcommand),
                    self.config.get(str(self.subcommand), self.config),
                    **self.save_config_kwargs,
                )
            )
        config["callbacks"] = callbacks
        return self.trainer_class(**config)

    @staticmethod
    def configure_optimizers(lightning_module: Any, optimizer: Optimizer, lr_scheduler: Any = None) -> Any:
        """The ``configure_optimizers`` given to the model when ``--optimizer`` is set on the command line."""
        if lr_scheduler is None:
            return optimizer
        if isinstance(lr_scheduler, ReduceLROnPlateau):
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": lr_scheduler, "monitor": lr_scheduler.monitor},
            }
        return [optimizer], [lr_scheduler]

    def _add_configure_optimizers_method_to_model(self, subcommand: str | None) -> None:
        if not self.auto_configure_optimizers:
            return
        parser = self._parser(subcommand)
        optimizers = [k for k, (_, link) in parser._optimizers.items() if link == "AUTOMATIC"]
        schedulers = [k for k, (_, link) in parser._lr_schedulers.items() if link == "AUTOMATIC"]
        if not optimizers:
            return
        if len(optimizers) > 1 or len(schedulers) > 1:
            raise ValueError(
                f"{type(self).__name__} can configure at most one optimizer and one lr_scheduler automatically, "
                f"found {optimizers + schedulers}; link the groups and implement configure_optimizers instead."
            )
        optimizer_init = _as_class_init(
            parser._optimizers[optimizers[0]][0], self._get(self.config_init, optimizers[0])
        )
        if not optimizer_init:
            return  # the option exists but was not given: the model's own configure_optimizers stays
        scheduler_init = None
        if schedulers:
            scheduler_init = _as_class_init(
                parser._lr_schedulers[schedulers[0]][0], self._get(self.config_init, schedulers[0])
            )
        optimizer = instantiate_class(self.model.parameters(), optimizer_init)
        scheduler = instantiate_class(optimizer, scheduler_init) if scheduler_init else None
        fn = partial(self.configure_optimizers, optimizer=optimizer, lr_scheduler=scheduler)
        update_wrapper(fn, self.configure_optimizers)
        self.model.configure_optimizers = MethodType(fn, self.model)

    # -- running -------------------------------------------------------------------------------
    def _run_subcommand(self, subcommand: str) -> None:
        before = getattr(self, f"before_{subcommand}", None)
        if callable(before):
            before()
        fn = getattr(self, subcommand, getattr(self.trainer, subcommand))
        fn(**self._prepare_subcommand_kwargs(subcommand))
        after = getattr(self, f"after_{subcommand}", None)
        if callable(after):
            after()

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = {
            k: v
            for k, v in self.config_init[subcommand].items()
            if k in self._subcommand_method_arguments[subcommand]
        }
        kwargs["model"] = self.model
        if self.datamodule is not None:
            kwargs["datamodule"] = self.datamodule
        return kwargs


def _as_class_init(class_type: type | tuple[type, ...], init: Any) -> dict[str, Any] | None:
    if init is None:
        return None
    if isinstance(init, Namespace):
        init = init.as_dict()
    if isinstance(class_type, tuple):
        return dict(init) if init else None
    return {"class_path": f"{class_type.__module__}.{class_type.__name__}", "init_args": dict(init or {})}


def instantiate_class(args: Any, init: dict[str, Any]) -> Any:
    """Create ``init["class_path"]`` with positional ``args`` and ``init["init_args"]``."""
    kwargs = init.get("init_args", {})
    if not isinstance(args, tuple):
        args = (args,)
    module_name, class_name = init["class_path"].rsplit(".", 1)
    module = __import__(module_name, fromlist=[class_name])
    return getattr(module, class_name)(*args, **kwargs)


__all__ = [
    "ArgsType",
    "LRSchedulerCallable",
    "LightningArgumentParser",
    "LightningCLI",
    "OptimizerCallable",
    "ReduceLROnPlateau",
    "SaveConfigCallback",
    "instantiate_class",
]
