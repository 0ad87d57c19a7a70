"""The dashboard's operations headless: ``python -m core <command>``; progress on stderr, JSON on stdout.

    python -m core datasets
    python -m core methods [--model spm]
    python -m core train --dataset digits --model spm
    python -m core forget --dataset digits --model spm --classes 0 --method spm-delete
    python -m core forget --dataset digits --model parametric --random 0.1 --seed 0 --method ft --set epochs=2
    python -m core train --dataset digits --model munkey --model-set retrieval_reg=self-drop --model-set vit.depth=2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from core import bundle, workflow
from core.configs import ConfigError, config_from_dict, config_to_dict
from core.data import (
    DataError,
    ForgetRequestError,
    list_datasets,
    load_dataset,
    load_image_folder,
    load_npz,
    parse_ids_text,
    register_user_dataset,
    request_classes,
    request_ids,
    request_random,
)
from core.models import get_model_kind, list_model_kinds
from core.store import StoreError
from core.unlearn import get_method, list_methods


class _Bar:
    """A tqdm bar on stderr fed by the project's progress callbacks."""

    def __init__(self, title: str):
        self.bar = tqdm(total=1000, desc=title, file=sys.stderr, leave=False,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(fraction * 1000)
        self.bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        self.bar.close()


def _dataset(args):
    if args.data:
        path = Path(args.data)
        ds = load_npz(path) if path.suffix == ".npz" else load_image_folder(path)
        register_user_dataset(args.dataset, ds)
    return load_dataset(args.dataset)


def _train_config(args, dataset):
    tc = bundle.recipe(dataset.name, args.model)
    changes = {k: v for k, v in {"epochs": args.epochs, "seed": args.train_seed, "device": args.device}.items()
               if v is not None}
    return replace(tc, **changes)


def _request(args, dataset):
    chosen = [args.classes is not None, args.random is not None, args.ids_file is not None]
    if sum(chosen) != 1:
        raise ForgetRequestError("say what to forget with exactly one of --classes, --random, --ids-file")
    if args.classes is not None:
        return request_classes(dataset, [int(c) for c in args.classes.split(",")])
    if args.random is not None:
        return request_random(dataset, args.random, args.seed)
    return request_ids(dataset, parse_ids_text(Path(args.ids_file).read_text()))


def config_with(cls: type, pairs: list[str]):
    """``cls()`` with ``name=value`` pairs applied; a dotted name reaches a nested config (``vit.width=128``);
    values are JSON (``true``, ``0.5``, ``[1, 2]``) or a bare string. Every value is checked by type."""
    values = config_to_dict(cls())
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"expected name=value, got {pair!r}")
        name, raw = pair.split("=", 1)
        *path, leaf = name.split(".")
        target = values
        for part in path:
            if not isinstance(target.get(part), dict):
                raise ConfigError(f"{cls.__name__} has no nested config {part!r} (in {name!r})")
            target = target[part]
        try:
            target[leaf] = json.loads(raw)
        except json.JSONDecodeError:
            target[leaf] = raw
    return config_from_dict(cls, values)


def _method_config(method: str, pairs: list[str]):
    return config_with(get_method(method).config_cls, pairs)


def _model_config(args):
    return config_with(get_model_kind(args.model).config_cls, args.model_set or [])


def cmd_train(args) -> dict:
    dataset = _dataset(args)
    bar = _Bar(f"train {args.model}")
    try:
        start = time.perf_counter()
        trained = workflow.original(args.model, dataset, progress=bar, train_config=_train_config(args, dataset),
                                    config=_model_config(args))
    finally:
        bar.close()
    return {"model": args.model, "dataset": dataset.name, "key": trained.key,
            "test_acc": trained.meta.get("test_acc"), "train_s": workflow.train_seconds(trained),
            "wall_s": time.perf_counter() - start}


def cmd_forget(args) -> dict:
    dataset = _dataset(args)
    request = _request(args, dataset)
    tc = _train_config(args, dataset)
    config = _method_config(args.method, args.set or [])
    model_config = _model_config(args)
    bar = _Bar(f"{args.model}")
    try:
        base = workflow.original(args.model, dataset, progress=bar, train_config=tc, config=model_config)
        result = workflow.run_method(args.method, base.classifier, dataset, request, config, progress=bar)
        out = {"dataset": dataset.name, "model": args.model, "method": args.method, "request": request.to_json(),
               "config": config_to_dict(config), "seconds": result.seconds, "touched": result.touched}
        if not args.no_oracle:
            oracle = workflow.oracle(args.model, dataset, request, progress=bar, train_config=tc, config=model_config)
            second = None
            if args.noise_floor:
                second = workflow.oracle(args.model, dataset, request, seed_offset=1, progress=bar, train_config=tc,
                                         config=model_config)
                second = second.classifier
            comparison = workflow.compare(result.model, oracle.classifier, dataset, request, second,
                                          result.seconds, workflow.train_seconds(oracle))
            out.update(metrics=comparison.metrics, oracle_metrics=comparison.oracle_metrics,
                       noise_floor=comparison.noise_floor, oracle_train_s=workflow.train_seconds(oracle))
            out["run_key"] = workflow.save_comparison(args.method, base.key, request, config, comparison,
                                                      result.seconds, result.model.split_proba(dataset, "test"))
    finally:
        bar.close()
    out["log"] = {k: v for k, v in result.log.items() if _jsonable(v)}
    return out


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core", description="Unlearning Explorer, headless")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("datasets", help="list the registered datasets")
    m = sub.add_parser("methods", help="list unlearning methods")
    m.add_argument("--model", choices=list_model_kinds())
    for name, fn in (("train", "train or load a model"), ("forget", "unlearn a request and compare with the oracle")):
        s = sub.add_parser(name, help=fn)
        s.add_argument("--dataset", default="fashion-mnist")
        s.add_argument("--data", help="a .npz file or an image folder to register under --dataset")
        s.add_argument("--model", default="spm", choices=list_model_kinds())
        s.add_argument("--epochs", type=int)
        s.add_argument("--train-seed", type=int)
        s.add_argument("--device", choices=["auto", "cpu", "cuda"])
        s.add_argument("--model-set", action="append", metavar="NAME=VALUE",
                       help="model config field, dotted for nested ones (e.g. retrieval_reg=self-drop, vit.width=128)")
        if name == "forget":
            s.add_argument("--classes", help="comma-separated class indices, e.g. 0,1")
            s.add_argument("--random", type=float, help="fraction of the training set, e.g. 0.1")
            s.add_argument("--seed", type=int, default=0, help="seed of the random fraction")
            s.add_argument("--ids-file", help="a CSV/TXT file of training ids")
            s.add_argument("--method", default="spm-delete")
            s.add_argument("--set", action="append", metavar="NAME=VALUE", help="method config field")
            s.add_argument("--no-oracle", action="store_true", help="skip the retrained oracle")
            s.add_argument("--noise-floor", action="store_true", help="also train a second oracle seed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "datasets":
            out = list_datasets()
        elif args.command == "methods":
            out = {n: get_method(n).description for n in list_methods(args.model)}
        elif args.command == "train":
            out = cmd_train(args)
        else:
            out = cmd_forget(args)
    except (DataError, ForgetRequestError, ConfigError, StoreError, KeyError, ValueError) as err:
        print(json.dumps({"error": str(err)}), file=sys.stdout)
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out, default=float))
    return 0
