"""The ``vixml`` command. Each sub-command imports only what it needs, so that quick ones
(``evaluate``) never pay for torch or transformers.

Bad input -- the project's own errors (:class:`vixml_lib.errors.VixmlError`, any
``ValueError``), a missing or unreadable file, a full disk -- is printed as ONE line
``vixml <command>: error: ...`` with exit status 2, after checks made before anything is
written. Anything else is an internal error: one line and exit status 1; ``-v`` adds the
traceback. A notebook that fails in ``vixml pipeline`` exits with status 1.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from .errors import ConfigError, VixmlError


def _demo_data(args) -> int:
    from .data.demo import make_demo_dataset

    try:
        out = make_demo_dataset(args.out, preset=args.preset, seed=args.seed, overwrite=args.overwrite)
    except FileExistsError as e:  # the builder's advice, in this command's words
        raise VixmlError(str(e).replace("overwrite=True", "--overwrite")) from None
    print(f"demo dataset ({args.preset}, seed {args.seed}) in {out}")
    return 0


def _check_backbones(names: list[str]) -> None:
    """Every tokenizer name resolves and is cached or downloadable (checked before any file is written)."""
    from .pretrained import hub_reachable, resolve, unavailable

    for name in names:
        src = resolve(name)
        if Path(src.path).is_dir() or hub_reachable():
            continue
        from huggingface_hub import try_to_load_from_cache

        if not any(isinstance(try_to_load_from_cache(name, f), str) for f in ("tokenizer_config.json", "config.json")):
            raise unavailable(name, "it is not in the local Hugging Face cache and the hub cannot be reached")


def _prepare(args) -> int:
    from .validation import check_encoding

    check_encoding(args.encoding, source="command line", key="--encoding")
    if args.max_len < 1:
        raise ConfigError("command line", "must be an integer >= 1", key="--max-len", value=args.max_len)
    _check_backbones(args.tokenizer or [])
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

    for flag, value in (("--k", args.k), *(("--recall", r) for r in args.recall)):
        if value < 1:
            raise ConfigError("command line", "must be an integer >= 1", key=flag, value=value)
    if args.json and Path(args.json).is_dir():
        raise ConfigError("command line", "names a folder; give a file to write the metrics to", key="--json",
                          value=args.json)
    metrics = evaluate_files(
        args.true, args.pred, train_path=args.train, filter_path=args.filter,
        A=args.A, B=args.B, k=args.k, recall_k=tuple(args.recall),
    )
    if args.json:
        write_json(args.json, metrics)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
    return 0


def _train_config(args):
    """The run's TrainConfig from the file and flags, checked; refusals before anything is written."""
    from .config import read_config_file
    from .devices import resolve_device
    from .training.config import make_train_config
    from .validation import check_device_name

    if args.device is not None:
        check_device_name(args.device, source="command line", key="--device")
    values = read_config_file(args.config)
    overrides = {"out_dir": args.out, "device": args.device, "seed": args.seed}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if args.overwrite:
        values["resume"] = False
    if "data_dir" not in values:
        raise ConfigError(args.config, "is not set: name the dataset folder (e.g. data_dir: data/demo-small)",
                          key="data_dir")
    config = make_train_config(values, source=str(args.config))
    if not Path(config.data_dir).is_dir():
        raise ConfigError(args.config, "is not a folder", key="data_dir", value=config.data_dir)
    resolve_device(config.device, source=str(args.config) if args.device is None else "command line --device")
    try:
        model = config.model_config()  # the model's settings (preset + model_overrides), checked without loading it
    except ConfigError as e:
        where = f"{args.config}: model {config.model} with its model_overrides"
        raise ConfigError(where, e.reason, key=e.key, allowed=e.allowed,
                          **({"value": e.value} if e.key else {})) from None
    _check_inputs(config, model)
    _check_checkpoint(config, args)
    return config


