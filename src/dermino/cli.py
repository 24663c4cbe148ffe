"""``dermino <command>``: one entry point; every command lives in ``dermino/commands/<name>.py``.

Each command module exposes ``register(subparsers)``: it adds its parser and sets ``func``
(called with the parsed args, returning an exit code). Command modules hold argument parsing
and printing only; the work they call lives in the library packages. A command module that
fails to import fails the whole CLI with its real error: a broken import is a bug to see,
not a command to hide.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command name -> module under dermino.commands that defines ``register(subparsers)``
COMMANDS: dict[str, str] = {
    "data": "data",
    "knowledge": "knowledge",
    "pretrain": "pretrain",
    "embed": "embed",
    "backbones": "backbones",
    "maps": "maps",
    "evaluate": "evaluate",
    "compare": "compare",
    "leaderboard": "leaderboard",
    "zero-shot": "zero_shot",
    "segment": "segment",
    "caption": "caption",
    "federate": "federate",
    "report": "report",
    "demo": "demo",
    "classifier": "classifier",
    "index": "index",
    "export": "export",
    "explain": "explain",
    "serve": "serve",
    "study": "study",
}


def command_module(name: str):
    """The module that implements ``dermino <name>`` (imported on demand; errors propagate)."""
    return importlib.import_module(f"dermino.commands.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dermino",
        description="Build, adapt, evaluate and deploy dermatology foundation models (DermINO).",
        epilog="Start with `dermino demo`; every command has --help.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        command_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # ``key=value`` overrides may also follow options (``--resume a.b=1``)
        if isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        # user errors (bad input files, values, keys): one clear line, no traceback (-v shows it)
        if args.verbose or not _expected(exc):
            raise
        print(f"dermino {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _expected(exc: BaseException) -> bool:
    """A failure caused by the user's input rather than a bug: reported in one line."""
    if isinstance(exc, FileNotFoundError | ValueError | KeyError):
        return True
    # the error types of modules a command has loaded (importing them here would be slow)
    for module, name in (("dermino.models.weights", "WeightsError"), ("dermino.data.images", "ImageReadError"),
                         ("safetensors", "SafetensorError")):
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
