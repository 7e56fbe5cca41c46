"""`tinyvision search`: the most accurate model that fits the board, found automatically.

    candidates (search: section)  ->  fit check of the built, untrained model on the board
      (flash, RAM, estimated latency; over budget: pruned before any training, counted)
    ->  short training, validation accuracy (a box's IoU score for detection) reported each
      epoch to Optuna's Hyperband pruner
      (a trial is a run in the registry, tagged with the study; a stopped one is `pruned`)
    ->  the Pareto front (val accuracy vs flash vs latency), printed and drawn in search.html
    ->  the best fitting candidate retrained with the full recipe, exported, verified on TFLM
      and fit-checked.

The study lives in SQLite under `<runs_dir>/search/` (or an RDB URL several machines share); a
killed search continues where it stopped when the same command is run again. The config's own
model is always one of the candidates (the first trial), so the result is never worse than it
on validation.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from tinyvision.config import RunConfig, validate_config
from tinyvision.deploy.boards import Board, load_board
from tinyvision.deploy.fit import fit_check
from tinyvision.deploy.litert import export_int8
from tinyvision.deploy.ops import model_ops
from tinyvision.deploy.runners import find_arena_bytes
from tinyvision.data.manifest import Manifest
from tinyvision.errors import ConfigError, ExportError
from tinyvision.models.build import build_model, settle_batchnorm
from tinyvision.files import atomic_write_text
from tinyvision.records import BoardFit, Summary
from tinyvision.report import plots
from tinyvision.run.device import PYTHON_ARENA, camera_format
from tinyvision.run.folder import RunDir
from tinyvision.run.registry import Registry
from tinyvision.run.run import make_run_folder
from tinyvision.run.prepared import prepare_data, prepare_manifest, resolve_settings
from tinyvision.run.stages import train_stage

log = logging.getLogger("tinyvision")

SEARCH_DIR = "search"
OVER_BUDGET = "over_budget"  # user attribute of a trial pruned before training
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a file name and run-name prefix
# a storage URL's secrets: user:PASSWORD@host, and query values such as ?password=...
_URL_PASSWORD = re.compile(r"(://[^:/@]*):[^@]*@")
_URL_SECRET = re.compile(r"([?&](?:password|passwd|pwd|secret|token|api_key|key)=)[^&#]*",
                         re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    backbone: str
    alpha: float
    input_size: int
    color_mode: str
    dropout: float
    learning_rate: float
    unfreeze_from: str | int | float | None = None

    def apply(self, cfg: RunConfig, name: str) -> RunConfig:
        """The run config of this candidate (the stage that trains last gets the rate)."""
        model = cfg.model.model_copy(update={"backbone": self.backbone, "alpha": self.alpha,
                                             "input_size": (self.input_size, self.input_size),
                                             "color_mode": self.color_mode,
                                             "dropout": self.dropout})
        fine_tune = cfg.train.fine_tune.model_copy(update={"learning_rate": self.learning_rate})
        if self.unfreeze_from is not None:
            fine_tune = fine_tune.model_copy(update={"unfreeze_from": self.unfreeze_from})
        train = cfg.train.model_copy(update={"fine_tune": fine_tune})
        return cfg.model_copy(update={"name": name, "model": model, "train": train,
                                      "overwrite": False})

    def shape_key(self) -> tuple:
        return (self.backbone, self.alpha, self.input_size, self.color_mode)


def candidate_space(cfg: RunConfig) -> dict[str, list]:
    """The choices of each setting, with the config's own value always among them."""
    search, model = cfg.search, cfg.model
    own_size = model.input_size[0] if model.input_size[0] == model.input_size[1] else None
    space = {
        "backbone": search.backbones or [model.backbone],
        "alpha": sorted({*search.alphas, model.alpha}),
        "input_size": sorted({*search.input_sizes, *([own_size] if own_size else [])}),
        "color_mode": search.color_modes or [model.color_mode],
        "dropout": sorted({*search.dropouts, model.dropout}),
    }
    if model.pretrained and search.unfreeze_from:
        space["unfreeze_from"] = list(dict.fromkeys([*search.unfreeze_from,
                                                      cfg.train.fine_tune.unfreeze_from]))
    return space


