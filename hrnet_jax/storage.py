"""Where a run's files live: local disk or a bucket (`gs://`, `s3://`), through one path layer,
`etils.epath` (the one orbax and tfds use). Local paths behave as they always did.

An object store is not a disk, and the run is built for what it cannot do:
- nothing is appended to and nothing is renamed: a file is written whole in one go
  (`write_atomic`: locally a temporary file renamed over it; on a bucket one object upload,
  which readers see entirely or not at all), and a folder set aside is copied, then deleted
  (`move`);
- listings may lag on some stores: the newest checkpoint is orbax's to find;
- ArrayRecord's reader opens local files only: a dataset prepared into a bucket is copied to
  each host's local disk once (`stage`) and read there, and `prepare` into a bucket builds on
  local disk, then uploads (`copy_tree`).
Errors of the storage layers become one `StorageError` line naming the path and what to check.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import BinaryIO, Iterator

import numpy as np
from etils import epath

REMOTE_SCHEMES = ("gs://", "s3://", "az://", "hf://")
# Staged copies of bucket datasets go below $HRNET_JAX_CACHE (read at each use), else here.
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "hrnet_jax")


class StorageError(OSError):
    """A bucket or folder that cannot be read or written: one line, the path, what to check."""


def is_remote(location: str | os.PathLike) -> bool:
    return os.fspath(location).startswith(REMOTE_SCHEMES)


def path(location: str | os.PathLike) -> epath.Path:
    """`location` as an epath (a local one with `~` expanded)."""
    text = os.fspath(location)
    return epath.Path(text if is_remote(text) else os.path.expanduser(text))


def join(location: str | os.PathLike, *parts: str) -> str:
    """`location/part/...` as a string, a bucket's `gs://` kept."""
    return os.fspath(path(location).joinpath(*parts))


def describe(error: BaseException) -> str:
    """The first line of what a storage layer raised, with its type."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def what_to_check(location: str | os.PathLike) -> str:
    if is_remote(location):
        return ("check that the bucket exists, that this machine's credentials may read and "
                "write it (gcloud auth application-default login, or the VM's service account), "
                "and that the cloud extra is installed (pip install -e \".[gcs]\")")
    return "check that the folder exists and is writable, and that the disk has room"


@contextlib.contextmanager
def errors_named(location: str | os.PathLike, doing: str) -> Iterator[None]:
    """Any storage failure inside becomes `StorageError("cannot DOING LOCATION (...); check ...")`."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, RuntimeError, ValueError, ImportError) as error:
        raise StorageError(f"cannot {doing} {os.fspath(location)} ({describe(error)}); "
                           f"{what_to_check(location)}") from error


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` and write, read back and delete a small object there, so that a bucket
    that does not exist or may not be written is said before anything is built."""
    probe = path(folder) / f".hrnet_jax_probe_{os.getpid()}"
    with errors_named(folder, "write to"):
        path(folder).mkdir(parents=True, exist_ok=True)
        probe.write_text("probe")
        if probe.read_text() != "probe":
            raise OSError("an object written there read back differently")
        probe.unlink()


@contextlib.contextmanager
def _written_whole(target: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write `target` through, which appears whole or not at all: locally a
    temporary file renamed over it at the end; on a bucket one object upload, discarded if the
    writing fails (closing would commit a part)."""
    if is_remote(target):
        writer = path(target).open("wb")
        try:
            yield writer
        except BaseException:
            getattr(writer, "discard", lambda: None)()
            raise
        writer.close()
        return
    target = os.path.expanduser(os.fspath(target))
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(target) or ".",
                                             prefix=".partial-")
    try:
        with os.fdopen(descriptor, "wb") as writer:
            yield writer
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_atomic(location: str | os.PathLike, data: bytes | str) -> None:
    """Write a whole file so that a reader sees the old one or the new one, never a part."""
    with _written_whole(location) as writer:
        writer.write(data.encode() if isinstance(data, str) else data)


def write_png(location: str | os.PathLike, rgb: np.ndarray) -> None:
    """An RGB (or grey) uint8 picture as a PNG file, local or in a bucket."""
    import cv2

    picture = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, encoded = cv2.imencode(".png", picture)
    if not ok:
        raise ValueError(f"could not encode the picture for {location} as PNG")
    write_atomic(location, encoded.tobytes())


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Stream one file to another place, either local or in a bucket, whole or not at all."""
    with path(source).open("rb") as reader, _written_whole(target) as writer:
        while chunk := reader.read(16 << 20):
            writer.write(chunk)


def files_under(folder: str | os.PathLike) -> list[epath.Path]:
    """Every file below `folder` (recursively), sorted: one listing a folder (epath's `rglob`
    refuses buckets, and its `walk` drops the `gs://`)."""
    found = []
    for child in path(folder).iterdir():
        found.extend(files_under(child) if child.is_dir() else [child])
    return sorted(found)


