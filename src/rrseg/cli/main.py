"""``rrseg`` entry point: a subcommand per module; expected errors become one line and exit status 2."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import sys

# OpenMP threads that spin while waiting starve everything else on a busy or small machine (a training step
# of the CPU demo went from 0.5 s to 5.7 s next to another job); sleeping waits cost little elsewhere.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Iterator, Sequence

from rrseg import __version__
from rrseg.allocator import tune_malloc
from rrseg.errors import RRSegError

# (command, module under rrseg.cli, one-line help). Modules are imported lazily, when their command runs,
# except for building --help, which imports each module's `add_arguments` (cheap: no torch at import).
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "demo", "CE vs Region Rebalance on the synthetic long-tailed dataset, on a CPU, in minutes"),
    ("init", "init", "write a starter training config for your own dataset folder, sized from the data"),
    ("stats", "stats", "per-class image (region) and pixel counts of a dataset or a folder of label files"),
    ("score", "score", "score prediction PNGs against ground-truth labels, per class and frequency group"),
    ("train", "train", "train a model from a YAML config (DDP with torchrun, AMP, exact resume)"),
    ("eval", "eval", "evaluate a checkpoint: per class and per frequency group, TTA, sliding window"),
    ("config", "config", "print a config resolved with every default, list the packaged presets, key reference"),
    ("predict", "predict", "predict index PNGs and colour overlays for images"),
    ("compare", "compare", "compare two runs class by class, with a plot against region count"),
    ("make-synthetic", "make_synthetic", "write the synthetic long-tailed dataset (ADE20K-shaped statistics)"),
    ("check-data", "check_data", "scan a dataset and report every problem (corrupt files, bad labels, ...)"),
    ("convert", "convert", "convert raw COCO-Stuff / Cityscapes labels to train-id PNGs"),
]


class _ConsoleHandler(logging.Handler):
    """Plain messages: below WARNING to stdout (what the library printed before it logged), WARNING and
    above to stderr. The streams are looked up at each message, so redirections (rich's progress display,
    pytest's capture) see them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def console_logging(level: int = logging.INFO) -> Iterator[None]:
    """The ``rrseg`` loggers print plain messages at ``level`` and above while the command runs; the
    logger's handlers and level are restored afterwards (``main`` may be called more than once in a process)."""
    logger = logging.getLogger("rrseg")
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def _verbosity_arguments(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="results, warnings and errors only: no progress (bars, per-image lines, set-up "
                             "messages); the final tables and the paths written stay")
    parser.add_argument("-v", "--verbose", action="count", default=default, help="also debug messages")


def log_level(args: argparse.Namespace) -> int:
    """-q: rrseg.output.RESULT (results, warnings, errors); -v: DEBUG; else INFO (progress too)."""
    if getattr(args, "quiet", False):
        from rrseg.output import RESULT

        return RESULT
    return logging.DEBUG if getattr(args, "verbose", 0) else logging.INFO


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrseg", description="Region Rebalance for long-tailed semantic segmentation."
    )
    parser.add_argument("--version", action="version", version=f"rrseg {__version__}")
    _verbosity_arguments(parser, default=None)
    # also accepted after the command (rrseg demo -q); SUPPRESS: absent there, the top-level value stays
    verbosity = argparse.ArgumentParser(add_help=False)
    _verbosity_arguments(verbosity, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in COMMANDS:
        mod = importlib.import_module(f"rrseg.cli.{module}")
        p = sub.add_parser(
            name,
            parents=[verbosity],
            help=help_text,
            description=(mod.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def one_line(message: str) -> str:
    """The message itself, also when a DataLoader worker re-raised it wrapped in its traceback."""
    lines = message.strip().splitlines()
    if len(lines) > 1 and "Original Traceback" in message:
        return lines[-1].split("Error: ", 1)[-1]
    return " ".join(line.strip() for line in lines)


def error_line(command: str, message: str) -> str:
    return f"rrseg {command}: error: {one_line(message)}"


def ranks_end_together(command: str) -> contextlib.AbstractContextManager:
    """Under torchrun (WORLD_SIZE > 1): an error on any rank ends every rank, each with its line
    (rrseg.engine.distributed; torch is imported only then)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
    from rrseg.engine.distributed import ranks_end_together

    return ranks_end_together(lambda message: print(error_line(command, message), file=sys.stderr, flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    tune_malloc()  # before torch allocates anything (rrseg.allocator: a CPU training step 0.7-0.8x)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        with console_logging(log_level(args)), ranks_end_together(args.command):
            from rrseg.cli._extensions import import_modules

            import_modules(getattr(args, "imports", ()))  # --import: before the command reads any config
            return int(args._run(args) or 0)
    except RRSegError as e:
        print(error_line(args.command, str(e)), file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"rrseg {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # after an error the group outlived ranks_end_together (the traceback held the trainer); free it
            # before exit: rrseg.engine.distributed._destroy_process_group says why
            gc.collect()


if __name__ == "__main__":
    sys.exit(main())
