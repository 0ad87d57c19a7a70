"""The dashboard's operations headless: ``python -m core <command>``; progress on stderr, JSON on stdout.

    python -m core datasets
    python -m core methods [--model spm]
    python -m core train --dataset digits --model spm
    python -m core forget --dataset digits --model spm --classes 0 --method spm-delete
    python -m core forget --dataset digits --model parametric --random 0.1 --seed 0 --method ft --set epochs=2
    python -m core train --dataset digits --model munkey --model-set retrieval_reg=self-drop --model-set vit.depth=2
    python -m core audit --dataset digits --model parametric --classes 0 --method damp --out audit-damp
    python -m core audit --dataset digits --model parametric --classes 0 --weights theirs.safetensors --out audit-theirs
    python -m core sweep --dataset digits --model parametric --methods ft,ga --requests class:0,random:0.1 --seeds 0-2
    python -m core record-oracles --dataset fashion-mnist --model spm

Long work runs on Ray: a local instance started here, or the cluster at --ray-address / $UE_RAY_ADDRESS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from tqdm import tqdm

from core import bundle, mlflow_log, purge, recorded, runs_db, sweep, workflow
from core import report as report_files
from core.backend import Backend, BackendError, Job
from core.configs import ConfigError, config_from_dict, config_to_dict
from core.data import (
    ForgetRequestError,
    list_datasets,
    load_dataset,
    register_user_dataset,
    request_classes,
    request_ids,
    request_random,
)
from core.data.id_lists import read_ids_file
from core.data.user_files import load_user_data
from core.errors import InputError
from core.eval import audit, residue
from core.models import get_model_kind, list_model_kinds
from core.models.base import MemoryClassifier
from core.unlearn import get_method, list_methods
from core.validate import load_checkpoint, read_checkpoint
from core.views import evidence as EV

DEFAULT_METHOD = "spm-delete"
LOG_EVERY_S = 10.0  # progress lines when stderr is not a terminal: at most one per this many seconds


class _Bar:
    """Progress on stderr, fed by the project's progress callbacks: a tqdm bar at a terminal; elsewhere (a log
    file, CI) a plain line at most every ``LOG_EVERY_S`` seconds, so that a log holds no carriage returns and
    the summary after it starts on a line of its own."""

    def __init__(self, title: str):
        self.title = title
        self.bar = tqdm(total=1000, desc=title, file=sys.stderr, leave=False,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}") if sys.stderr.isatty() else None
        self.logged = -LOG_EVERY_S

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is not None:
            self.bar.n = int(fraction * 1000)
            self.bar.set_postfix_str(message, refresh=True)
        elif time.monotonic() - self.logged >= LOG_EVERY_S:
            self.logged = time.monotonic()
            print(f"{self.title} {fraction * 100:3.0f}% {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_NOTES: list[str] = []  # what the user should know about their input (skipped files, dropped repeats)


def _note(text: str) -> None:
    _NOTES.append(text)
    print(f"note: {text}", file=sys.stderr)


def _dataset(args):
    if args.data:
        loaded = load_user_data(Path(args.data), source_name=args.data)
        for text in loaded.notes:
            _note(text)
        register_user_dataset(args.dataset, loaded.dataset)
    return load_dataset(args.dataset)


MAX_TRAIN_SEED = 2_000_000_000  # oracles train on seed + 1..K: still below 2**31, which torch and numpy take


def _train_config(args, dataset):
    """The dataset's recipe for ``--model`` with ``--epochs``, ``--train-seed`` and ``--device`` applied."""
    if args.epochs is not None and args.epochs < 1:  # 0 would store an untrained model as if trained
        raise InputError(source="--epochs", found=str(args.epochs), expected="a whole number of epochs, 1 or more")
    if args.train_seed is not None and not 0 <= args.train_seed <= MAX_TRAIN_SEED:
        raise InputError(source="--train-seed", found=str(args.train_seed),
                         expected=f"a whole number from 0 to {MAX_TRAIN_SEED:,}")
    tc = bundle.recipe(dataset, args.model)
    changes = {k: v for k, v in {"epochs": args.epochs, "seed": args.train_seed, "device": args.device}.items()
               if v is not None}
    return replace(tc, **changes)


