"""Command line: `python -m hrnet_jax.main --experiment=NAME[:VARIANT,...] --workdir=DIR
[--mode=train|eval|predict|export] [--set key=value ...]`; `--list` prints the experiments.

`--mode=predict` draws eval examples next to their ground truth, or, with `--input=IMAGE_OR_DIR
[--output=DIR]`, the task's pictures of any images (segmentation: colour mask and overlay;
pose: skeletons of the persons in `--boxes=JSON`, of those a detection run finds with
`--detector=WORKDIR`, or of the whole image taken as one person); a video is written back with
the pictures drawn.

Multi-host: pass --coordinator_address, --num_processes and --process_id (or run on a TPU pod,
where jax.distributed finds them itself).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import jax


def main(argv: list[str] | None = None) -> int:
    from hrnet_jax.cli import main_parser  # the options' one definition, shared with hrnet-jax

    return run(main_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Execute a parsed command line (of either front end); returns the exit status."""
    from hrnet_jax import config as config_lib, experiments

    if args.list:
        for name, (description, variants) in experiments.available().items():
            print(f"{name}  {description}")
            for variant, expected in variants.items():
                print(f"    :{variant:18s} {expected}")
        return 0
    if not args.experiment or not (args.workdir or args.print_config):
        print("error: --experiment and --workdir are required (or --list)", file=sys.stderr)
        return 2
    try:
        config = experiments.load(args.experiment)
        if args.workdir:  # a workdir's recorded settings are the default of every later command
            config = settings_of_workdir(args.workdir, config)
        for assignment in args.overrides:
            config_lib.apply_override(config, assignment)
        from hrnet_jax.tasks import check_pairing
        check_pairing(config)
        config_lib.validate(config)
    except (ValueError, OSError) as error:  # a bad setting; a workdir that cannot be read
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_lib.to_json(config))
        return 0
    if args.coordinator_address or args.tpu_pod:
        # CPU hosts exchange collectives over gloo (GPU and TPU backends use their own).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # A dead peer is noticed within heartbeat_timeout_seconds: the survivors exit, not hang.
        jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                                   heartbeat_timeout_seconds=args.heartbeat_timeout)

    from hrnet_jax import storage
    from hrnet_jax.predict import predict_files
    from hrnet_jax.training.checkpoint import RestoreError, saved_steps
    from hrnet_jax.training import lock
    from hrnet_jax.training.loop import Interrupted, Trainer, TrainingDiverged

    checkpoints = storage.join(args.workdir, "checkpoints")
    hold = contextlib.ExitStack()  # the workdir's lock, for the modes that write into it
    try:  # what is checked before anything compiles: the workdir, the saved config, the mesh
        if args.mode != "train" and not saved_steps(checkpoints) and not (
                args.from_init or config.model.pretrained):
            print(f"error: no checkpoint in {checkpoints} to {args.mode} with (is --workdir "
                  "right?); pass --from_init to use the initialisation, or --set "
                  "model.pretrained=FILE", file=sys.stderr)
            return 2
        if args.mode in ("train", "eval"):
            hold.enter_context(lock.one_run(args.workdir, f"{args.mode} {args.experiment}"))
        trainer = Trainer(config, args.workdir)
    except (FileNotFoundError, ValueError, storage.StorageError, lock.WorkdirInUse) as error:
        hold.close()
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if args.mode == "train":
            trainer.train()
        elif args.mode == "eval":
            trainer.evaluate()
        elif args.mode == "export":
            from hrnet_jax.export import FORMATS, export_run

            try:
                written = export_run(trainer, args.output or storage.join(
                    args.workdir, FORMATS[args.format]), args.format)
            except ValueError as error:  # a head the format cannot express
                print(f"error: {error}", file=sys.stderr)
                return 2
            print(f"wrote {written[0]} ({args.format}, with the weights) and {written[1]}")
        elif args.input:
            output = args.output or storage.join(args.workdir, "predictions")
            try:
                written, failures = predict_files(trainer, args.input, output, args.boxes,
                                                  args.detector)
            except (FileNotFoundError, ValueError, storage.StorageError) as error:  # the input or the boxes
                print(f"error: {error}", file=sys.stderr)
                return 2
            print(f"wrote {len(written)} {'video' if written[0].endswith('.mp4') else 'pictures'}"
                  f" to {output}" if written else f"wrote nothing to {output}")
            if failures:
                print(f"error: {len(failures)} of the images failed:\n  " + "\n  ".join(failures),
                      file=sys.stderr)
                return 1
        else:
            trainer.draw_pictures(trainer.restore_or_init())
    except TrainingDiverged as error:
        print(f"error: training diverged: {error}", file=sys.stderr)
        return 1
    except Interrupted as error:  # the first Ctrl-C: saved, as SIGTERM
        print(f"interrupted: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # the second Ctrl-C, or one outside training
        print("interrupted: stopped without saving (the last checkpoint is kept)",
              file=sys.stderr)
        return 130
    except storage.StorageError as error:  # a bucket gone, a full disk: the last checkpoint kept
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, RestoreError, NotImplementedError, config_lib.ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        trainer.tensorboard.close()  # in a bucket, the event files are uploaded now
        hold.close()
    # Process 0 alone draws pictures: everyone waits here, not at the shutdown barrier.
    from hrnet_jax.training.sharding import barrier
    barrier("hrnet_jax.main done")
    return 0


def settings_of_workdir(workdir: str, recipe):
    """The settings `workdir`'s run recorded (its last config.json or config.stepNNNNNN.json),
    when it ran this experiment: every `--set` of the training run holds for eval, predict,
    export and resumes without repeating it (a `--set` now still overrides). The recipe itself
    for a new workdir or another experiment (which the resume checks refuse or record)."""
    from hrnet_jax import config as config_lib, experiments
    from hrnet_jax.training.workdir import recorded_config

    recorded = recorded_config(workdir)
    if recorded is None or not experiments.same_experiment(recorded.name, recipe.name):
        return recipe
    recorded.name, recorded.description = recipe.name, recipe.description
    defaults = config_lib.flat(recipe)
    differing = [f"{key}={value}" for key, value in config_lib.flat(recorded).items()
                 if defaults.get(key) != value]
    if differing:
        print(f"{workdir}'s recorded settings apply (a --set overrides them): "
              + ", ".join(differing[:6]) + (f" and {len(differing) - 6} more"
                                             if len(differing) > 6 else ""), file=sys.stderr)
    return recorded


if __name__ == "__main__":
    sys.exit(main())
