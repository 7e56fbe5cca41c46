"""A run, end to end: `train` makes a run folder, runs every stage in order and registers it;
`Run` is a finished (or failed) run folder with its config, summary and model, and the stages
that can run again on it (evaluate, export, verify, report, predict).

This is the Python API that notebooks use (`tinyvision.train`, `tinyvision.Run`); the CLI is a
thin layer over it.
"""

from __future__ import annotations

import logging
import signal
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tinyvision.config import RunConfig, load_config
from tinyvision.data.manifest import Manifest
from tinyvision.deploy.formats import check_formats
from tinyvision.deploy.tflm_build import SOURCE_ENV
from tinyvision.errors import ExportError, RunError, VerifyError
from tinyvision.files import atomic_write_text
from tinyvision.layout import WORKERS_DIR
from tinyvision.records import BoardFit, Evaluation, ExportResult, Summary, VerifyReport
from tinyvision.run.folder import RunDir, new_run_dir, open_run_dir
from tinyvision.run.predict import collect_images, load_predictor
from tinyvision.run.registry import Registry
from tinyvision.run.device import check_device_settings, run_fit
from tinyvision.run.deploy_stages import export_formats, export_stage, verify_stage
from tinyvision.run.prepared import prepare_data, prepare_manifest, resolve_settings, train_data
from tinyvision.run.stages import evaluate_stage, report_stage, train_stage
from tinyvision.run.summary import headline
from tinyvision.run.tracking import check_tracking, log_run

log = logging.getLogger("tinyvision")


# ---- the whole run ---------------------------------------------------------------------------
def make_run_folder(cfg: RunConfig) -> tuple[RunConfig, RunDir]:
    """Create the run folder (a free name under runs_dir) and save the config in it.

    Paths in the saved config are absolute, so `tinyvision eval|export|verify RUN` work from any
    working directory and find the same image cache.
    """
    cfg = cfg.model_copy(update={"runs_dir": cfg.runs_dir.resolve(),
                                 "data": cfg.data.model_copy(update={"cache_dir": cfg.cache_dir.resolve()})})
    run = new_run_dir(cfg.runs_dir, cfg.name, cfg.overwrite)
    atomic_write_text(run.config, cfg.to_yaml())
    return cfg, run


def full_run(cfg: RunConfig, console=None, progress: bool = True) -> tuple[RunDir, Summary]:
    """Everything `tinyvision train` does; returns the run directory and its summary.

    The run is registered in runs/registry.sqlite as running, then finished with its metrics, or
    failed with the error (the error is re-raised). A model that the int8 export or its check
    refuses keeps its evaluation, report and summary (status export_failed).

    With `train.strategy: multi_worker` and a TF_CONFIG cluster of several workers, worker 0 (the
    chief) does all of this; every other worker trains its share of each batch with it and keeps
    only its training, in `<runs_dir>/.workers/<name>-worker<i>` (status `worker`, not
    registered)."""
    role = _worker_role(cfg)
    if role is not None and not role.chief:
        return _worker_run(cfg, role.index, progress)
    check_before_work(cfg)
    cfg, run = make_run_folder(cfg)
    return _run_and_register(cfg, run, console, progress, resume=False)


def _worker_role(cfg: RunConfig):
    """With `train.strategy: multi_worker`: the strategy made (before any TensorFlow op: it
    configures TensorFlow) and this process's WorkerRole from TF_CONFIG, its batch checked; None
    for one worker or another strategy."""
    if cfg.train.strategy != "multi_worker":
        return None
    from tinyvision.training.distribute import check_worker_batch, make_strategy, worker_role

    make_strategy("multi_worker")
    role = worker_role()
    check_worker_batch(cfg.train.batch_size, role)
    return role


def _worker_run(cfg: RunConfig, index: int, progress: bool, resume_from: RunDir | None = None
                ) -> tuple[RunDir, Summary]:
    """A worker other than the chief: the data and the training (its part of every batch, the
    gradients averaged with the others'), in a folder of its own; the chief evaluates, exports
    and registers the run. `resume_from`: the chief's run folder, whose last saved training
    state (the same weights on every worker) this worker continues from."""
    cfg = cfg.model_copy(update={"name": f"{cfg.name}-worker{index}", "overwrite": True,
                                 "runs_dir": cfg.runs_dir / WORKERS_DIR})
    cfg, run = make_run_folder(cfg)
    if resume_from is not None:
        shutil.copytree(resume_from.checkpoints, run.checkpoints, dirs_exist_ok=True)
    manifest = prepare_manifest(cfg, run)
    cfg, _ = resolve_settings(cfg, manifest)
    data = prepare_data(cfg, run, manifest, progress=progress)
    result = train_stage(cfg, run, data, resume=resume_from is not None)
    summary = Summary(run=str(run.root), status="worker", recipe=cfg.train.recipe,
                      task=manifest.task, classes=manifest.classes,
                      images=data.split_sizes(),
                      best_epoch=result.best_epoch,
                      training={"seconds": result.seconds, "stages": result.stages},
                      warnings=result.warnings)
    summary.write(run.summary)
    return run, summary