def copy_tree(source: str | os.PathLike, target: str | os.PathLike,
              progress: str | None = None, last: tuple[str, ...] = ()) -> int:
    """Copy every file below `source` to the same place below `target` (either may be a bucket);
    returns the bytes copied. `progress`: the description of a progress bar in bytes; `last`:
    names of files copied after all the others (a marker that the whole is there)."""
    from tqdm import tqdm

    source_path, target_path = path(source), path(target)
    files = sorted(files_under(source_path), key=lambda f: (f.name in last, os.fspath(f)))
    sizes = [f.stat().length for f in files]
    copied = 0
    with tqdm(total=sum(sizes), desc=progress, unit="B", unit_scale=True,
              disable=progress is None, leave=False) as bar:
        for file, size in zip(files, sizes):
            copy_file(file, target_path / os.fspath(file.relative_to(source_path)))
            copied += size
            bar.update(size)
    return copied


def move(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move a folder: a rename on local disk; on a bucket, where there is no rename, a copy of
    every object followed by the deletion of the originals (the copy is whole before anything
    is deleted)."""
    if not is_remote(source):
        os.replace(os.path.expanduser(os.fspath(source)), os.path.expanduser(os.fspath(target)))
        return
    copy_tree(source, target)
    path(source).rmtree()


def cache_root() -> str:
    """This host's cache of the project: $HRNET_JAX_CACHE, else ~/.cache/hrnet_jax."""
    return os.path.expanduser(os.environ.get("HRNET_JAX_CACHE") or DEFAULT_CACHE_DIR)


def cache_folder(location: str | os.PathLike) -> str:
    """This host's local folder for a staged copy of `location` (a bucket path)."""
    text = os.fspath(location).rstrip("/")
    scheme, _, rest = text.partition("://")
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return os.path.join(cache_root(), "staged", scheme,
                        rest.replace("/", "_")[:120] + "-" + digest)


def stage(remote_folder: str | os.PathLike, local_folder: str | os.PathLike,
          description: str = "staging") -> int:
    """Make `local_folder` a copy of `remote_folder`: files already there with the same size are
    kept, the others downloaded (`copy_file`: processes of one host staging together, or a
    staging killed midway, leave only whole files). Returns the bytes downloaded."""
    from tqdm import tqdm

    remote = path(remote_folder)
    with errors_named(remote_folder, "read"):
        files = [(f, f.stat().length) for f in files_under(remote)]
    if not files:
        raise StorageError(f"cannot read {os.fspath(remote_folder)}: nothing is there; "
                           f"{what_to_check(remote_folder)}")
    missing = []
    for file, size in files:
        local = os.path.join(local_folder, os.fspath(file.relative_to(remote)))
        if not (os.path.exists(local) and os.path.getsize(local) == size):
            missing.append((file, size, local))
    total = sum(size for _, size, _ in missing)
    with tqdm(total=total, desc=description, unit="B", unit_scale=True, leave=False,
              disable=not missing) as bar, errors_named(remote_folder, "read"):
        for file, size, local in missing:
            copy_file(file, local)
            bar.update(size)
    return total


@contextlib.contextmanager
def local_file(location: str | os.PathLike) -> Iterator[str]:
    """A local path holding the file at `location`: itself when local; a temporary copy of a
    bucket's file (for readers that open local files only: torch.load, safetensors)."""
    if not is_remote(location):
        yield os.path.expanduser(os.fspath(location))
        return
    with tempfile.TemporaryDirectory(prefix="hrnet_jax_copy_") as folder:
        local = os.path.join(folder, path(location).name)
        with errors_named(location, "read"):
            copy_file(location, local)
        yield local