def _request(args, dataset):
    chosen = [args.classes is not None, args.random is not None, args.ids_file is not None]
    if sum(chosen) != 1:
        raise ForgetRequestError("say what to forget with exactly one of --classes, --random, --ids-file")
    if args.classes is not None:  # indices or names; request_classes says what is wrong with either
        return request_classes(dataset, [c.strip() for c in args.classes.split(",") if c.strip()])
    if args.random is not None:
        return request_random(dataset, args.random, args.seed)
    request = request_ids(dataset, read_ids_file(args.ids_file, source_name=args.ids_file))
    if request.duplicates_dropped:
        _note(f"{args.ids_file}: {request.duplicates_dropped} repeated id(s) dropped; each id is forgotten once")
    return request


def config_with(cls: type, pairs: list[str], base=None):
    """``cls()`` with ``name=value`` pairs applied; a dotted name reaches a nested config (``vit.width=128``);
    values are JSON (``true``, ``0.5``, ``[1, 2]``) or a bare string. Every value is checked by type."""
    values = config_to_dict(base if base is not None else cls())
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


def _sweep_config(method: str, methods: list[str], pairs: list[str]):
    """``method``'s config with the ``--set`` pairs whose field it has; a field no chosen method has is an error."""
    def has(name: str, field: str) -> bool:
        return field.split(".")[0] in {f.name for f in fields(get_method(name).config_cls)}

    for pair in pairs:
        field = pair.split("=", 1)[0]
        if not any(has(m, field) for m in methods if m in list_methods()):
            raise ConfigError(f"--set {pair}: none of the methods {', '.join(methods)} has a field {field!r}")
    return _method_config(method, [p for p in pairs if has(method, p.split("=", 1)[0])])


def _model_config(args, dataset):
    """The model config: the kind's defaults for this dataset (e.g. cifar10's ResNet-18), then --model-set."""
    return config_with(get_model_kind(args.model).config_cls, args.model_set or [],
                       bundle.default_config(args.model, dataset.name))


def _backend(args) -> Backend:
    """The Ray backend: a local instance, or the cluster at --ray-address / $UE_RAY_ADDRESS."""
    engine = Backend(address=args.ray_address)
    try:
        engine.start(wait=True, timeout=120)
    except BackendError:
        engine.shutdown()
        raise
    return engine


def _wait(job: Job, bar: _Bar):
    """Follow a job on the bar; Ctrl-C cancels it (nothing partial is stored) and exits."""
    try:
        while not job.done_event.wait(0.25):
            bar(job.progress, job.message)
    except KeyboardInterrupt:
        job.cancel()
        job.wait(30)
        raise
    if job.state == "failed":
        raise JobFailed(f"{job.title}: {job.error}")
    if job.state == "cancelled":
        raise JobFailed(f"{job.title} was cancelled")
    return job.result


class JobFailed(RuntimeError):
    """A Ray job failed or was cancelled; the message says which and why."""


def _model(engine: Backend, args, dataset, request=None, seed_offset: int = 0) -> Job:
    """The original (or an oracle without ``request``): loaded when stored, else trained on Ray."""
    return workflow.model_job(engine, args.model, dataset, request, seed_offset, _model_config(args, dataset),
                              _train_config(args, dataset), gpu=engine.has_gpu)


def cmd_train(args) -> dict:
    dataset = _dataset(args)
    engine = _backend(args)
    bar = _Bar(f"train {args.model}")
    try:
        start = time.perf_counter()
        trained = _wait(_model(engine, args, dataset), bar)
    finally:
        bar.close()
        engine.shutdown()
    return {"model": args.model, "dataset": dataset.name, "key": trained.key,
            "test_acc": trained.meta.get("test_acc"), "train_s": workflow.train_seconds(trained),
            "wall_s": time.perf_counter() - start, "ray_start_s": engine.start_seconds}


def cmd_forget(args) -> dict:
    return _forget(args)[0]


def forget_summary(out: dict) -> str:
    """``forget``'s result for a person at a terminal (stderr; stdout keeps the JSON for scripts): what ran, the
    verdict's sentence, and the headline metrics beside the oracles' mean."""
    seconds = out["seconds"]
    took = "time not measured here" if seconds is None else f"{seconds * 1000:.3g} ms" if seconds < 1 else \
        f"{seconds:.3g} s"
    what = f"{out['method']} {out['config']['file']}" if out["method"] == workflow.SUPPLIED else out["method"]
    lines = [f"{what} on {out['request']['description']} ({out['model']}, {out['dataset']}): {took}"]
    if "verdict" not in out:
        lines.append("no oracle was retrained (--no-oracle), so there is no verdict")
        return "\n".join(lines)
    lines.append(out["sentence"])
    metrics, oracle = out["metrics"], out["oracle_metrics"]
    lines.append("  ".join(f"{name} {metrics[name]:.2f} (oracles {oracle[name]:.2f})"
                           for name in ("TA", "RA", "FA", "MIA") if name in metrics and name in oracle))
    if "run_key" in out:
        lines.append(f"stored as run {out['run_key']}; the full result is the JSON on stdout")
    return "\n".join(lines)