def check_before_work(cfg: RunConfig) -> None:
    """Settings that are valid one by one but not together fail here, before any work."""
    from tinyvision.data.augment import Augmenter
    check_tracking(cfg)
    if cfg.train.augment:  # e.g. hue on grayscale input
        Augmenter(cfg.train.augment, (*cfg.model.input_size, cfg.model.channels))
    check_device_settings(cfg)  # an unknown board or a wrong TFLM tree, not after training
    check_formats(cfg.export.formats)  # a converter that is not installed, not after training


def resume_run(path: str | Path, console=None, progress: bool = True
               ) -> tuple[RunDir, Summary]:
    """Continue a killed `tinyvision train` from its last saved epoch, then finish every stage.

    The result equals an uninterrupted run with the same seed (within float tolerance). With
    `train.strategy: multi_worker` every worker runs it with the chief's run folder (and its
    TF_CONFIG): all continue from the chief's last saved state, which holds the weights every
    worker had."""
    from tinyvision.training.callbacks import load_resume_state

    try:
        cfg, run, _ = load_run(path)
    except RunError as exc:
        from tinyvision.training.distribute import worker_role

        if worker_role() is None:
            raise
        raise RunError(f"{exc} With several workers (TF_CONFIG) every worker resumes from the "
                       "chief's run folder: give its path, on a disk every worker reads.") from exc
    cfg = without_run_tree(cfg, run)  # its build.sh would run: a run folder never chooses it
    role = _worker_role(cfg)
    if load_resume_state(run.checkpoints) is None:
        raise RunError(f"{run.root} has no saved training state (checkpoints/state.json): it was "
                       "killed before its first epoch ended. Start it again with `tinyvision train`.")
    if role is not None and not role.chief:
        return _worker_run(cfg, role.index, progress, resume_from=run)
    check_before_work(cfg)  # e.g. tracking: mlflow on a machine without it, before training
    return _run_and_register(cfg, run, console, progress, resume=True)


def _run_and_register(cfg: RunConfig, run: RunDir, console, progress: bool, resume: bool
                      ) -> tuple[RunDir, Summary]:
    """Every stage, with the run's registry row: running, then finished, export_failed or
    failed (the error re-raised)."""
    registry = Registry(cfg.runs_dir)
    registry.start_run(run.name, run.root, cfg.model_dump(mode="json"))
    try:
        with _sigterm_interrupts():
            cfg, summary = _all_stages(cfg, run, console, progress, resume)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (RunInterrupted)
        how = "SIGTERM" if isinstance(exc, RunInterrupted) else "Ctrl-C"
        registry.fail_run(run.name, f"interrupted ({how}); the last finished epoch is saved: "
                          f"continue with `tinyvision train --resume {run.root}`",
                          status="interrupted", config=_saved_config(run))
        raise
    except (ExportError, VerifyError) as exc:
        summary = Summary.read(run.summary)
        refused = summary is not None and summary.status == "export_failed"
        registry.fail_run(run.name, f"{type(exc).__name__}: {exc}",
                          metrics=summary.to_json() if summary else None,
                          status="export_failed" if refused else "failed",
                          config=_saved_config(run))
        raise
    except BaseException as exc:
        registry.fail_run(run.name, f"{type(exc).__name__}: {exc}", config=_saved_config(run))
        raise
    registry.finish_run(run.name, summary.to_json(), config=cfg.model_dump(mode="json"))
    log_run(cfg, run, summary)
    return run, summary


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM arrived while a run was training: it ends like Ctrl-C (row `interrupted`)."""


@contextmanager
def _sigterm_interrupts():
    """While a run works, SIGTERM (a scheduler's or `kill`'s polite stop) raises RunInterrupted
    instead of killing the process unannounced, so the registry row says `interrupted`. Only
    the main thread can take signals; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise RunInterrupted("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _all_stages(cfg: RunConfig, run: RunDir, console, progress: bool, resume: bool
                ) -> tuple[RunConfig, Summary]:
    """Every stage of a run; returns the resolved config and the summary."""
    from tinyvision.models.cost import model_cost

    start = time.perf_counter()
    if resume:
        manifest = Manifest.load(run.manifest)
    else:
        manifest = prepare_manifest(cfg, run)
        cfg, lines = resolve_settings(cfg, manifest)
        atomic_write_text(run.config, cfg.to_yaml())  # the resolved settings, for eval/resume
        for line in lines:
            log.info(line)
        check_before_work(cfg)
    data = prepare_data(cfg, run, manifest, progress=progress)
    result = train_stage(cfg, run, data, console, resume=resume)
    cfg = result.config or cfg  # a failed start check may have switched the fine-tuning
    float_metrics = evaluate_stage(cfg, run, data, result.model)
    cost = model_cost(result.model)
    summary = Summary(
        run=str(run.root), status="finished", recipe=cfg.train.recipe,
        classes=data.manifest.classes, task=data.manifest.task,
        images=data.split_sizes(),
        bad_images=len(data.cache.bad), best_epoch=result.best_epoch,
        start=({k: v for k, v in result.start.items() if k != "warnings"}
               if result.start else None),
        training={"seconds": result.seconds, "stages": result.stages},
        float_metrics=headline(float_metrics),
        box_baselines=(float_metrics["boxes"]["baselines"] if "boxes" in float_metrics
                       else None),
        warnings=result.warnings + float_metrics["warnings"],
        params=cost.params, macs=cost.macs)
    try:
        exported = export_stage(cfg, run, data, result.model)
        verified = verify_stage(cfg, run, data, result.model)
    except (ExportError, VerifyError) as exc:
        summary.status, summary.error = "export_failed", str(exc)
        summary.seconds = round(time.perf_counter() - start, 1)
        summary.write(run.summary)
        report_stage(cfg, run, data)
        raise type(exc)(f"{exc} The float model, its evaluation (metrics.json) and report.html "
                        f"are kept in {run.root}; the registry marks the run export_failed."
                        ) from None
    _add_deployment(summary, exported, verified)
    summary.seconds = round(time.perf_counter() - start, 1)
    summary.write(run.summary)
    report_stage(cfg, run, data)  # reads summary.json for the headline numbers
    return cfg, summary


