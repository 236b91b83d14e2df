"""What each install can do (pyproject.toml): the core install trains, evaluates, predicts and
exports (and loads the exported artifact); preparing datasets takes the `prepare` extra, and
without it `prepare` says so in one line."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def requirements() -> dict:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda specs: {spec.split(">")[0].split("=")[0].split("[")[0].split("<")[0]
                           for spec in specs}
    return {"core": names(project["dependencies"]),
            **{extra: names(specs) for extra, specs in project["optional-dependencies"].items()}}


def test_export_is_in_the_core_install_and_preparing_in_the_prepare_extra():
    found = requirements()
    assert "flatbuffers" in found["core"]  # jax.export's serialisation, writing and loading
    assert {"tensorflow-cpu", "importlib_resources"} <= found["prepare"]
    assert not {"tensorflow-cpu", "torch"} & found["core"]
    assert "hrnet_jax" in found["test"]  # the test extra includes the prepare extra


def test_prepare_without_its_extra_names_the_extra_in_one_line(tmp_path, shared_data):
    """The core install's situation, made here by hiding the module tfds's builders import."""
    code = ("import sys; sys.modules['importlib_resources'] = None\n"
            "from hrnet_jax.data import prepare\n"
            f"prepare.main(['cityscapes', '--manual_dir', {str(shared_data / 'cityscapes_mini')!r},"
            f" '--data_dir', {str(tmp_path)!r}])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors[-1].startswith("error: preparing datasets needs the prepare extra")
    assert "importlib_resources" in errors[-1] and "Traceback" not in result.stderr