def _forget(args, need_oracles: bool = False):
    """Unlearn the request of ``args`` and judge it against its oracles: (JSON output, the run, the original, the
    finished oracles, the dataset, the request)."""
    dataset = _dataset(args)
    request = _request(args, dataset)
    supplied = _supplied(args, dataset)  # checked before Ray starts
    method = workflow.SUPPLIED if supplied is not None else args.method or DEFAULT_METHOD
    config = None if supplied is not None else _method_config(method, args.set or [])
    offsets = [] if args.no_oracle else workflow.oracle_offsets(args.oracles)  # checked before Ray starts
    if need_oracles and len(offsets) < 2:
        raise ValueError("an audit judges the request against the oracles' spread: it needs at least 2 oracles "
                         "(--oracles 2 or more, without --no-oracle)")
    engine = _backend(args)
    bar = _Bar(f"{args.model}")
    ready = []
    try:
        base = _wait(_model(engine, args, dataset), bar)
        oracles = [_model(engine, args, dataset, request, offset) for offset in offsets]  # beside the run
        if supplied is not None:
            run = workflow.supplied_run(base, dataset, request, supplied, args.weights)
        elif get_model_kind(args.model).by_design:
            run = workflow.execute(method, base, dataset, request, config, progress=bar)
        else:
            task = workflow.method_remote(method, base, dataset, request, config, gpu=engine.has_gpu)
            run = _wait(engine.submit(f"method:{method}", method, task), bar)
        out = {"dataset": dataset.name, "model": args.model, "method": method, "request": request.to_json(),
               "config": config_to_dict(run.config), "seconds": run.seconds, "touched": run.touched,
               "weights_sha256": run.weights_sha256}
        if oracles:
            judged, ready = _judged(run, base, oracles, dataset, bar)
            out.update(judged)
    finally:
        bar.close()
        engine.shutdown()
    out["log"] = {k: v for k, v in run.log.items() if _jsonable(v)}
    return out, run, base, ready, dataset, request


def _supplied(args, dataset) -> bytes | None:
    """The bytes of ``--weights`` (None without it), checked against the model ``--model`` builds, so that a wrong
    file is refused before anything trains."""
    if args.weights is None:
        return None
    if args.method is not None or args.set:
        raise ValueError("--weights judges weights unlearned elsewhere; --method and --set run a method here: give "
                         "either --weights or --method")
    workflow.check_supplied_kind(args.model)
    data = read_checkpoint(args.weights, args.weights)
    load_checkpoint(data, args.model, dataset, args.weights, config=_model_config(args, dataset))
    return data


def _judged(run, base, oracles: list[Job], dataset, bar: _Bar) -> tuple[dict, list]:
    """Wait for every oracle, score the run against those that finished (the verdict and its evidence) and record
    it; an oracle that failed is reported, and none finishing is an error. Also returns the finished oracles."""
    failed = []
    for job in oracles:
        try:
            _wait(job, bar)
        except JobFailed as err:
            failed.append(str(err))
    ready = workflow.finished(oracles)
    if not ready:
        raise JobFailed("no oracle finished, so there is no verdict: " + "; ".join(failed))
    c = workflow.score(run, base, ready, dataset).comparison
    membership = {k: v for k, v in (c.membership or {}).items() if k != "rows"}
    return {"verdict": c.verdict, "sentence": c.sentence, "scenario": c.scenario, "scenario_rule": c.scenario_rule,
            "oracle_k": c.k, "oracle_seeds": c.oracle_seeds, "oracles_failed": failed, "criteria": c.criteria,
            "metrics": c.metrics, "oracle_metrics": c.oracle_metrics, "spread": c.spread, "klom": c.klom,
            "membership": membership, "membership_top": (c.membership or {}).get("rows", [])[:10],
            "attacks": c.attacks, "oracle_train_s": run.oracle_seconds,
            "run_key": workflow.record(run, dataset)}, ready


