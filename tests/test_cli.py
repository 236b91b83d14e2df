"""The command line (hrnet_jax/cli.py): one definition of the options for `hrnet-jax` and
`python -m hrnet_jax.main`, so that the two cannot drift apart."""

from __future__ import annotations

import importlib.metadata
import json
import pathlib
import subprocess
import sys

from hrnet_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def options(parser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings} - {"-h", "--help"}


def subcommands(parser) -> dict:
    return next(a for a in parser._actions if a.dest == "command").choices


def test_every_option_of_one_front_end_exists_in_the_other():
    main_options = options(cli.main_parser())
    commands = subcommands(cli.command_parser())
    run_options = set().union(*(options(commands[name]) for name in cli.COMMANDS))
    # The main module's mode switches are the subcommands themselves.
    assert main_options - run_options == {"--experiment", "--mode", "--list", "--print_config"}
    assert run_options <= main_options
    assert "--heartbeat_timeout" in options(commands["train"])  # once missing from hrnet-jax


def test_a_subcommand_parses_to_what_the_main_module_parses():
    parsed = cli.command_parser().parse_args(
        ["predict", "pose_synthetic:smoke", "--workdir", "w", "--input", "a.png", "--from_init",
         "--set", "eval.flip=true"])
    assert vars(cli.run_arguments(parsed)) == vars(cli.main_parser().parse_args(
        ["--experiment=pose_synthetic:smoke", "--mode=predict", "--workdir=w", "--input=a.png",
         "--from_init", "--set=eval.flip=true"]))
    parsed = cli.command_parser().parse_args(["train", "seg_synthetic", "--workdir", "w",
                                              "--heartbeat_timeout", "7"])
    assert vars(cli.run_arguments(parsed)) == vars(cli.main_parser().parse_args(
        ["--experiment=seg_synthetic", "--workdir=w", "--heartbeat_timeout=7"]))


def test_the_console_script_runs_the_main_module(capsys):
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["hrnet-jax"] == "hrnet_jax.cli:main"
    assert cli.main(["list"]) == 0
    assert "seg_synthetic" in capsys.readouterr().out
    assert cli.main(["config", "seg_synthetic:smoke", "--set", "optim.learning_rate=0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["optim"]["learning_rate"] == 0.5
    for command in ("train", "eval", "predict", "export", "prepare"):
        help_text = subprocess.run([sys.executable, "-m", "hrnet_jax.cli", command, "--help"],
                                   capture_output=True, text=True, cwd=ROOT).stdout
        assert help_text.startswith(f"usage: hrnet-jax {command}") and "--" in help_text


def test_the_export_formats_offered_are_the_exporters():
    from hrnet_jax.export import FORMATS

    export = subcommands(cli.command_parser())["export"]
    offered = next(a for a in export._actions if a.dest == "format")
    assert tuple(offered.choices) == tuple(FORMATS) and offered.default == "stablehlo"