def _add_deployment(summary: Summary, exported: ExportResult, verified: VerifyReport) -> None:
    """The export's and verify's figures in the summary: int8 metrics, sizes, the device side,
    every format, and their warnings."""
    summary.int8, summary.delta = headline(verified.metrics), verified.delta or {}
    summary.int8_bytes, summary.float_bytes = exported.int8_bytes, exported.float_bytes
    summary.arena_bytes, summary.ops = verified.arena_bytes, exported.ops
    summary.app, summary.firmware, summary.fit = verified.app, verified.firmware, verified.fit
    summary.camera, summary.qat = verified.camera, verified.qat
    summary.formats = _format_summary(exported, verified)
    summary.warnings = summary.warnings + verified.warnings


def _format_summary(exported: ExportResult, verified: VerifyReport) -> dict:
    """Every exported format with its bytes and verified headline metrics."""
    formats = {"int8": {**exported.formats["int8"], "verified": True,
                        "metrics": headline(verified.metrics)}}
    for fmt, entry in (verified.formats or {}).items():
        formats[fmt] = {key: entry[key] for key in ("file", "bytes", "verified", "metrics",
                                                    "max_abs_diff", "note") if key in entry}
    return formats


def _saved_config(run: RunDir) -> dict | None:
    """The run's config.yaml (resolved once the data was read), for the registry row."""
    try:
        return load_config(run.config).model_dump(mode="json")
    except Exception:  # a half-made run folder: the row keeps the config it started with
        return None


def without_run_tree(cfg: RunConfig, run: RunDir) -> RunConfig:
    """A run folder's config without its verify.tflm_source: verify would run that tree's
    build.sh and make would read its tflm_flags.mk, so the tree comes from the command line or
    $TINYVISION_TFLM_SOURCE instead, unless the command trusts the run (--trust-model-code)."""
    if cfg.verify.tflm_source is None:
        return cfg
    log.warning("%s names verify.tflm_source=%s; a run folder's TFLM tree is used only with "
                "`tinyvision verify --trust-model-code` (its build.sh would run here), so the "
                "tree comes from --tflm-source or $%s, if given", run.config,
                cfg.verify.tflm_source, SOURCE_ENV)
    return with_tree(cfg, None)


def with_tree(cfg: RunConfig, tflm_source: str | Path | None) -> RunConfig:
    """`cfg` with verify.tflm_source set (None: $TINYVISION_TFLM_SOURCE, else no app check)."""
    tree = None if tflm_source is None else Path(tflm_source)
    return cfg.model_copy(update={"verify": cfg.verify.model_copy(update={"tflm_source": tree})})