def _check_inputs(config, model) -> None:
    """The dataset's prepared files, the image features and the backbone exist (before the run
    folder is made)."""
    from .data.prepare import load_dataset
    from .testing import RANDOM_BACKBONES

    data_dir = Path(config.data_dir)
    missing = [n for n in ("trn.raw.txt", "tst.raw.txt", "lbl.raw.txt", "trn_X_Y.txt", "tst_X_Y.txt")
               if not (data_dir / n).is_file()]
    if missing:
        load_dataset(data_dir)  # raises the error that says how to prepare the folder
    if model.use_images:
        from .images.cache import feature_cache_dir

        for split in ("trn", "tst", "lbl"):
            if not feature_cache_dir(data_dir, config.vision_encoder, split).exists():
                raise FileNotFoundError(f"{feature_cache_dir(data_dir, config.vision_encoder, split)}: no image "
                                        f"features of {split!r} with encoder {config.vision_encoder!r}; run notebook "
                                        "02_image_caching first (or set use_images: false)")
    if model.backbone not in RANDOM_BACKBONES:
        _check_backbones([model.backbone])


def _check_checkpoint(config, args) -> None:
    """A run folder with a checkpoint of another configuration is refused unless --overwrite."""
    from .config import describe_changes
    from .runs import TrainFolder
    from .training.config import config_key

    ckpt = TrainFolder(config.out_dir).checkpoint
    if not config.resume or not ckpt.exists():
        return
    try:
        saved = ckpt.read_state().get("config")
    except (OSError, ValueError):
        return  # the training loop reports a damaged checkpoint itself
    key = config_key(config)
    if isinstance(saved, dict) and saved != key:
        shown = "; ".join(describe_changes(saved, key)[:4]) or "settings differ"
        raise ConfigError(config.out_dir, f"holds a checkpoint of another configuration ({shown}); nothing was "
                                          "changed: pass --overwrite to start the run again there, or --out NEW")


def _train(args) -> int:
    from .training import train

    config = _train_config(args)
    if args.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:  # the launcher starts the workers
        from .training.distributed import launch

        argv = ["train", "--config", str(args.config)]
        for flag, value in (("--out", args.out), ("--device", args.device), ("--seed", args.seed)):
            if value is not None:
                argv += [flag, str(value)]
        return launch(argv + (["--overwrite"] if args.overwrite else []), args.nproc_per_node)
    summary = train(config)
    print(json.dumps({"run": summary["run"], **{k: round(v, 2) for k, v in summary["final"].items()}}))
    return 0


def _cache_images(args) -> int:
    from .devices import resolve_device
    from .images.cache import feature_cache_dir
    from .images.cache_build import build_feature_cache
    from .images.encoders import create_vision_encoder
    from .images.sources import open_image_source

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"{args.data}: dataset folder not found")
    device = resolve_device(args.device, source="command line --device")
    sources = {s: open_image_source(args.data, s, kind=args.source, max_images=args.max_images) for s in args.splits}
    encoder = create_vision_encoder(args.encoder, device=device)
    for split, source in sources.items():
        cache = build_feature_cache(source, encoder, feature_cache_dir(args.data, encoder.name, split),
                                    batch_size=args.batch_size, num_workers=args.workers, desc=f"cache {split}")
        print(f"{split}: {cache.count} images of {cache.n_items} items, {cache.n_failures} failed -> {cache.folder}")
    return 0


