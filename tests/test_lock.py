"""One run a workdir (hrnet_jax/training/lock.py): a second run on a workdir in use is refused
at once naming the first; a lock left by a dead run does not block the next."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from hrnet_jax.main import main
from hrnet_jax.training import lock


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(workdir, **fields) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "id": "another",
              "started": "2026-12-04 09:00:00 UTC", "refreshed": time.time(),
              "command": "train seg_synthetic", **fields}
    (workdir / lock.LOCK_FILE).write_text(json.dumps(record))


def test_a_workdir_in_use_is_refused_naming_the_run_that_holds_it(tmp_path):
    write_lock(tmp_path)  # this very process: alive
    with pytest.raises(lock.WorkdirInUse, match=rf"in use by another run \(host "
                       rf"{socket.gethostname()}, process {os.getpid()}, started 2026-12-04"):
        lock.acquire(str(tmp_path))


def test_the_lock_is_held_for_the_run_and_released_after(tmp_path):
    with lock.held(str(tmp_path), "train x") as held:
        on_disk = json.loads((tmp_path / lock.LOCK_FILE).read_text())
        assert on_disk["id"] == held["id"] and on_disk["pid"] == os.getpid()
        with pytest.raises(lock.WorkdirInUse):
            lock.acquire(str(tmp_path))
    assert not (tmp_path / lock.LOCK_FILE).exists()


@pytest.mark.parametrize("fields,taken", [
    (dict(pid=0), True),  # filled in below: a process of this host that has exited
    (dict(host="elsewhere", refreshed=time.time() - 2 * lock.STALE_AFTER_S), True),
    (dict(host="elsewhere"), False),  # refreshed just now by a run on another host
])
def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path, fields, taken):
    write_lock(tmp_path, **{**fields, **({"pid": dead_pid()} if fields.get("pid") == 0 else {})})
    if taken:
        written, said = lock.acquire(str(tmp_path))
        assert "taking over" in said and "a run that is gone" in said
        assert json.loads((tmp_path / lock.LOCK_FILE).read_text())["id"] == written["id"]
    else:
        with pytest.raises(lock.WorkdirInUse, match="host elsewhere"):
            lock.acquire(str(tmp_path))


def test_a_second_run_on_the_workdir_stops_before_writing_anything(tmp_path, capsys):
    write_lock(tmp_path)
    assert main(["--experiment=seg_synthetic:smoke", f"--workdir={tmp_path}"]) == 2
    assert f"process {os.getpid()}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock.LOCK_FILE]