def load_run(path: str | Path) -> tuple[RunConfig, RunDir, Manifest]:
    """Config, paths and manifest of an existing run directory."""
    run = open_run_dir(path)
    cfg = load_config(run.config)
    manifest = Manifest.load(run.require(run.manifest, "tinyvision train"))
    return cfg, run, manifest


# ---- the Python API ----------------------------------------------------------------------------
ConfigLike = str | Path | dict | RunConfig


def as_config(config: ConfigLike, overrides: dict[str, Any] | None = None,
              dotted: list[str] | None = None) -> RunConfig:
    """A validated RunConfig from a YAML path, a dict or a RunConfig, with `overrides` (sections
    as nested dicts, e.g. {"model": {"alpha": 0.5}, "name": "a50"}) merged in and `dotted`
    `key=value` strings (as on the command line) applied last."""
    if isinstance(config, RunConfig):
        raw = config.model_dump(mode="json", exclude_unset=True)
        if not overrides and not dotted:
            return config
        base, path = raw, None
    elif isinstance(config, dict):
        base, path = config, None
    else:
        base, path = None, Path(config)
    if path is not None and not overrides:
        return load_config(path, dotted)
    raw = load_config(path).model_dump(mode="json", exclude_unset=True) if path else dict(base)
    return load_config(None, dotted, base=_merge(raw, overrides or {}))


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (_merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


class Run:
    """A run folder made by `tinyvision train`: its config, summary, metrics and model, and the
    stages that can run again on it. `Run.open("runs/demo")` opens one; `tinyvision.train(...)`
    returns one.

    Example:
        run = tinyvision.train("snacks.yaml", model={"alpha": 0.5})
        run.summary.int8["accuracy"], run.model.summary(), run.predict(["photo.jpg"])
    """

    def __init__(self, folder: RunDir, config: RunConfig, trust_model_code: bool = False,
                 tflm_source: str | Path | None = None) -> None:
        self.folder, self.config = folder, config
        self.trust_model_code = trust_model_code  # the caller's, never the run's own config
        self.tflm_source = tflm_source  # the caller's TFLM tree for verify, never the run's
        self._model = None

    @classmethod
    def open(cls, path: str | Path, trust_model_code: bool = False,
             tflm_source: str | Path | None = None) -> Run:
        """An existing run folder. `trust_model_code`: trust the run folder, i.e. load a model
        that stores Python code (Lambda layers of a backbone cut from a user's file) and let
        verify build against the TFLM tree its config names; off by default, so a run folder
        from elsewhere never runs its code by itself. `tflm_source`: the TFLM tree verify builds
        against (default: $TINYVISION_TFLM_SOURCE)."""
        folder = open_run_dir(path)
        return cls(folder, load_config(folder.config), trust_model_code, tflm_source)

    def __repr__(self) -> str:
        summary = self.summary
        status = summary.status if summary is not None else "unfinished"
        return f"Run({str(self.path)!r}, {status})"

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def path(self) -> Path:
        return self.folder.root

    @property
    def summary(self) -> Summary | None:
        """summary.json: headline metrics, sizes, warnings, status (None before it is written)."""
        return Summary.read(self.folder.summary)

    @property
    def metrics(self) -> Evaluation | None:
        """metrics.json: the float model on the test split (an `Evaluation` record)."""
        return Evaluation.read(self.folder.metrics)

    @property
    def model(self):
        """The trained float Keras model (export/model_float.keras), loaded once."""
        if self._model is None:
            self._model = self.folder.load_float_model(self.trust_model_code)
        return self._model

    def _data(self, progress: bool = False):
        manifest = Manifest.load(self.folder.require(self.folder.manifest, "tinyvision train"))
        return prepare_data(self.config, self.folder, manifest, progress=progress)

    def evaluate(self, tta: bool | None = None) -> dict:
        """Float model metrics on the test split (metrics.json), with flip TTA if asked."""
        cfg = self.config
        if tta is not None:
            cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"tta": tta})})
        return evaluate_stage(cfg, self.folder, self._data(), self.model)

    def export(self, formats: list[str] | None = None) -> ExportResult | dict:
        """int8 LiteRT model and C source in export/; returns sizes and quantisation.

        `formats` (e.g. ["onnx"]): instead, add these formats to a finished run without training
        again or editing its config: each is written into export/ and checked on its runtime
        (returned as {"split", "formats": {name: {file, bytes, metrics, max_abs_diff, ...}}}),
        and the run's config.yaml lists it in export.formats, so `verify` checks it again."""
        if not formats:
            return export_stage(self.config, self.folder, self._data(), self.model)
        self.folder.require(self.folder.int8_model, "tinyvision export")
        self.config, result = export_formats(self.config, self.folder, self._data(), self.model,
                                             list(formats))
        atomic_write_text(self.folder.config, self.config.to_yaml())
        return result

    def verify(self) -> VerifyReport:
        """The int8 model on TFLM and LiteRT reference kernels: metrics, arena (verify.json)."""
        needs_keras = len(self.config.export.formats) > 1
        return verify_stage(self._tree_config(), self.folder, self._data(),
                            self.model if needs_keras else None)

    def fit(self, board: str, firmware: bool = True) -> BoardFit:
        """Flash, RAM and latency of the int8 model on `board` (a profile name or a YAML path),
        with `fits`; writes nothing (`deploy.fit.fit_table` prints it). Measured from
        the firmware for the board's core where verify ran it or it can be built and run now
        (`firmware`, with the TFLM tree and the Arm toolchain), else estimated."""
        return run_fit(self._tree_config(), self.folder, board, firmware)

    def _tree_config(self) -> RunConfig:
        """The config with the TFLM tree the caller chose: never the run folder's own unless the
        caller trusts it (its build.sh would run here)."""
        if self.tflm_source is not None:
            return with_tree(self.config, self.tflm_source)
        if self.trust_model_code:
            return self.config
        return without_run_tree(self.config, self.folder)

    def report(self) -> Path:
        """Write report.html; returns its path."""
        return report_stage(self.config, self.folder, self._data())

    def predict(self, images, kind: str = "auto", tta: bool = False, top_k: int = 5) -> list:
        """Labels, scores (and boxes) for image files or folders, decoded as training decoded
        them; `kind`: int8 (bit-exact with the device), float, or auto (int8 when exported)."""
        images = [images] if isinstance(images, (str, Path)) else images
        predictor = load_predictor(self.path, kind, self.trust_model_code)
        return predictor.predict(collect_images(images), tta=tta, top_k=top_k)


