"""The ``jaxcompress`` command: run, sweep, inspect, eval.

Exit codes: 0 success; 2 a usage problem (bad arguments, missing or malformed config, unknown
config key, missing data set, unwritable output folder), reported as one line on stderr with
no traceback; 130 interrupted (Ctrl-C) after saving a checkpoint that ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from jaxcompress.cli._errors import Interrupted, UsageError, one_line

PROG = "jaxcompress"


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (the usage text stays on --help)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Compress JAX/Flax models while they train: run recipes, sweep them, "
        "inspect and evaluate the exported models.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    r = sub.add_parser(
        "run",
        help="train a recipe: float baseline, compressed training, evaluation, export, report",
        description="Train a recipe (configs/*.py): optional float baseline, compressed "
        "training, float vs compressed evaluation, per-layer summary, checkpoint, exported "
        "artifact, and a run folder with report.md, report.json and plots. Override any "
        "config value with --config.KEY=VALUE (e.g. --config.train.steps=200).",
    )
    r.add_argument("config", metavar="CONFIG", help="recipe file defining get_config()")
    r.add_argument("--out", metavar="DIR", help="run folder (default: config output.dir)")
    r.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in the run folder"
    )

    s = sub.add_parser(
        "sweep",
        help="run a grid of configs; table, accuracy-vs-size Pareto plot, best model",
        description="Run the Cartesian product of --grid values and name the smallest model "
        "whose accuracy is within --max-drop points of the float baseline.",
    )
    s.add_argument("config", metavar="CONFIG", help="recipe file defining get_config()")
    s.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a config key and its values, e.g. compress.bits=2,4,8 (repeatable)",
    )
    s.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        metavar="PP",
        help="accuracy budget in percentage points (default 0.5)",
    )
    s.add_argument("--out", metavar="DIR", help="sweep folder (default: <output.dir>-sweep)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep")

    i = sub.add_parser(
        "inspect",
        help="print an exported artifact's per-layer summary",
        description="Print what an exported artifact holds: model, data, "
        "per-layer bits/sparsity/bytes, storage and the metrics at export.",
    )
    i.add_argument("artifact", metavar="ARTIFACT", help="artifact folder or run folder")

    e = sub.add_parser(
        "eval",
        help="run an exported artifact on its data set's test split",
        description="Load an exported artifact as stored and evaluate it.",
    )
    e.add_argument("artifact", metavar="ARTIFACT", help="artifact folder or run folder")
    e.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="test",
        help="which split to evaluate (default test)",
    )
    return p


def _load_config(path: str, extra: Sequence[str]):
    from jaxcompress.cli import _config as config_lib

    overrides = config_lib.parse_override_args(extra)
    cfg = config_lib.load(path)
    for key, text in overrides:
        config_lib.override(cfg, key, text)
    return cfg


def _dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    if args.command in ("inspect", "eval") and extra:
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "run":
        cfg = _load_config(args.config, extra)
        from jaxcompress.cli import _run

        _run.run(args.config, cfg, out=args.out, resume=args.resume, overrides=extra)
    elif args.command == "sweep":
        cfg = _load_config(args.config, extra)
        from jaxcompress.cli import _sweep

        _sweep.sweep(
            args.config,
            cfg,
            args.grid,
            out=args.out,
            max_drop=args.max_drop,
            resume=args.resume,
            overrides=extra,
        )
    elif args.command == "inspect":
        from jaxcompress.cli import _inspect

        _inspect.inspect(args.artifact)
    elif args.command == "eval":
        from jaxcompress.cli import _inspect

        _inspect.evaluate(args.artifact, split=args.split)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxcompress`` command.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      The exit code: 0, 2 (usage problem, one line on stderr) or 130 (interrupted).

    Example:
      >>> main(["inspect", "/nonexistent"])  # doctest: +SKIP
      2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, extra = _parser().parse_known_args(argv)
        return _dispatch(args, extra)
    except UsageError as e:
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Interrupted as e:
        cmd = [PROG, *argv]
        if "--resume" not in cmd:
            cmd.append("--resume")
        print(
            f"{PROG}: {e.phase} training interrupted at step {e.step}/{e.total}; checkpoint "
            f"saved in {e.directory}; continue with: {shlex.join(cmd)}",
            file=sys.stderr,
        )
        return 130
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
