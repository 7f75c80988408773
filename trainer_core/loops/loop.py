"""``_Loop``: ``state_dict`` over progress attributes and child loops, keyed like Lightning's loops."""

from __future__ import annotations

from typing import Any

from trainer_core.loops.progress import _BaseProgress


class _Loop:
    """A loop's state is its progress attributes and its child loops (``state_dict`` walks both)."""

    def on_save_checkpoint(self) -> dict[str, Any]:
        return {}

    def on_load_checkpoint(self, state_dict: dict[str, Any]) -> None: ...

    def state_dict(self, destination: dict[str, Any] | None = None, prefix: str = "") -> dict[str, Any]:
        if destination is None:
            destination = {}
        destination[prefix + "state_dict"] = self.on_save_checkpoint()
        for k, v in self.__dict__.items():
            if isinstance(v, _BaseProgress):
                destination[prefix + k] = v.state_dict()
            elif isinstance(v, _Loop):
                v.state_dict(destination, prefix + k + ".")
        return destination

    def load_state_dict(self, state_dict: dict[str, Any], prefix: str = "") -> None:
        for k, v in self.__dict__.items():
            key = prefix + k
            if isinstance(v, _BaseProgress) and key in state_dict:
                v.load_state_dict(state_dict[key])
            elif isinstance(v, _Loop):
                v.load_state_dict(state_dict, key + ".")
        if prefix + "state_dict" in state_dict:
            self.on_load_checkpoint(state_dict[prefix + "state_dict"])