def own_candidate(cfg: RunConfig) -> dict:
    """The config's own settings, as Optuna parameters (the first trial)."""
    params = {"backbone": cfg.model.backbone, "alpha": cfg.model.alpha,
              "input_size": cfg.model.input_size[0], "color_mode": cfg.model.color_mode,
              "dropout": cfg.model.dropout,
              "learning_rate": _clip(cfg.train.fine_tune.learning_rate, cfg.search.learning_rate)}
    if "unfreeze_from" in candidate_space(cfg):
        params["unfreeze_from"] = cfg.train.fine_tune.unfreeze_from
    return params


def _clip(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def suggest(trial, cfg: RunConfig) -> Candidate:
    space = candidate_space(cfg)
    values = {key: trial.suggest_categorical(key, choices) for key, choices in space.items()}
    values["learning_rate"] = trial.suggest_float("learning_rate", *cfg.search.learning_rate,
                                                  log=True)
    return Candidate(**values)


# ---- the fit of a candidate, before any training ---------------------------------------------
class FitChecker:
    """Flash, RAM and latency of each candidate's untrained model on the board, cached by shape.

    The model is built and converted to int8 with random calibration images: sizes, ops, arena
    and MACs do not depend on the weights' values."""

    def __init__(self, cfg: RunConfig, board: Board, n_classes: int, task: str,
                 latency_ms: float | None) -> None:
        self.cfg, self.board, self.n_classes, self.task = cfg, board, n_classes, task
        self.latency_ms = latency_ms
        self.cache: dict[tuple, dict] = {}

    def check(self, candidate: Candidate) -> dict:
        key = candidate.shape_key()
        if key not in self.cache:
            self.cache[key] = self._measure(candidate)
        return self.cache[key]

    def _measure(self, candidate: Candidate) -> dict:
        cfg = candidate.apply(self.cfg, "fit-check")
        channels = 1 if candidate.color_mode == "grayscale" else 3
        model = build_model(cfg.model.model_copy(update={"weights": "none"}), self.n_classes,
                            self.task)
        images = np.random.default_rng(0).integers(
            0, 256, (8, candidate.input_size, candidate.input_size, channels), dtype=np.uint8)
        settle_batchnorm(model, images)  # else an untrained net's softmax input collapses
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "candidate.tflite"
            export_int8(model, images, path, warn_few=False)  # sizing, not calibrating
            uses = model_ops(path)
            arena = find_arena_bytes(path, (images[0].astype(np.int16) - 128).astype(np.int8),
                                     cfg.verify.max_arena_bytes)
            size = path.stat().st_size
        keras.backend.clear_session()
        camera = camera_format(cfg) if cfg.deploy.camera is not None else None
        fit = fit_check(self.board, size, [u.op for u in uses], arena, PYTHON_ARENA,
                        sum(u.macs for u in uses), camera)
        reasons = [part for part, table in (("flash", fit.flash), ("ram", fit.ram))
                   if not table["fits"]]
        if self.latency_ms is not None and fit.latency_ms > self.latency_ms:
            reasons.append("latency")
        return {"fits": not reasons, "reasons": reasons, "flash": fit.flash["total"],
                "ram": fit.ram["total"], "latency_ms": fit.latency_ms, "int8_bytes": size,
                "board_fit": fit.to_json()}


# ---- trials ----------------------------------------------------------------------------------
class _Pruning(keras.callbacks.Callback):
    """Report the validation metric to Optuna after every epoch; stop when it says prune."""

    def __init__(self, trial, monitor: str) -> None:
        super().__init__()
        self.trial, self.monitor, self.step, self.pruned, self.best = trial, monitor, 0, False, None

    def on_epoch_end(self, epoch, logs=None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        self.step += 1
        self.best = value if self.best is None else max(self.best, value)
        self.trial.report(float(value), self.step)
        if self.trial.should_prune():
            self.pruned = True
            self.model.stop_training = True


def run_trial(trial, cfg: RunConfig, study: str, checker: FitChecker, registry: Registry) -> float:
    import optuna

    candidate = suggest(trial, cfg)
    fit = checker.check(candidate)
    trial.set_user_attr("fit", fit)
    if not fit["fits"]:
        trial.set_user_attr(OVER_BUDGET, ", ".join(fit["reasons"]))
        raise optuna.TrialPruned(f"over the board's budget: {', '.join(fit['reasons'])}")
    trial_cfg = candidate.apply(cfg, f"{study}-t{trial.number:03d}")
    budget = {"epochs": cfg.search.epochs}
    trial_cfg = trial_cfg.model_copy(update={"train": trial_cfg.train.model_copy(
        update={"patience": None})})
    trial_cfg, run = make_run_folder(trial_cfg)
    trial.set_user_attr("run", run.name)
    registry.start_run(run.name, run.root, trial_cfg.model_dump(mode="json"))
    manifest = None
    try:
        manifest = prepare_manifest(trial_cfg, run)
        trial_cfg, _ = resolve_settings(trial_cfg, manifest)
        raw = trial_cfg.model_dump(mode="json")
        # the trial's budget: search.epochs, and a third of the recipe's step minimum (a model
        # from scratch learns nothing in a hundred steps, so short trials would all tie at chance)
        raw["train"].update(budget=budget, min_steps=(raw["train"]["min_steps"] or 0) // 3)
        trial_cfg = validate_config(raw)
        data = prepare_data(trial_cfg, run, manifest, progress=False)
        pruning = _Pruning(trial, objective_metric(manifest.task, len(data.indices("val")) > 0))
        trial.set_user_attr("objective", objective_label(manifest.task))
        result = train_stage(trial_cfg, run, data, callbacks=[pruning])
    except BaseException as exc:
        registry.fail_run(run.name, f"{type(exc).__name__}: {exc}",
                          metrics=_trial_summary(run, manifest, study, fit, "failed").to_json())
        raise
    value = float(pruning.best if pruning.best is not None else 0.0)
    key = "iou_score" if manifest.task == "detection" else "accuracy"
    summary = _trial_summary(run, manifest, study, fit, "pruned" if pruning.pruned else "finished")
    summary.float_metrics, summary.best_epoch = {key: value}, result.best_epoch
    metrics = summary.to_json()
    if pruning.pruned:
        registry.fail_run(run.name, f"pruned by the search after {pruning.step} epochs",
                          metrics=metrics, status="pruned", config=trial_cfg.model_dump(mode="json"))
        raise optuna.TrialPruned(f"pruned after {pruning.step} epochs")
    registry.finish_run(run.name, metrics, config=trial_cfg.model_dump(mode="json"))
    return value


def objective_metric(task: str, has_val: bool) -> str:
    """What a trial maximises, as the training logs name it: the val accuracy, or the box's val
    IoU score for detection (training/callbacks.BoxScore)."""
    if task == "detection":
        if not has_val:
            raise ConfigError("A search over a detection task needs a val split to score the box "
                              "on (data.val_fraction > 0, or a val/ folder).")
        return "val_iou"
    return "val_accuracy" if has_val else "accuracy"


def objective_label(task: str) -> str:
    return "val IoU" if task == "detection" else "val accuracy"


# ---- the study -------------------------------------------------------------------------------
@dataclass
class SearchResult:
    study: str
    storage: str
    trials: int
    completed: int
    pruned_over_budget: int
    pruned_early: int
    front: list[dict]
    best: dict | None
    seconds: float
    rows: list[dict] | None = None  # every completed trial
    objective: str = "val accuracy"  # what `objective` in the rows is (val IoU for detection)
    report: Path | None = None
    final: Summary | None = None


def search(cfg: RunConfig, board_name: str, trials: int | None = None,
           minutes: float | None = None, latency_ms: float | None = None,
           storage: str | None = None, study_name: str | None = None,
           retrain: bool | None = None, console=None) -> SearchResult:
    """Run (or continue) the study; returns its trials, the front and the retrained best."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("tinyvision search needs optuna: pip install 'tinyvision[search]'") \
            from None
    start = time.perf_counter()
    settings = cfg.search.model_copy(update={k: v for k, v in {
        "trials": trials, "minutes": minutes, "latency_ms": latency_ms, "storage": storage,
        "study": study_name, "retrain": retrain}.items() if v is not None})
    study_name = check_study_name(cfg.name if settings.study is None else settings.study)
    url = settings.storage or f"sqlite:///{cfg.runs_dir.resolve() / SEARCH_DIR / study_name}.sqlite3"
    # the URL with its password connects; everything written (trial configs, the registry, the
    # log, the report) gets it masked
    shown = masked_url(url)
    settings = settings.model_copy(update={"storage": settings.storage and shown})
    cfg = cfg.model_copy(update={"search": settings, "runs_dir": cfg.runs_dir.resolve()})
    board = load_board(board_name)
    folder = cfg.runs_dir / SEARCH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name, storage=_storage(url), direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto",
                                              reduction_factor=3))
    manifest = _probe(cfg)
    cfg, _ = resolve_settings(cfg, manifest)  # colour mode and recipe, once for every trial
    if not study.trials:
        study.enqueue_trial(own_candidate(cfg))
    checker = FitChecker(cfg, board, len(manifest.classes), manifest.task, settings.latency_ms)
    registry = Registry(cfg.runs_dir)
    done = sum(t.state.is_finished() for t in study.trials)
    remaining = max(0, settings.trials - done)
    log.info("search %s: %d trial(s) to run on %s (storage %s)", study_name, remaining, board.name,
             shown)
    if remaining:
        # the trial count is the study's, shared by every process working on it
        stop_at_total = optuna.study.MaxTrialsCallback(settings.trials, states=None)
        study.optimize(lambda trial: run_trial(trial, cfg, study_name, checker, registry),
                       n_trials=remaining, timeout=None if settings.minutes is None
                       else settings.minutes * 60, catch=(ExportError,),
                       callbacks=[stop_at_total])
    result = summarize(study, shown)
    result.report = write_search_report(result, folder / f"{study_name}.html")
    if settings.retrain and result.best is not None:
        result.final = retrain_best(cfg, result.best, board_name, study_name, console)
    result.seconds = round(time.perf_counter() - start, 1)
    return result


def check_study_name(name: str) -> str:
    """A study name is a file name (`<runs_dir>/search/<study>.sqlite3`) and its trials' run-name
    prefix: letters, digits, '.', '_' and '-', no path separators."""
    if not _STUDY_NAME.match(name):
        raise ConfigError(f"Expected a study name of letters, digits, '.', '_' and '-' starting "
                          f"with a letter or digit, received study={name!r}; pass --study NAME "
                          "(or set search.study, or the config's name).")
    return name


def masked_url(url: str) -> str:
    """`url` with its password (user:PASSWORD@host) and secret query values (password=,
    token=, ...) replaced by ***: the form of a storage URL that tinyvision writes or prints."""
    return _URL_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", url))


def _storage(url: str):
    """Optuna's storage at `url`. A URL that cannot work (unparsable, unknown database, missing
    driver, unreachable) is one ConfigError naming it without its password; only the race of
    processes creating the tables together is retried."""
    import warnings

    import optuna
    import sqlalchemy

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    shown = masked_url(url)
    try:
        sqlalchemy.engine.make_url(url).get_dialect()
    except Exception as exc:  # ArgumentError, NoSuchModuleError, ImportError of a driver
        raise ConfigError(f"Cannot use the search storage {shown}: {_first_line(exc)}. Give an "
                          "Optuna RDB URL such as sqlite:////abs/path/study.db or "
                          "postgresql://user:password@host/db (its driver installed).") from None
    # a killed process's trial is failed after the grace period; sqlite waits for its lock
    kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") \
        else {}
    for attempt in range(5):  # processes starting together race to create the tables
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90,
                                              **kwargs)
        except Exception as exc:
            if attempt == 4 or not _creating_tables(exc):
                raise ConfigError(f"Cannot open the search storage {shown}: "
                                  f"{_first_line(exc)}.") from None
            time.sleep(1.0 + attempt)


def _creating_tables(exc: Exception) -> bool:
    """Whether `exc` is another process creating the study tables at the same moment."""
    text = str(exc).lower()
    return "already exists" in text or "locked" in text or "unique constraint" in text \
        or "duplicate" in text


def _first_line(exc: Exception) -> str:
    """The first line of an exception's message, without a URL's password."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return masked_url(lines[0])[:300]


def _probe(cfg: RunConfig):
    """The classes and task of the data, from the source (no run folder)."""
    from tinyvision.data.sources import build_manifest

    return build_manifest(cfg.data, cfg.seed, cfg.model.task)


def summarize(study, url: str) -> SearchResult:
    import optuna

    rows = []
    over, early, objective = 0, 0, "val accuracy"
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.PRUNED:
            if OVER_BUDGET in trial.user_attrs:
                over += 1
            else:
                early += 1
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        fit = trial.user_attrs.get("fit", {})
        objective = trial.user_attrs.get("objective", objective)
        rows.append({"trial": trial.number, "run": trial.user_attrs.get("run"),
                     "objective": trial.value, "flash": fit.get("flash"),
                     "ram": fit.get("ram"), "latency_ms": fit.get("latency_ms"),
                     "params": dict(trial.params)})
    front = pareto_front(rows)
    # the most accurate fitting candidate; of equals, the smallest
    best = max(rows, key=lambda r: (r["objective"], -(r["flash"] or 0))) if rows else None
    return SearchResult(study.study_name, url, len(study.trials), len(rows), over, early, front,
                        best, 0.0, rows, objective=objective)


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows no other row beats on accuracy (higher), flash and latency (lower) at once."""
    def dominates(a: dict, b: dict) -> bool:
        better_or_equal = (a["objective"] >= b["objective"] and a["flash"] <= b["flash"]
                           and a["latency_ms"] <= b["latency_ms"])
        strictly = (a["objective"] > b["objective"] or a["flash"] < b["flash"]
                    or a["latency_ms"] < b["latency_ms"])
        return better_or_equal and strictly

    front = [r for r in rows if not any(dominates(o, r) for o in rows if o is not r)]
    return sorted(front, key=lambda r: -r["objective"])


def _trial_summary(run: RunDir, manifest: Manifest | None, study: str, fit: dict,
                   status: str) -> Summary:
    """A trial's registry record: the candidate's fit on the board (measured before training
    on an untrained copy) and its study; the caller adds the objective."""
    return Summary(run=str(run.root), status=status,
                   task=manifest.task if manifest else "", study=study,
                   classes=manifest.classes if manifest else [],
                   images={split: sum(1 for s in manifest.samples if s.split == split)
                           for split in ("train", "val", "test")} if manifest else {},
                   int8_bytes=fit["int8_bytes"], fit=BoardFit.from_json(fit["board_fit"]))


def retrain_best(cfg: RunConfig, best: dict, board: str, study: str, console=None) -> Summary:
    """The best fitting candidate with the full recipe: trained, exported for the board,
    verified on TFLM; returns its summary."""
    from tinyvision.run.run import full_run

    params = dict(best["params"])
    candidate = Candidate(**{**{"unfreeze_from": None}, **params})
    final_cfg = candidate.apply(cfg, f"{study}-best")
    final_cfg = final_cfg.model_copy(update={"export": final_cfg.export.model_copy(
        update={"board": board})})
    log.info("retraining the best candidate (trial %d: %s) with the full recipe", best["trial"],
             ", ".join(f"{k}={v}" for k, v in params.items()))
    _, summary = full_run(final_cfg, console=console, progress=console is not None)
    return summary


def write_search_report(result: SearchResult, path: Path) -> Path:
    """search.html: the trials as accuracy vs flash, the front marked, and the front's table."""
    import base64
    from html import escape

    figure = plots.search_front(result) if result.completed else None
    image = (f'<img alt="{result.objective} vs flash" src="data:image/png;base64,'
             f'{base64.b64encode(figure).decode()}">' if figure else "<p>No completed trial.</p>")
    head = f"<tr><th>trial</th><th>run</th><th>{result.objective}</th><th>flash bytes</th>" \
           "<th>RAM bytes</th><th>latency ms (est.)</th><th>settings</th></tr>"
    body = "".join(
        f"<tr><td>{r['trial']}</td><td>{escape(str(r['run']))}</td>"
        f"<td>{r['objective']:.4f}</td><td>{r['flash']:,}</td><td>{r['ram']:,}</td>"
        f"<td>{r['latency_ms']:g}</td><td>{escape(_settings(r['params']))}</td></tr>"
        for r in result.front)
    html = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>search "
            f"{escape(result.study)}</title></head><body><h1>search {escape(result.study)}</h1>"
            f"<p>{result.trials} trials: {result.completed} trained to the end, "
            f"{result.pruned_early} stopped early by the pruner, {result.pruned_over_budget} "
            f"pruned before training (over the board's budget).</p>{image}"
            f"<h2>Pareto front</h2><table>{head}{body}</table></body></html>\n")
    atomic_write_text(path, html)
    return path


def _settings(params: dict) -> str:
    return ", ".join(f"{k}={v:.2g}" if isinstance(v, float) and k == "learning_rate"
                     else f"{k}={v}" for k, v in params.items())


def front_table_rows(result: SearchResult) -> list[list[str]]:
    return [[str(r["trial"]), f"{r['objective']:.4f}", f"{r['flash']:,}", f"{r['ram']:,}",
             f"{r['latency_ms']:g}", _settings(r["params"])] for r in result.front]


def as_dict(result: SearchResult) -> dict:
    out = asdict(result)
    out["report"] = str(result.report) if result.report else None
    return out