def cmd_audit(args) -> dict:
    """``forget`` judged against its oracles, then the audit report written into ``--out``: a self-contained HTML
    page, JSON, Markdown and the per-sample CSV, with the weights' residue and, with ``--relearn``, relearn time."""
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: found a file, expected a folder to write the report into")
    judged, run, base, ready, dataset, request = _forget(args, need_oracles=True)
    if len(ready) < 2:
        raise JobFailed(f"only {len(ready)} oracle finished; the report's evidence needs 2: "
                        + "; ".join(judged.get("oracles_failed", [])))
    measured = {"residue": residue.residue(run.model, base.classifier, [o.classifier for o in ready], dataset,
                                           request)}
    if args.relearn:
        if not EV.relearn_applies(run.model):
            raise ValueError(f"--relearn fine-tunes a parametric network; {args.model} forgets by design")
        EV.relearn_view(run.model, base, ready, dataset, request)
        measured["relearn"] = EV.measured_for_report(run.model, dataset, request)["relearn"]
    report = audit.audit_report(dataset, request, base.classifier, run.model, base.meta, run.method,
                                judged["config"], run.seconds, run.comparison, workflow.store_unlearned(run),
                                **measured)
    paths = report_files.write_audit(report, out_dir, dataset.class_names)
    if args.purged_copy:
        if not isinstance(run.model, MemoryClassifier):
            raise ValueError(f"--purged-copy writes a by-design model's memory without D_f; {args.model} has none")
        paths.append(purge.write_purged(run.model, request.ids, out_dir / "purged", base.key))
    return {"verdict": judged["verdict"], "sentence": judged["sentence"], "oracle_k": judged["oracle_k"],
            "run_key": judged["run_key"], "unlearned_weights_sha256": report["unlearned"]["weights_sha256"],
            "original_weights_sha256": report["original"]["weights_sha256"], "files": [str(p) for p in paths]}