def train(config: ConfigLike, *, overrides: list[str] | None = None, console=None,
          progress: bool = False, **sections) -> Run:
    """Train, evaluate, export and verify a model: everything `tinyvision train` does.

    `config`: a YAML path, a dict or a RunConfig; `sections` are merged into it (e.g.
    `model={"alpha": 0.5}, name="a50"`), `overrides` are dotted `key=value` strings.
    """
    cfg = as_config(config, sections, overrides)
    folder, _ = full_run(cfg, console=console, progress=progress)
    # the config that cut a backbone with Lambda layers from a user's file trusted that code,
    # and its TFLM tree is the user's own
    return Run.open(folder.root, trust_model_code=cfg.model.allow_unsafe_model_code,
                    tflm_source=cfg.verify.tflm_source)


def resume(path: str | Path, *, console=None, progress: bool = False) -> Run:
    """Continue a killed run from its last saved epoch, then finish every stage."""
    folder, _ = resume_run(path, console=console, progress=progress)
    return Run.open(folder.root)


def lr_find(config: ConfigLike, *, overrides: list[str] | None = None, on_step=None,
            progress: bool = False, **sections):
    """The learning-rate sweep of `tinyvision lr-find`: a run folder `<name>-lr-find` with the
    CSV and plot; returns the result as data (rates, losses, smoothed, suggestion, folder)."""
    from tinyvision.training.lr_finder import find_lr, save_lr_find, start_weights_file

    cfg = as_config(config, sections, overrides)
    if cfg.train.lr_find.weights:  # a wrong path fails before a run folder is made
        start_weights_file(cfg.train.lr_find.weights)
    cfg, folder = make_run_folder(cfg.model_copy(update={"name": f"{cfg.name}-lr-find"}))
    manifest = prepare_manifest(cfg, folder)
    cfg, lines = resolve_settings(cfg, manifest)  # the recipe decides which layers sweep
    atomic_write_text(folder.config, cfg.to_yaml())
    for line in lines:
        log.info(line)
    data = train_data(prepare_data(cfg, folder, manifest, progress=progress))
    result = find_lr(cfg, data, on_step)
    save_lr_find(result, folder.root)
    result.folder = folder.root
    return result


def runs(runs_dir: str | Path = "runs", sort: str = "started", filters=None) -> list[dict]:
    """The registry's runs as records (one dict per run, ready for pandas.DataFrame)."""
    registry = Registry(runs_dir, create=False)
    registry.mark_dead_runs()
    return registry.rows(sort=sort, filters=filters)
