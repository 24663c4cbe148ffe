"""``dermino study create|serve|analyse|export``: run a two-round reader study end to end."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("study", help="two-round reader study: unaided, then with the AI's help",
                              description="Set up, serve, export and analyse a human-AI reader study.")
    sub = p.add_subparsers(dest="study_command", metavar="STEP")
    sub.required = True

    c = sub.add_parser("create", help="sample cases, precompute the AI's help, issue reader links")
    c.add_argument("--manifest", required=True, help="manifest CSV/Parquet with labelled images")
    c.add_argument("--cases", type=int, required=True, help="number of cases (stratified by diagnosis)")
    c.add_argument("--readers", required=True, help="CSV with columns name[,experience]")
    c.add_argument("--classifier", required=True, help="a 'dermino classifier train' folder")
    c.add_argument("--index", help="a 'dermino index build' folder (similar cases in round 2)")
    c.add_argument("--out", required=True, help="new study folder")
    c.add_argument("--split", help="only images of this manifest split (e.g. test)")
    c.add_argument("--labels", help="comma-separated label space readers choose from "
                   "(default: the classifier's classes); the same for every reader")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--name", default="", help="study name (default: the folder name)")
    c.add_argument("--db-url", help="SQLAlchemy URL (default: SQLite study.db in the folder, WAL mode)")
    c.set_defaults(func=_create)

    s = sub.add_parser("serve", help="the study web app (reader and admin pages)")
    s.add_argument("study", help="study folder")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    s.add_argument("--port", type=int, default=8010)
    s.set_defaults(func=_serve)

    a = sub.add_parser("analyse", aliases=["analyze"], help="accuracy, paired tests, switching, agreement, plots")
    a.add_argument("study", help="study folder, or an answers CSV from 'study export'")
    a.add_argument("--out", required=True, help="results folder (results JSON + plots; 'dermino report' reads it)")
    a.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over readers for CIs")
    a.set_defaults(func=_analyse)

    e = sub.add_parser("export", help="all answers to CSV")
    e.add_argument("study", help="study folder")
    e.add_argument("--out", required=True, help="CSV path")
    e.set_defaults(func=_export)


def _create(args: argparse.Namespace) -> int:
    from dermino.study.setup import create_study

    made = create_study(args.manifest, args.cases, args.readers, args.classifier, args.index, args.out,
                        seed=args.seed, name=args.name, db_url=args.db_url, split=args.split,
                        labels=args.labels.split(",") if args.labels else None)
    print(f"study with {made.n_cases} cases and {len(made.reader_tokens)} readers -> {made.folder}")
    print(f"links (also in {made.folder / 'links.csv'}, keep it private); prefix them with the server's address:")
    print(f"  admin: /study/admin.html#token={made.admin_token}")
    for name, token in made.reader_tokens.items():
        print(f"  {name}: /study/reader.html#token={token}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dermino.study.app import create_study_app
    from dermino.study.store import StudyStore

    if not (Path(args.study) / "study.json").is_file():
        raise FileNotFoundError(f"{args.study}: not a study folder (no study.json); run 'dermino study create'")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: put the study behind TLS (tokens travel in headers)", args.host)
    store = StudyStore(args.study)
    print(f"study {store.name!r}: {store.n_cases} cases; http://{args.host}:{args.port}/study/reader.html#token=...",
          flush=True)
    uvicorn.run(create_study_app(store), host=args.host, port=args.port, log_level="warning")
    return 0


def _answers(study: str) -> tuple[object, list[str] | None, str]:
    import pandas as pd

    path = Path(study)
    if path.is_file():
        return pd.read_csv(path, keep_default_na=False), None, path.stem
    from dermino.study.store import StudyStore

    store = StudyStore(path)
    return store.answers_frame(), store.labels, store.name


def _analyse(args: argparse.Namespace) -> int:
    from dermino.study.analysis import analyse, write_analysis

    answers, labels, name = _answers(args.study)
    res = analyse(answers, labels, n_boot=args.bootstrap)
    path = write_analysis(res, name, args.out, {"study": str(args.study), "bootstrap": args.bootstrap})
    m = res.metrics
    print(f"{len(res.per_reader)} readers: accuracy {m['accuracy_round1'].value:.3f} -> {m['accuracy_round2'].value:.3f}"
          f" (change {m['accuracy_change'].value:+.3f}, paired t p={m['p_ttest'].value:.3g},"
          f" Wilcoxon p={m['p_wilcoxon'].value:.3g})")
    print(f"results -> {path}; HTML: dermino report {args.out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from dermino.files import write_text_atomic
    from dermino.study.store import StudyStore, export_csv

    df = StudyStore(args.study).answers_frame()
    write_text_atomic(args.out, export_csv(df))
    print(f"{len(df)} answers -> {args.out}")
    return 0
