"""``dermino <command>``: one entry point, each command registered by the module that owns it.

Each command module exposes ``register(subparsers)``; it adds its parser and sets
``func`` (called with the parsed args, returning an exit code). Modules are imported
lazily-by-name here so a broken optional feature never breaks the whole CLI.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command name -> module that defines ``register(subparsers)``
COMMANDS: dict[str, str] = {
    "data": "dermino.data.cli",
    "knowledge": "dermino.knowledge.cli",
    "pretrain": "dermino.pretrain.cli",
    "embed": "dermino.evaluate.cli_embed",
    "maps": "dermino.evaluate.cli_maps",
    "evaluate": "dermino.evaluate.cli",
    "compare": "dermino.evaluate.cli_compare",
    "zero-shot": "dermino.evaluate.zero_shot",
    "segment": "dermino.segment.cli",
    "caption": "dermino.caption.cli",
    "federate": "dermino.federated.cli",
    "report": "dermino.report.cli",
    "demo": "dermino.demo",
    "classifier": "dermino.classifier.cli",
    "index": "dermino.serve.cli_index",
    "export": "dermino.serve.cli_export",
    "explain": "dermino.serve.cli_explain",
    "serve": "dermino.serve.cli",
    "study": "dermino.study.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dermino",
        description="Build, adapt, evaluate and deploy dermatology foundation models (DermINO).",
        epilog="Start with `dermino demo`; every command has --help.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("dermino"):
                continue  # feature not built yet
            raise
        module.register(sub)
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
