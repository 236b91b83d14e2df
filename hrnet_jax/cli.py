"""The command line's one definition of its options, for both front ends: the `hrnet-jax`
subcommands and `python -m hrnet_jax.main`. Both parse into the same namespace, which
`hrnet_jax.main.run` executes, so that an option added here exists in both.

    hrnet-jax list
    hrnet-jax train seg_synthetic --workdir /tmp/seg_synthetic
    hrnet-jax eval seg_synthetic --workdir /tmp/seg_synthetic
    hrnet-jax predict seg_synthetic --workdir /tmp/seg_synthetic --input street.png
    hrnet-jax export seg_synthetic --workdir /tmp/seg_synthetic --output model.jax
    hrnet-jax export seg_synthetic --workdir /tmp/seg_synthetic --format=onnx
    hrnet-jax config seg_cityscapes:w18,ohem --set optim.learning_rate=0.02
    hrnet-jax prepare cityscapes --manual_dir ~/downloads/cityscapes
"""

from __future__ import annotations

import argparse
import sys

EXPERIMENT_HELP = "NAME or NAME:VARIANT,... (see --list / hrnet-jax list)"

# Every option a run takes: name -> (flags, argparse settings). The subcommands take the ones
# COMMANDS names; `python -m hrnet_jax.main` takes them all.
OPTIONS = {
    "workdir": (("--workdir",), dict(help="the run's folder (local or gs://...): config.json, "
                                          "metrics.jsonl, checkpoints/, pictures/")),
    "set": (("--set",), dict(dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                             help="override a config field, e.g. --set optim.learning_rate=0.02")),
    "input": (("--input",), dict(help="predict: an image file, a folder of images or frames, "
                                      "or a video (.mp4)")),
    "output": (("--output",), dict(help="predict: where the pictures go (default "
                                        "WORKDIR/predictions); export: the artifact's file")),
    "format": (("--format",), dict(choices=("stablehlo", "onnx"), default="stablehlo",
                                   help="export: StableHLO for jax (model.jax) or ONNX for "
                                        "onnxruntime, TensorRT, OpenVINO (model.onnx)")),
    "boxes": (("--boxes",), dict(help="predict, pose: person boxes, a JSON list of [x, y, w, h] "
                                      "or of COCO detections")),
    "detector": (("--detector",), dict(help="predict, pose: the workdir of a detection run whose "
                                            "persons (score >= 0.5) the pose model is run on")),
    "from_init": (("--from_init",), dict(action="store_true",
                                         help="eval / predict / export: use the initialisation "
                                              "(or model.pretrained) when the workdir holds no "
                                              "checkpoint, instead of refusing")),
    "coordinator_address": (("--coordinator_address",),
                            dict(help="multi-host: host:port of process 0")),
    "num_processes": (("--num_processes",), dict(type=int, help="multi-host: how many processes")),
    "process_id": (("--process_id",), dict(type=int, help="multi-host: this process's index")),
    "heartbeat_timeout": (("--heartbeat_timeout",),
                          dict(type=int, default=100, help="multi-host: seconds after which a "
                                                           "silent process counts as dead")),
    "tpu_pod": (("--tpu_pod",), dict(action="store_true",
                                     help="initialise from the TPU pod environment")),
}
HOSTS = ("coordinator_address", "num_processes", "process_id", "heartbeat_timeout", "tpu_pod")

# subcommand -> (help, the run's mode, its options)
COMMANDS = {
    "train": ("train an experiment, or resume it in its workdir", "train",
              ("workdir", "set", *HOSTS)),
    "eval": ("evaluate the workdir's latest checkpoint", "eval",
             ("workdir", "set", "from_init", *HOSTS)),
    "predict": ("the task's pictures of image files (or of evaluation examples)", "predict",
                ("workdir", "set", "input", "output", "boxes", "detector", "from_init", *HOSTS)),
    "export": ("write the latest checkpoint as a self-contained inference artifact", "export",
               ("workdir", "set", "output", "format", "from_init")),
    "config": ("print the experiment's fully resolved config", "config", ("set",)),
}


def _add(parser: argparse.ArgumentParser, names: tuple[str, ...], required: tuple[str, ...] = ()
         ) -> None:
    for name in names:
        flags, settings = OPTIONS[name]
        parser.add_argument(*flags, **settings, **({"required": True} if name in required else {}))


def main_parser() -> argparse.ArgumentParser:
    """`python -m hrnet_jax.main`'s parser: every option, the mode as `--mode`."""
    parser = argparse.ArgumentParser(
        prog="python -m hrnet_jax.main",
        description="Train, evaluate, predict with or export an experiment (--list shows them).")
    parser.add_argument("--experiment", help=EXPERIMENT_HELP)
    parser.add_argument("--mode", default="train", choices=[mode for _, mode, _ in
                                                            COMMANDS.values() if mode != "config"],
                        help="train (or resume), eval the latest checkpoint, predict pictures, "
                             "export an inference artifact to --output")
    parser.add_argument("--list", action="store_true", help="print the experiments and exit")
    parser.add_argument("--print_config", action="store_true",
                        help="print the fully resolved config (after --set) as JSON and exit")
    _add(parser, tuple(OPTIONS))
    return parser


def command_parser() -> argparse.ArgumentParser:
    """`hrnet-jax`'s parser: a subcommand a mode, each with its own options."""
    top = argparse.ArgumentParser(prog="hrnet-jax", description=__doc__.split("\n\n")[0])
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="the experiments and their variants",
                        description="the experiments and their variants")
    for name, (text, _, options) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("experiment", help=EXPERIMENT_HELP)
        _add(sub, options, required=("workdir",))
    prepare = commands.add_parser("prepare", help="prepare a dataset once into ArrayRecord",
                                  description="prepare a dataset once into ArrayRecord")
    prepare.add_argument("dataset", help="cityscapes, coco_keypoints, mpii, wflw, ...")
    prepare.add_argument("--manual_dir", required=True, help="the official downloads")
    prepare.add_argument("--data_dir", help="where the prepared files go "
                                            "(default ~/tensorflow_datasets)")
    return top


def run_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """A parsed subcommand as the namespace `python -m hrnet_jax.main` parses to."""
    run = main_parser().parse_args([])  # every option at its default
    if args.command == "list":
        run.list = True
        return run
    _, mode, options = COMMANDS[args.command]
    run.experiment = args.experiment
    if mode == "config":
        run.print_config = True
    else:
        run.mode = mode
    for name in options:
        destination = OPTIONS[name][1].get("dest", name)
        setattr(run, destination, getattr(args, destination))
    return run


def main(argv: list[str] | None = None) -> int:
    args = command_parser().parse_args(argv)
    if args.command == "prepare":
        from hrnet_jax.data import prepare

        prepare.main([args.dataset, f"--manual_dir={args.manual_dir}",
                      *([f"--data_dir={args.data_dir}"] if args.data_dir else [])])
        return 0
    from hrnet_jax.main import run

    return run(run_arguments(args))


if __name__ == "__main__":
    sys.exit(main())