def cmd_sweep(args) -> dict:
    dataset = _dataset(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    items = sweep.plan(dataset, args.model, methods, [r.strip() for r in args.requests.split(",") if r.strip()],
                       sweep.parse_seeds(args.seeds), lambda m: _sweep_config(m, methods, args.set or []))
    if args.mlflow:
        mlflow_log.check_installed()  # before anything runs
    engine = _backend(args)
    bar = _Bar(f"sweep {args.model}")
    try:
        result = sweep.run_sweep(engine, dataset, args.model, items, progress=bar, gpu=engine.has_gpu,
                                 model_config=_model_config(args, dataset),
                                 train_config=_train_config(args, dataset))
    finally:
        bar.close()
        engine.shutdown()
    out = {"dataset": dataset.name, "model": args.model, **result.to_json()}
    if args.mlflow:
        rows = [runs_db.get(k) for k in [*result.done, *result.failed]]
        out["mlflow_run_ids"] = mlflow_log.log_runs(args.mlflow, [r for r in rows if r is not None])
    return out


def cmd_record_oracles(args) -> dict:
    """Train (or load) the K oracles of each single-class request of ``--model`` and record their predictions
    (``core.recorded``) into ``--out``: what lets the app compare a class deletion at once."""
    dataset = _dataset(args)
    if args.classes in (None, "all"):
        classes = list(range(dataset.num_classes))
    else:
        classes = [request_classes(dataset, [c.strip()]).classes[0] for c in args.classes.split(",") if c.strip()]
    requests = [request_classes(dataset, [c]) for c in classes]
    config, tc = _model_config(args, dataset), _train_config(args, dataset)
    engine = _backend(args)
    bar = _Bar(f"record {args.model} oracles")
    files = []
    try:
        start = time.perf_counter()
        jobs = [(request, job) for request in requests
                for job in workflow.oracle_jobs(engine, args.model, dataset, request, args.oracles, config, tc,
                                                gpu=engine.has_gpu)]
        for request, job in jobs:
            trained = _wait(job, bar)
            path = recorded.record(trained, dataset, Path(args.out))
            files.append({"request": request.description, "seed": workflow.train_seed(trained), "oracle": trained.key,
                          "file": _shown(path), "kb": round(path.stat().st_size / 1024, 1)})
    finally:
        bar.close()
        engine.shutdown()
    return {"dataset": dataset.name, "model": args.model, "oracle_k": workflow.oracle_count(args.oracles),
            "files": files, "total_mb": round(sum(f["kb"] for f in files) / 1024, 2),
            "wall_s": time.perf_counter() - start}


def _shown(path: Path) -> str:
    """``path`` as the user would type it: relative to the working folder when it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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
    commands = (("train", "train or load a model"), ("forget", "unlearn a request and compare with the oracle"),
                ("audit", "forget, judge against the oracles and write the audit report (HTML, JSON, CSV)"),
                ("sweep", "methods x requests x seeds as parallel Ray tasks, into the runs table"),
                ("record-oracles", "record the predictions of each single-class request's oracles, so that the app "
                                   "compares a class deletion at once (assets/oracles)"))
    for name, fn in commands:
        s = sub.add_parser(name, help=fn)
        s.add_argument("--ray-address", help="attach to this Ray cluster (host:port or auto) instead of starting "
                                             "a local instance; default $UE_RAY_ADDRESS")
        s.add_argument("--dataset", default="fashion-mnist")
        s.add_argument("--data", help="your data, registered under --dataset: an image folder (one sub-folder per "
                                      "class) or a zip of one, a .npz, or CIFAR-10's python batches")
        s.add_argument("--model", default="spm", choices=list_model_kinds())
        s.add_argument("--epochs", type=int)
        s.add_argument("--train-seed", type=int)
        s.add_argument("--device", choices=["auto", "cpu", "cuda"])
        s.add_argument("--model-set", action="append", metavar="NAME=VALUE",
                       help="model config field, dotted for nested ones (e.g. retrieval_reg=self-drop, vit.width=128)")
        if name in ("forget", "audit"):
            s.add_argument("--classes", help="comma-separated class indices, e.g. 0,1")
            s.add_argument("--random", type=float, help="fraction of the training set, e.g. 0.1")
            s.add_argument("--seed", type=int, default=0, help="seed of the random fraction")
            s.add_argument("--ids-file", help="a CSV/TXT file of training ids")
            s.add_argument("--method", help=f"the unlearning method to run (default {DEFAULT_METHOD})")
            s.add_argument("--set", action="append", metavar="NAME=VALUE", help="method config field")
            s.add_argument("--weights", metavar="FILE.safetensors",
                           help="judge weights unlearned elsewhere instead of running a method: a safetensors file of "
                                "--model's network after forgetting the request (checked strictly, never unpickled)")
            s.add_argument("--no-oracle", action="store_true", help="skip the retrained oracles (and the verdict)")
            s.add_argument("--oracles", type=int, help="oracles to retrain without the request, each on its own seed "
                                                       "(default $UE_ORACLES or 3; a verdict needs 2)")
        if name == "record-oracles":
            s.add_argument("--classes", default="all", help="comma-separated classes (indices or names), or all")
            s.add_argument("--oracles", type=int, help="oracles per class (default $UE_ORACLES or 3)")
            s.add_argument("--out", default=str(recorded.ASSETS_ORACLES), help="folder for the records")
        if name == "audit":
            s.add_argument("--out", required=True, help="folder for audit.html, audit.json, audit.md, membership.csv")
            s.add_argument("--relearn", action="store_true", help="also measure relearn time (parametric models)")
            s.add_argument("--purged-copy", action="store_true", help="also write a copy of the forgotten by-design "
                                                                      "model that holds no row or id of D_f (purged/)")
        if name == "sweep":
            s.add_argument("--methods", required=True, help="comma-separated methods, e.g. ft,scrub,damp")
            s.add_argument("--requests", required=True, help="comma-separated: class:0, class:0+2, random:0.1")
            s.add_argument("--seeds", default="0", help="seeds: 0-4 or 0,2,7 (method seed, random draw)")
            s.add_argument("--set", action="append", metavar="NAME=VALUE",
                           help="method config field, for every method that has it")
            s.add_argument("--mlflow", metavar="URI", help="also log each new run to MLflow at this tracking URI "
                                                           "(e.g. file:///tmp/mlruns); needs mlflow installed")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _NOTES.clear()
    try:
        if args.command == "datasets":
            out = list_datasets()
        elif args.command == "methods":
            out = {n: get_method(n).description for n in list_methods(args.model)}
        elif args.command == "train":
            out = cmd_train(args)
        elif args.command == "sweep":
            out = cmd_sweep(args)
        elif args.command == "audit":
            out = cmd_audit(args)
        elif args.command == "record-oracles":
            out = cmd_record_oracles(args)
        else:
            out = cmd_forget(args)
    except KeyboardInterrupt:
        print("cancelled: nothing partial was stored", file=sys.stderr)
        return 130
    except (InputError, ConfigError, KeyError, ValueError, BackendError, JobFailed) as err:
        # InputError covers every input the validation layer refuses (DataError, ForgetRequestError,
        # StoreError, SweepError); the message is the user's, so no traceback is printed
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(json.dumps({"error": message}), file=sys.stdout)
        print(f"error: {message}", file=sys.stderr)
        return 2
    if _NOTES and isinstance(out, dict):
        out["notes"] = list(_NOTES)
    if args.command == "forget":
        print(forget_summary(out), file=sys.stderr)
    print(json.dumps(out, default=float))
    return 0