def _pipeline(args) -> int:
    from .config import PipelineConfig, load_config
    from .pipeline import NotebookFailed, run_pipeline

    overrides = {"run_name": args.run_name, "dataset": args.dataset, "demo_preset": args.preset,
                 "overwrite": True if args.overwrite else None, "notebook_timeout": args.notebook_timeout}
    config = load_config(PipelineConfig, args.params, overrides)
    run_dir = Path(args.out) if args.out else Path("reports") / config.run_name
    try:
        summary = run_pipeline(config, run_dir, source=str(args.params or "pipeline config"))
    except NotebookFailed as e:
        print(f"vixml pipeline: {_one_line(str(e))}", file=sys.stderr)
        return 1
    for entry in summary["notebooks"]:
        print(f"{entry['notebook']:<32} {entry['status']:<6} {entry['seconds']:8.1f} s")
    print(f"reports in {run_dir} ({summary['mode']} run)")
    return 0


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress at INFO level; print the traceback of internal errors")
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vixml", description="ViXML workbench")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level; tracebacks of internal "
                                                                 "errors")
    sub = p.add_subparsers(dest="command", required=True)

    d = _common(sub.add_parser("demo-data", help="write the bundled multimodal demo dataset"))
    d.add_argument("--preset", default="tiny", help="tiny (tests) or small (the demo)")
    d.add_argument("--out", required=True, help="dataset folder to write")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--overwrite", action="store_true", help="replace a demo dataset of another preset or seed")
    d.set_defaults(func=_demo_data)

    r = _common(sub.add_parser("prepare", help="convert json.gz to raw text + X_Y files, check, tokenise"))
    r.add_argument("--data", required=True, help="dataset folder")
    r.add_argument("--encoding", default="utf-8", help="encoding of *.raw.txt (official files: latin-1)")
    r.add_argument("--title-only", dest="title_only", action="store_true", default=None)
    r.add_argument("--title-content", dest="title_only", action="store_false")
    r.add_argument("--force", action="store_true", help="convert even if outputs are up to date")
    r.add_argument("--tokenizer", action="append", help="backbone whose tokenizer to cache (repeatable)")
    r.add_argument("--max-len", type=int, default=32)
    r.set_defaults(func=_prepare)

    e = _common(sub.add_parser("evaluate", help="XMC metrics (pyxclib-identical) of a sparse score matrix"))
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

    t = _common(sub.add_parser("train", help="train a dual encoder from a TrainConfig YAML (resumes when "
                                             "interrupted)"))
    t.add_argument("--config", required=True, help="YAML with TrainConfig fields (see configs/train-*.yaml)")
    t.add_argument("--out", help="run folder (overrides out_dir)")
    t.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    t.add_argument("--seed", type=int)
    t.add_argument("--overwrite", action="store_true",
                   help="start again in a run folder that holds a checkpoint (resume: false)")
    t.add_argument("--nproc-per-node", dest="nproc_per_node", type=int, default=1,
                   help="processes on this machine (one per GPU; torch.distributed, global in-batch negatives)")
    t.set_defaults(func=_train)

    c = _common(sub.add_parser("cache-images", help="encode every image of a dataset once into the feature cache "
                                                    "(resumable; notebook 02 without the notebook)"))
    c.add_argument("--data", required=True, help="dataset folder")
    c.add_argument("--encoder", required=True, help="vision encoder: an offline name or a hub name (SigLIP2 ...)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    c.add_argument("--splits", nargs="+", default=["trn", "tst", "lbl"])
    c.add_argument("--source", default="bin", help="bin (the authors' .bin + map) | folder (files + table)")
    c.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    c.add_argument("--workers", type=int, default=2, help="image-decoding processes beside the encoder")
    c.add_argument("--max-images", dest="max_images", type=int, default=3, help="image slots per item")
    c.set_defaults(func=_cache_images)

    q = _common(sub.add_parser("pipeline", help="run the numbered notebooks with papermill into reports/RUN"))
    q.add_argument("--params", help="YAML parameters file (see configs/)")
    q.add_argument("--out", help="run folder (default reports/<run_name>)")
    q.add_argument("--run-name", dest="run_name")
    q.add_argument("--dataset")
    q.add_argument("--preset", help="demo preset to generate when the dataset folder is missing")
    q.add_argument("--overwrite", action="store_true",
                   help="replace a run of another configuration in the run folder (default: refuse)")
    q.add_argument("--notebook-timeout", dest="notebook_timeout", type=float,
                   help="seconds each notebook may run (default: no limit)")
    q.set_defaults(func=_pipeline)
    return p


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in str(text).strip().splitlines() if line.strip())


def _os_error(e: OSError) -> str:
    """One line for an OSError: the file and what went wrong."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {e.filename}" if e.filename else ""
        return (f"no space left on the device{where}; files are written whole or not at all, so nothing "
                "half-written was left: free some space and run again")
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    prefix = f"vixml {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except (VixmlError, ValueError, OSError, ImportError) as e:  # bad input: one clear line, no traceback
        if verbose and not isinstance(e, VixmlError):
            traceback.print_exc()
        message = _os_error(e) if isinstance(e, OSError) and not isinstance(e, VixmlError) else str(e)
        print(f"{prefix}: error: {_one_line(message)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: a short message; the traceback with -v
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (run `vixml -v ...` for the traceback)"
        print(f"{prefix}: internal error: {type(e).__name__}: {_one_line(str(e))[:300]}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
