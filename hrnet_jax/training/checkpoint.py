"""orbax checkpoints of the train state, the grain iterator state and the config, together.

Restoring goes through abstract targets that carry the current mesh's shardings, so a run saved
on 8 devices resumes on 4 (or on another host count) unchanged.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, every_steps: int, keep: int):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every_steps))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any, config: dict, force: bool = False) -> bool:
        args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore(self, abstract_state: Any, shardings: Any, data_iterator: Any = None,
                step: int | None = None) -> Any:
        """The state of `step` (default: latest) placed with `shardings`; the data iterator is
        moved to where it was when that state was saved."""
        step = self.manager.latest_step() if step is None else step
        target = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(
            leaf.shape, leaf.dtype, sharding=sharding), abstract_state, shardings)
        args = {"state": ocp.args.StandardRestore(target)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**args))["state"]

    def restore_variables(self, step: int | None = None) -> dict:
        """{'params', 'batch_stats'} of a checkpoint as host arrays, whatever model saved it
        (no target needed: for starting another run from it)."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.manager.directory}")
        state = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return {c: state["state"][c] for c in ("params", "batch_stats")}

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
