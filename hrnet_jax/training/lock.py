"""One run at a time in a workdir: `WORKDIR/lock.json` names the run holding it (host, process
id, start time) and is refreshed while it runs, so that a second run started on the same
workdir is refused at once, naming the first, instead of both writing the same checkpoints and
metrics.jsonl.

A lock left by a run that died is not in the way: on the same host, its process is looked up;
from another host (a bucket workdir), a lock not refreshed for `STALE_AFTER_S` counts as left
behind. The processes of one multi-host run share the workdir: process 0 holds the lock for all
of them (main tells the others whether it got it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Iterator

from hrnet_jax import storage

LOCK_FILE = "lock.json"
REFRESH_S = 60.0
STALE_AFTER_S = 600.0  # ten missed refreshes


class WorkdirInUse(RuntimeError):
    """Another run holds the workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def holder(workdir: str) -> dict | None:
    """The lock's contents, or None when the workdir is free."""
    location = storage.path(storage.join(workdir, LOCK_FILE))
    with storage.errors_named(location, "read"):
        if not location.exists():
            return None
        try:
            return json.loads(location.read_text())
        except json.JSONDecodeError:  # a lock being written, or cut short: someone is there
            return {"host": "?", "pid": -1, "started": "?", "refreshed": time.time()}


def left_behind(lock: dict, now: float | None = None) -> bool:
    """Whether the run that wrote `lock` is gone: its process is dead (same host), or it has
    not refreshed the lock for STALE_AFTER_S (another host)."""
    if lock.get("host") == socket.gethostname() and int(lock.get("pid", -1)) > 0:
        return not _alive(int(lock["pid"]))
    return (now or time.time()) - float(lock.get("refreshed", 0)) > STALE_AFTER_S


def describe(lock: dict) -> str:
    return (f"host {lock.get('host')}, process {lock.get('pid')}, started {lock.get('started')}"
            f" ({lock.get('command', 'a run')})")


def acquire(workdir: str, command: str = "") -> tuple[dict, str]:
    """Take the workdir's lock for this process, or raise WorkdirInUse naming the holder.
    Returns the lock written and a line to print when a dead run's lock was taken over ('')."""
    target = storage.join(workdir, LOCK_FILE)
    lock = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "refreshed": time.time(),
            "command": command}
    taken_over = ""
    storage.check_writable(workdir)  # a missing bucket, a file, no permission: one line
    current = holder(workdir)
    if current is not None:
        if not left_behind(current):
            raise WorkdirInUse(
                f"{workdir} is in use by another run ({describe(current)}); wait for it to "
                f"end, stop it, or use another --workdir (a lock left by a dead run is taken "
                f"over: on this host at once, from another host after {STALE_AFTER_S:.0f} s)")
        taken_over = f"taking over {target}, left by a run that is gone ({describe(current)})"
    if not storage.is_remote(workdir) and current is None:
        try:  # two runs starting at the same moment: the file system picks one
            descriptor = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return acquire(workdir, command)  # the other one won: refused above, named
        with os.fdopen(descriptor, "w") as file:
            file.write(json.dumps(lock))
    else:
        storage.write_atomic(target, json.dumps(lock))
    return lock, taken_over


def release(workdir: str, lock: dict) -> None:
    """Remove the lock if it is still this run's."""
    current = holder(workdir)
    if current is not None and current.get("id") == lock["id"]:
        with contextlib.suppress(FileNotFoundError):
            storage.path(storage.join(workdir, LOCK_FILE)).unlink()


@contextlib.contextmanager
def held(workdir: str, command: str = "") -> Iterator[dict]:
    """The workdir's lock for the duration, refreshed every REFRESH_S in a daemon thread."""
    lock, taken_over = acquire(workdir, command)
    if taken_over:
        print(taken_over)
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(REFRESH_S):
            with contextlib.suppress(OSError):  # a bucket's hiccup: the next refresh retries
                lock["refreshed"] = time.time()
                storage.write_atomic(storage.join(workdir, LOCK_FILE), json.dumps(lock))

    thread = threading.Thread(target=refresh, name="workdir-lock", daemon=True)
    thread.start()
    try:
        yield lock
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(OSError):
            release(workdir, lock)


@contextlib.contextmanager
def one_run(workdir: str, command: str = "") -> Iterator[None]:
    """The lock `held` by process 0 for every process of the run; the others learn from it
    whether it got the lock, so that all of them stop when it did not."""
    import jax
    import numpy as np

    with contextlib.ExitStack() as stack:
        refusal = ""
        if jax.process_index() == 0:
            try:
                stack.enter_context(held(workdir, command))
            except WorkdirInUse as error:
                refusal = str(error)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            if multihost_utils.broadcast_one_to_all(np.int32(bool(refusal))) and not refusal:
                refusal = f"{workdir} is in use by another run (process 0's error names it)"
        if refusal:
            raise WorkdirInUse(refusal)
        yield
