"""The `hrnet-jax` command: subcommands that read naturally, each the same as a
`python -m hrnet_jax.main` (or `python -m hrnet_jax.data.prepare`) form.

    hrnet-jax list
    hrnet-jax train seg_synthetic --workdir /tmp/seg_synthetic
    hrnet-jax eval seg_synthetic --workdir /tmp/seg_synthetic
    hrnet-jax predict seg_synthetic --workdir /tmp/seg_synthetic --input street.png
    hrnet-jax export seg_synthetic --workdir /tmp/seg_synthetic --output model.jax
    hrnet-jax config seg_cityscapes --set optim.learning_rate=0.02
    hrnet-jax prepare cityscapes --manual_dir ~/downloads/cityscapes
"""

from __future__ import annotations

import argparse
import sys

# subcommand -> (help, the main.py mode or None, the options it takes beyond the experiment)
COMMANDS = {
    "train": ("train an experiment, or resume it in its workdir", "train",
              ("workdir", "set", "hosts")),
    "eval": ("evaluate the workdir's latest checkpoint", "eval", ("workdir", "set", "from_init")),
    "predict": ("the task's pictures of image files (or of evaluation examples)", "predict",
                ("workdir", "set", "input", "output", "boxes", "from_init")),
    "export": ("write the latest checkpoint as a self-contained inference artifact", "export",
               ("workdir", "set", "output", "from_init")),
    "config": ("print the experiment's fully resolved config", None, ("set",)),
}

OPTIONS = {
    "workdir": [(("--workdir",), dict(required=True, help="the run's folder: config.json, "
                                                          "metrics.jsonl, checkpoints/, ..."))],
    "set": [(("--set",), dict(dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                              help="override a config field, e.g. optim.learning_rate=0.02"))],
    "input": [(("--input",), dict(help="an image file or a folder of images"))],
    "output": [(("--output",), dict(help="predict: the pictures' folder; export: the file"))],
    "boxes": [(("--boxes",), dict(help="pose: person boxes, a JSON list of [x, y, w, h]"))],
    "from_init": [(("--from_init",), dict(action="store_true",
                                          help="use the initialisation when there is no "
                                               "checkpoint"))],
    "hosts": [(("--coordinator_address",), dict(help="multi-host: host:port of process 0")),
              (("--num_processes",), dict(type=int, help="multi-host: how many processes")),
              (("--process_id",), dict(type=int, help="multi-host: this process's index")),
              (("--tpu_pod",), dict(action="store_true", help="initialise from the TPU pod"))],
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hrnet-jax", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="the experiments, one line each",
                        description="the experiments, one line each")
    for name, (text, _, options) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("experiment", help="NAME or NAME:VARIANT (hrnet-jax list)")
        for option in options:
            for flags, kwargs in OPTIONS[option]:
                sub.add_argument(*flags, **kwargs)
    prepare = commands.add_parser("prepare", help="prepare a dataset once into ArrayRecord",
                                  description="prepare a dataset once into ArrayRecord")
    prepare.add_argument("dataset", help="cityscapes, coco_keypoints, mpii, wflw, ...")
    prepare.add_argument("--manual_dir", required=True, help="the official downloads")
    prepare.add_argument("--data_dir", help="where the prepared files go "
                                            "(default ~/tensorflow_datasets)")
    return top


def main_arguments(args: argparse.Namespace) -> list[str]:
    """The `python -m hrnet_jax.main` arguments of a parsed subcommand."""
    _, mode, _ = COMMANDS[args.command]
    argv = [f"--experiment={args.experiment}"]
    argv += [f"--mode={mode}"] if mode else ["--print_config"]
    for key in ("workdir", "input", "output", "boxes", "coordinator_address", "num_processes",
                "process_id"):
        if getattr(args, key, None) is not None:
            argv.append(f"--{key}={getattr(args, key)}")
    for flag in ("from_init", "tpu_pod"):
        if getattr(args, flag, False):
            argv.append(f"--{flag}")
    return argv + [f"--set={assignment}" for assignment in getattr(args, "overrides", [])]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "prepare":
        from hrnet_jax.data import prepare

        prepare.main([args.dataset, f"--manual_dir={args.manual_dir}",
                      *([f"--data_dir={args.data_dir}"] if args.data_dir else [])])
        return 0
    from hrnet_jax import main as run

    return run.main(["--list"] if args.command == "list" else main_arguments(args))


if __name__ == "__main__":
    sys.exit(main())
