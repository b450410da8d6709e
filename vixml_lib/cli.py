"""The ``vixml`` command. Each sub-command imports only what it needs, so that quick ones
(``evaluate``) never pay for torch or transformers."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _demo_data(args) -> int:
    from .data.demo import make_demo_dataset

    out = make_demo_dataset(args.out, preset=args.preset, seed=args.seed, overwrite=args.overwrite)
    print(f"demo dataset ({args.preset}, seed {args.seed}) in {out}")
    return 0


def _prepare(args) -> int:
    from .data.prepare import prepare_dataset

    ds = prepare_dataset(args.data, title_only=args.title_only, encoding=args.encoding, force=args.force)
    print(json.dumps(ds.summary(), indent=2))
    if args.tokenizer:
        from .data.tokens import tokenize_dataset

        for backbone in args.tokenizer:
            print(f"tokens: {tokenize_dataset(args.data, backbone, max_len=args.max_len, encoding=args.encoding)}")
    return 0


def _evaluate(args) -> int:
    from .io_utils import write_json
    from .metrics import evaluate_files

    metrics = evaluate_files(
        args.true, args.pred, train_path=args.train, filter_path=args.filter,
        A=args.A, B=args.B, k=args.k, recall_k=tuple(args.recall),
    )
    if args.json:
        write_json(args.json, metrics)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return 0


def _train(args) -> int:
    from .training import load_train_config, train

    config = load_train_config(args.config, out_dir=args.out, device=args.device, seed=args.seed)
    summary = train(config)
    print(json.dumps({"run": summary["run"], **{k: round(v, 2) for k, v in summary["final"].items()}}))
    return 0


def _pipeline(args) -> int:
    from .config import PipelineConfig, load_config
    from .pipeline import NotebookFailed, run_pipeline

    overrides = {"run_name": args.run_name, "dataset": args.dataset, "demo_preset": args.preset}
    config = load_config(PipelineConfig, args.params, overrides)
    run_dir = Path(args.out) if args.out else Path("reports") / config.run_name
    try:
        summary = run_pipeline(config, run_dir)
    except NotebookFailed as e:
        print(f"vixml pipeline: {e}", file=sys.stderr)
        return 1
    for entry in summary["notebooks"]:
        print(f"{entry['notebook']:<32} {entry['status']:<6} {entry['seconds']:8.1f} s")
    print(f"reports in {run_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vixml", description="ViXML workbench")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo-data", help="write the bundled multimodal demo dataset")
    d.add_argument("--preset", default="tiny", help="tiny (tests) or small (the demo)")
    d.add_argument("--out", required=True, help="dataset folder to write")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=_demo_data)

    r = sub.add_parser("prepare", help="convert json.gz to raw text + X_Y files, check, tokenise")
    r.add_argument("--data", required=True, help="dataset folder")
    r.add_argument("--encoding", default="utf-8", help="encoding of *.raw.txt (official files: latin-1)")
    r.add_argument("--title-only", dest="title_only", action="store_true", default=None)
    r.add_argument("--title-content", dest="title_only", action="store_false")
    r.add_argument("--force", action="store_true", help="convert even if outputs look up to date")
    r.add_argument("--tokenizer", action="append", help="backbone whose tokenizer to cache (repeatable)")
    r.add_argument("--max-len", type=int, default=32)
    r.set_defaults(func=_prepare)

    e = sub.add_parser("evaluate", help="XMC metrics (pyxclib-identical) of a sparse score matrix")
    e.add_argument("--true", required=True, help="ground truth *_X_Y.txt")
    e.add_argument("--pred", required=True, help="scipy sparse .npz score matrix (queries x labels)")
    e.add_argument("--train", help="training *_X_Y.txt, for propensity-scored metrics")
    e.add_argument("--A", type=float, default=0.6)
    e.add_argument("--B", type=float, default=2.6)
    e.add_argument("--filter", help="filter_labels file: (query, label) pairs removed first")
    e.add_argument("--k", type=int, default=5)
    e.add_argument("--recall", type=int, nargs="*", default=[100], help="recall cut-offs (default 100)")
    e.add_argument("--json", help="write the metrics here")
    e.set_defaults(func=_evaluate)

    t = sub.add_parser("train", help="train a dual encoder from a TrainConfig YAML (resumes when interrupted)")
    t.add_argument("--config", required=True, help="YAML with TrainConfig fields (see configs/train-*.yaml)")
    t.add_argument("--out", help="run folder (overrides out_dir)")
    t.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--seed", type=int)
    t.set_defaults(func=_train)

    q = sub.add_parser("pipeline", help="run the numbered notebooks with papermill into reports/RUN")
    q.add_argument("--params", help="YAML parameters file (see configs/)")
    q.add_argument("--out", help="run folder (default reports/<run_name>)")
    q.add_argument("--run-name", dest="run_name")
    q.add_argument("--dataset")
    q.add_argument("--preset", help="demo preset to generate when the dataset folder is missing")
    q.set_defaults(func=_pipeline)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: a clear message, no traceback
        print(f"vixml {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
