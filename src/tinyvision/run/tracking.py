"""Optional MLflow logging of a finished run (`tracking: mlflow` and `tracking_uri` in the config).

MLflow is an optional extra (`pip install "tinyvision[mlflow]"`), imported only here and only when
asked for. The run registry (runs/registry.sqlite) is always written; MLflow is in addition.
"""

from __future__ import annotations

from tinyvision.config import RunConfig
from tinyvision.errors import ConfigError
from tinyvision.records import Summary
from tinyvision.run.folder import RunDir
from tinyvision.run.registry import key_settings

ARTIFACTS = ("config", "log", "metrics", "verify", "summary", "int8_model", "c_header")


def check_tracking(cfg: RunConfig) -> None:
    """Fail before any work when MLflow is asked for but cannot be used."""
    if cfg.tracking != "mlflow":
        return
    if not cfg.tracking_uri:
        raise ConfigError("tracking: mlflow needs tracking_uri (e.g. http://mlflow.local:5000 or "
                          "file:./mlruns).")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError('tracking: mlflow needs the mlflow package: pip install '
                          '"tinyvision[mlflow]", or set tracking: none.') from None


def log_run(cfg: RunConfig, run: RunDir, summary: Summary) -> None:
    """Log the run's key hyperparameters, headline metrics and artifacts to MLflow."""
    if cfg.tracking != "mlflow":
        return
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.set_experiment(cfg.tracking_experiment)
    with mlflow.start_run(run_name=run.name):
        mlflow.log_params(_params(cfg))
        mlflow.log_metrics(_metrics(summary))
        for name in ARTIFACTS:
            path = getattr(run, name)
            if path.exists():
                mlflow.log_artifact(str(path))


def _params(cfg: RunConfig) -> dict:
    """The registry's key settings (one table: registry.CONFIG_COLUMNS), optimizer and seed."""
    params = key_settings(cfg.model_dump(mode="json"))
    params.update(optimizer=cfg.train.optimizer, seed=cfg.seed)
    return {k: v for k, v in params.items() if v is not None}


def _metrics(summary: Summary) -> dict:
    """The summary's headline metrics (float_*, int8_*) and sizes, as numbers."""
    out = {f"float_{k}": v for k, v in (summary.float_metrics or {}).items()}
    out.update({f"int8_{k}": v for k, v in (summary.int8 or {}).items()})
    out.update(int8_bytes=summary.int8_bytes, arena_bytes=summary.arena_bytes,
               macs=summary.macs, params=summary.params)
    return {k: float(v) for k, v in out.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}
