"""orbax checkpoints of the train state, the grain iterator state and the config, together.

Restoring goes through abstract targets that carry the current mesh's shardings, so a run saved
on 8 devices resumes on 4 (or on another host count) unchanged. The folder may be in a bucket
(orbax writes arrays with TensorStore, which reads `gs://` and `s3://` itself).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from hrnet_jax import storage


class RestoreError(ValueError):
    """A checkpoint that does not fit the model: the mismatched arrays are named."""


def saved_steps(directory: str) -> list[int]:
    """The steps saved in a checkpoints folder (orbax names each step's folder by its number),
    without opening or creating anything."""
    folder = storage.path(directory)
    with storage.errors_named(directory, "read"):
        if not folder.is_dir():
            return []
        return sorted(int(child.name) for child in folder.iterdir()
                      if child.name.isdigit() and child.is_dir())


@contextlib.contextmanager
def _storage_noise_held_back():
    """A restore that fails on a broken file leaves thousands of TensorStore reads completing
    into orbax's closed event loop, each printing an 'Event loop is closed' traceback. Those go
    to a buffer; the one error that matters is raised and said as usual."""
    held, original = io.StringIO(), sys.stderr
    sys.stderr = held
    try:
        yield
    except BaseException:
        time.sleep(0.2)  # the pending reads finish into the buffer
        raise
    finally:
        sys.stderr = original


PARTIAL = ".orbax-checkpoint-tmp"  # orbax writes a step here, then renames it to the step


def remove_partial_saves(directory: str) -> list[str]:
    """Remove the folders of saves that never finished (a kill or a full disk mid-write: orbax
    leaves `STEP.orbax-checkpoint-tmp-*` behind and never cleans them); returns their names.
    Only for the run holding the workdir's lock: another's save in flight looks the same."""
    folder = storage.path(directory)
    with storage.errors_named(directory, "clean up"):
        if not folder.is_dir():
            return []
        partial = [child for child in folder.iterdir() if PARTIAL in child.name]
        for child in partial:
            child.rmtree() if child.is_dir() else child.unlink()
    return sorted(child.name for child in partial)


class Checkpointer:
    def __init__(self, directory: str, every_steps: int, keep: int):
        local = not storage.is_remote(directory)
        self.manager = ocp.CheckpointManager(
            os.path.abspath(os.path.expanduser(directory)) if local else directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every_steps))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any, config: dict, force: bool = False) -> bool:
        self.check_room(state)
        args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def check_room(self, state: Any) -> None:
        """A local disk without room for one more checkpoint of `state` is said before orbax
        starts writing (and fails in its background thread, hundreds of lines, a partial folder
        left): the checkpoints already there are kept."""
        directory = os.fspath(self.manager.directory)
        if storage.is_remote(directory) or jax.process_index() != 0:
            return
        needed = sum(leaf.nbytes for leaf in jax.tree.leaves(state)) * 1.05 + (1 << 20)
        free = shutil.disk_usage(directory).free
        if free < needed:
            latest = self.latest_step()
            raise storage.StorageError(
                f"no room for a checkpoint in {directory}: {free / 2**20:.0f} MiB free on its "
                f"disk, a checkpoint needs about {needed / 2**20:.0f} MiB; free space or use "
                "another --workdir. " + (f"The last good checkpoint, step {latest}, is kept"
                                         if latest is not None else "No checkpoint was saved"))

    def restore(self, abstract_state: Any, shardings: Any, data_iterator: Any = None,
                step: int | None = None) -> Any:
        """The state of `step` (default: the newest that restores) placed with `shardings`; the
        data iterator is moved to where it was when that state was saved.

        A checkpoint whose arrays do not fit the model raises `RestoreError` naming them. One
        that cannot be read (a truncated array chunk, an emptied metadata or iterator file) is
        passed over for the next older one, said on stderr, and kept aside renamed
        `STEP.unrestorable`, never deleted."""
        steps = [step] if step is not None else sorted(self.manager.all_steps(), reverse=True)
        target = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(
            leaf.shape, leaf.dtype, sharding=sharding), abstract_state, shardings)
        unreadable: list[int] = []
        try:
            for candidate in steps:
                self._check_fits(candidate, abstract_state)
                args = {"state": ocp.args.StandardRestore(target)}
                if data_iterator is not None:
                    args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
                try:
                    with _storage_noise_held_back():
                        state = self.manager.restore(candidate,
                                                     args=ocp.args.Composite(**args))["state"]
                except Exception as error:  # whatever the storage layers raise for broken files
                    if step is not None:
                        raise
                    self._say(f"checkpoint step {candidate} in {self.manager.directory} does not "
                              f"restore ({type(error).__name__}: "
                              f"{(str(error).splitlines() or [''])[0][:160]}); trying the next "
                              "older one")
                    unreadable.append(candidate)
                    continue
                return state
        finally:
            self._set_aside(unreadable)
        raise FileNotFoundError(f"no checkpoint in {self.manager.directory} restores (steps "
                                f"{steps} were tried)")

    def _check_fits(self, step: int, abstract_state: Any) -> None:
        """RestoreError naming every model variable whose saved shape differs from the model's
        (read from the checkpoint's metadata: no array is loaded, nothing is compiled)."""
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)  # orbax warns of the step's own metadata file here
        try:
            folder = self.manager.directory / str(step) / "state"
            saved = ocp.StandardCheckpointer().metadata(folder).item_metadata
            saved = {c: saved[c] for c in ("params", "batch_stats")}
        except Exception:  # unreadable metadata: the restore itself says what is wrong
            return
        finally:
            absl_logger.setLevel(level)

        def shapes(tree):
            return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
                    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

        expected = shapes({c: abstract_state[c] for c in ("params", "batch_stats")})
        found = shapes(saved)
        mismatched = [f"{key} saved {found[key]}, model {shape}"
                      for key, shape in expected.items() if key in found and found[key] != shape]
        missing = [key for key in expected if key not in found]
        extra = [key for key in found if key not in expected]
        if mismatched or missing or extra:
            parts = [f"{len(mismatched)} arrays of another shape: {'; '.join(mismatched[:12])}"
                     if mismatched else "",
                     f"{len(missing)} arrays the checkpoint lacks: {', '.join(missing[:12])}"
                     if missing else "",
                     f"{len(extra)} arrays the model lacks: {', '.join(extra[:12])}"
                     if extra else ""]
            raise RestoreError(f"checkpoint step {step} in {self.manager.directory} does not fit "
                               f"the model: " + "; ".join(p for p in parts if p) +
                               ". Was it saved by another arch, width, head or number of classes?")

    def _set_aside(self, steps: list[int]) -> None:
        if not steps:
            return
        if jax.process_index() == 0:
            for step in steps:  # on a bucket a copy, then a deletion (there is no rename)
                folder = storage.join(self.manager.directory, str(step))
                if storage.path(folder).is_dir():
                    storage.move(folder, folder + ".unrestorable")
                    self._say(f"kept the unrestorable checkpoint aside as {folder}.unrestorable")
        self.manager.reload()

    @staticmethod
    def _say(message: str) -> None:
        if jax.process_index() == 0:
            print(f"warning: {message}", file=sys.stderr)

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
