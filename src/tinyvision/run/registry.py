"""The run registry: one row per run in `runs/registry.sqlite`, the model-selection table.

Stdlib sqlite3 in WAL mode. Every write is one short `BEGIN IMMEDIATE` transaction on its own
connection, with sqlite's busy timeout and then retries with backoff, so several processes can
start and finish runs at the same moment and every row lands. The schema version lives in
`PRAGMA user_version`; `_MIGRATIONS[v]` upgrades a file from version v - 1 to v.
WAL needs shared memory between processes: keep `runs_dir` on a local filesystem, not NFS/SMB.

About 500 lines on purpose: the schema and its migrations, the retried writes, the filters and the
comparison all speak the one table's columns; split, each part would re-declare them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from tinyvision.errors import RegistryError, did_you_mean
from tinyvision.files import process_alive, atomic_write_text
from tinyvision.layout import REGISTRY_FILE

SCHEMA_VERSION = 6
# export_failed: trained and evaluated, but the int8 export or its verification refused the model
STATUSES = frozenset({"running", "finished", "failed", "export_failed", "interrupted", "pruned"})
FILTER_OPERATORS = frozenset({"=", "!=", ">=", "<=", ">", "<"})
# Top-level config keys that name or place a run rather than define it: left out of the hash.
VOLATILE_CONFIG_KEYS = frozenset({"name", "runs_dir", "overwrite"})
ABSENT = "(absent)"  # a config key present in only one run of a comparison
INTERRUPTED_BY_KILL = ("its process ended without finishing the run (killed, or the machine went "
                       "down); continue it with `tinyvision train --resume RUN_DIR`")

# (column, SQL type, dotted path in RunConfig.model_dump(mode="json")): a run's key settings, the
# columns of the registry and the parameters logged to MLflow (run/tracking.py)
CONFIG_COLUMNS = (
    ("task", "TEXT", "model.task"),
    ("backbone", "TEXT", "model.backbone"),
    ("alpha", "REAL", "model.alpha"),
    ("input_size", "TEXT", "model.input_size"),
    ("color_mode", "TEXT", "model.color_mode"),
    ("weights", "TEXT", "model.weights"),
    ("recipe", "TEXT", "train.recipe"),
    ("batch_size", "INTEGER", "train.batch_size"),
    ("head_epochs", "INTEGER", "train.head.epochs"),
    ("fine_tune_epochs", "INTEGER", "train.fine_tune.epochs"),
    ("head_lr", "REAL", "train.head.learning_rate"),
    ("fine_tune_lr", "REAL", "train.fine_tune.learning_rate"),
)
# (column, SQL type, dotted paths in the metrics dict given to finish_run; the first present wins).
# The alternatives read summary.json (run/run.py) as it is.
METRIC_COLUMNS = (
    ("float_accuracy", "REAL", ("float.accuracy",)),
    ("float_macro_f1", "REAL", ("float.macro_f1",)),
    ("int8_accuracy", "REAL", ("int8.accuracy",)),
    ("int8_macro_f1", "REAL", ("int8.macro_f1",)),
    # box models: mean IoU and the share of images at IoU >= 0.5 (with the right class)
    ("float_mean_iou", "REAL", ("float.mean_iou",)),
    ("float_iou50", "REAL", ("float.accuracy_iou50",)),
    ("int8_mean_iou", "REAL", ("int8.mean_iou",)),
    ("int8_iou50", "REAL", ("int8.accuracy_iou50",)),
    ("int8_bytes", "INTEGER", ("int8_bytes",)),
    ("arena_bytes", "INTEGER", ("arena_bytes",)),
    ("macs", "INTEGER", ("macs",)),
    ("warnings", "TEXT", ("warnings",)),  # the codes of summary.json's warnings, e.g. "collapse"
    # the fit on export.board (deploy/fit.py): flash and RAM totals, estimated latency
    ("board", "TEXT", ("fit.board",)),
    ("flash_bytes", "INTEGER", ("fit.flash.total",)),
    ("ram_bytes", "INTEGER", ("fit.ram.total",)),
    ("fits", "INTEGER", ("fit.fits",)),
    ("latency_ms", "REAL", ("fit.latency_ms",)),
    # "measured" when the firmware was built for the board's core and run on the emulated core
    # (flash, RAM, instructions measured; latency from them), "estimate" otherwise
    ("fit_basis", "TEXT", ("fit.basis",)),
    ("instructions", "INTEGER", ("fit.firmware.instructions",)),  # per inference, emulated
    # every exported format with its bytes and verified metrics, as JSON (summary.json's formats)
    ("formats", "TEXT", ("formats",)),
    ("study", "TEXT", ("study",)),  # the `tinyvision search` study a trial run belongs to
)
RUN_COLUMNS = (
    ("name", "TEXT", None), ("run_dir", "TEXT", None), ("status", "TEXT", None),
    ("started", "TEXT", None), ("finished", "TEXT", None), ("duration_s", "REAL", None),
    ("config_hash", "TEXT", None), ("error", "TEXT", None),
    ("pid", "INTEGER", None), ("host", "TEXT", None),  # the process running it, to spot dead ones
)
# Columns of rows(), the table and the CSV, in display order (JSON blobs excluded).
COLUMNS = tuple(c for c, _, _ in RUN_COLUMNS + CONFIG_COLUMNS + METRIC_COLUMNS)
_COLUMN_TYPES = {c: t for c, t, _ in RUN_COLUMNS + CONFIG_COLUMNS + METRIC_COLUMNS}

_V1_COLUMNS = ("name, run_dir, status, started, finished, duration_s, config_hash, error, task, "
               "backbone, alpha, input_size, color_mode, weights, batch_size, head_epochs, "
               "fine_tune_epochs, head_lr, fine_tune_lr, float_accuracy, float_macro_f1, "
               "int8_accuracy, int8_macro_f1, model_bytes, arena_bytes, macs, config_json, "
               "metrics_json")
_V2_COLUMNS = _V1_COLUMNS + ", recipe, warnings, pid, host"


# The table as versions 2 and 3 made it, spelled out: a migration must build the table of its
# own version, never today's, or a later ADD COLUMN migration would fail on a new file.
_V3_TABLE_COLUMNS = (
    "task TEXT, backbone TEXT, alpha REAL, input_size TEXT, color_mode TEXT, weights TEXT, "
    "recipe TEXT, batch_size INTEGER, head_epochs INTEGER, fine_tune_epochs INTEGER, "
    "head_lr REAL, fine_tune_lr REAL, float_accuracy REAL, float_macro_f1 REAL, "
    "int8_accuracy REAL, int8_macro_f1 REAL, model_bytes INTEGER, arena_bytes INTEGER, "
    "macs INTEGER, warnings TEXT, board TEXT, flash_bytes INTEGER, ram_bytes INTEGER, "
    "fits INTEGER, latency_ms REAL, formats TEXT, study TEXT, ")
_V3_STATUSES = ("export_failed", "failed", "finished", "interrupted", "pruned", "running")
# 4: the box metrics of box models
# 5: the fit's basis (measured on the firmware or estimated) and the instructions per inference
_V5_NEW_COLUMNS = (("fit_basis", "TEXT"), ("instructions", "INTEGER"))
_V4_NEW_COLUMNS = (("float_mean_iou", "REAL"), ("float_iou50", "REAL"), ("int8_mean_iou", "REAL"),
                   ("int8_iou50", "REAL"))


def _create_v3_runs(table: str) -> str:
    statuses = ", ".join(f"'{s}'" for s in _V3_STATUSES)
    return (f"CREATE TABLE IF NOT EXISTS {table} ("
            "name TEXT PRIMARY KEY, run_dir TEXT NOT NULL, "
            f"status TEXT NOT NULL CHECK (status IN ({statuses})), "
            "started TEXT NOT NULL, finished TEXT, duration_s REAL, config_hash TEXT NOT NULL, "
            "error TEXT, pid INTEGER, host TEXT, " + _V3_TABLE_COLUMNS
            + "config_json TEXT NOT NULL, metrics_json TEXT)")


_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # version 1's table, as it was (a new file gets it, then the later migrations)
    1: ("CREATE TABLE IF NOT EXISTS runs ("
        "name TEXT PRIMARY KEY, run_dir TEXT NOT NULL, "
        "status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')), "
        "started TEXT NOT NULL, finished TEXT, duration_s REAL, config_hash TEXT NOT NULL, "
        "error TEXT, task TEXT, backbone TEXT, alpha REAL, input_size TEXT, color_mode TEXT, "
        "weights TEXT, batch_size INTEGER, head_epochs INTEGER, fine_tune_epochs INTEGER, "
        "head_lr REAL, fine_tune_lr REAL, float_accuracy REAL, float_macro_f1 REAL, "
        "int8_accuracy REAL, int8_macro_f1 REAL, model_bytes INTEGER, arena_bytes INTEGER, "
        "macs INTEGER, config_json TEXT NOT NULL, metrics_json TEXT)",
        "CREATE INDEX IF NOT EXISTS runs_started ON runs (started)"),
    # 2: statuses export_failed and interrupted; columns recipe, warnings, pid, host. SQLite cannot
    # change a CHECK constraint, so the table is copied into a new one (version 3's shape, so
    # that 3 finds every column it copies).
    2: (_create_v3_runs("runs_v2"),
        f"INSERT INTO runs_v2 ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM runs",
        "DROP TABLE runs",
        "ALTER TABLE runs_v2 RENAME TO runs",
        "CREATE INDEX IF NOT EXISTS runs_started ON runs (started)"),
    # 3: the board fit (board, flash_bytes, ram_bytes, fits, latency_ms), the export formats, the
    # search study, status pruned; copied as in 2 (a new CHECK)
    3: (_create_v3_runs("runs_v3"),
        f"INSERT INTO runs_v3 ({_V2_COLUMNS}) SELECT {_V2_COLUMNS} FROM runs",
        "DROP TABLE runs",
        "ALTER TABLE runs_v3 RENAME TO runs",
        "CREATE INDEX IF NOT EXISTS runs_started ON runs (started)"),
    4: tuple(f"ALTER TABLE runs ADD COLUMN {column} {kind}" for column, kind in _V4_NEW_COLUMNS),
    5: tuple(f"ALTER TABLE runs ADD COLUMN {column} {kind}" for column, kind in _V5_NEW_COLUMNS),
    # 6: one name per quantity: the int8 model's size is int8_bytes, as in summary.json
    6: ("ALTER TABLE runs RENAME COLUMN model_bytes TO int8_bytes",),
}
_OPERATOR_RE = "|".join(re.escape(o) for o in sorted(FILTER_OPERATORS, key=len, reverse=True))
_FILTER_RE = re.compile(rf"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*({_OPERATOR_RE})\s*(.*?)\s*$")
_T = TypeVar("_T")


class ConfigChange(NamedTuple):
    key: str
    a: Any
    b: Any


class MetricDelta(NamedTuple):
    key: str
    a: float
    b: float
    delta: float  # b - a


class Registry:
    """The registry of `runs_dir` (`runs_dir/registry.sqlite`); created on first use.

    Call order for one run: `start_run` when training starts, then exactly one of `finish_run`
    or `fail_run`. `create=False` refuses to create a missing file (for read-only commands).
    """

    def __init__(self, runs_dir: str | Path, *, create: bool = True, timeout: float = 30.0,
                 retries: int = 8) -> None:
        if timeout <= 0 or retries < 1:
            raise RegistryError(f"Expected timeout > 0 and retries >= 1, received "
                                f"timeout={timeout!r}, retries={retries!r}.")
        self.path = Path(runs_dir) / REGISTRY_FILE
        if not self.path.is_file():
            if not create:
                raise RegistryError(f"No run registry at {self.path}; train a run first, or pass "
                                    "--runs-dir with the folder that holds your runs.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout, self.retries = float(timeout), int(retries)
        self._retry(self._set_wal, write=False)
        self._retry(self._migrate, write=True)

    # ---- writes ------------------------------------------------------------------------------
    def start_run(self, name: str, run_dir: str | Path, config: Mapping[str, Any]) -> None:
        """Add the run as `running` (with this process's id and host, so `mark_dead_runs` can
        tell a killed run); a row of the same name (an overwritten run) is replaced."""
        name = _check_name(name)
        config = _plain_json(config, "config")
        row = {"name": name, "run_dir": str(run_dir), "status": "running", "started": _now(),
               "config_hash": config_hash(config), "config_json": json.dumps(config),
               "pid": os.getpid(), "host": socket.gethostname()}
        row.update(key_settings(config))
        sql = (f"INSERT OR REPLACE INTO runs ({', '.join(row)}) "
               f"VALUES ({', '.join('?' * len(row))})")
        self._retry(lambda conn: conn.execute(sql, tuple(row.values())), write=True)

    def finish_run(self, name: str, metrics: Mapping[str, Any], status: str = "finished",
                   config: Mapping[str, Any] | None = None) -> None:
        """Record the end of a run and its metrics.

        `metrics` is stored whole as JSON; these paths also fill columns: `float.accuracy`,
        `float.macro_f1`, `int8.accuracy`, `int8.macro_f1` (classification_metrics dicts under
        "float" and "int8"), `int8_bytes`, `arena_bytes`, `macs`. Missing ones stay empty.
        `config`: the run's config as resolved while it ran (color_mode, recipe), replacing the
        one given to `start_run`.
        """
        if status not in STATUSES - {"running"}:
            raise RegistryError(f"Expected status one of {sorted(STATUSES - {'running'})}, "
                                f"received status={status!r}.")
        self._end(_check_name(name), status, _plain_json(metrics, "metrics"), error=None,
                  config=config)

    def fail_run(self, name: str, error: str, metrics: Mapping[str, Any] | None = None,
                 status: str = "failed", config: Mapping[str, Any] | None = None) -> None:
        """Mark the run failed (or `status` export_failed / interrupted / pruned) with a one-line
        `error`
        (e.g. the exception's message), keeping `metrics` when some were computed."""
        if status not in STATUSES - {"running", "finished"}:
            raise RegistryError(f"Expected a failed status, one of "
                                f"{sorted(STATUSES - {'running', 'finished'})}, received "
                                f"status={status!r}.")
        metrics = _plain_json(metrics, "metrics") if metrics is not None else None
        self._end(_check_name(name), status, metrics, error=str(error), config=config)

    def _end(self, name: str, status: str, metrics: dict | None, error: str | None,
             config: Mapping[str, Any] | None = None) -> None:
        values: dict[str, Any] = {"status": status, "finished": _now(), "error": error}
        if config is not None:
            config = _plain_json(config, "config")
            values.update(key_settings(config))
            values.update(config_hash=config_hash(config), config_json=json.dumps(config))
        if metrics is not None:
            values.update({c: _sql_value(_first(metrics, paths))
                           for c, _, paths in METRIC_COLUMNS})
            values["metrics_json"] = json.dumps(metrics)
        assignments = ", ".join(f"{c} = ?" for c in values)
        sql = (f"UPDATE runs SET {assignments}, duration_s = ROUND((julianday(?) - "
               "julianday(started)) * 86400.0, 3) WHERE name = ?")

        def update(conn: sqlite3.Connection) -> None:
            if conn.execute(sql, (*values.values(), values["finished"], name)).rowcount == 0:
                raise self._unknown(conn, name)

        self._retry(update, write=True)

    def mark_dead_runs(self) -> list[str]:
        """Rows still `running` whose process (on this host) is gone become `interrupted`: a run
        killed with SIGKILL, or a machine that went down. Returns their names."""
        host = socket.gethostname()

        def update(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT name, pid FROM runs WHERE status = 'running' AND host = ?",
                                (host,)).fetchall()
            dead = [name for name, pid in rows if pid is not None and not process_alive(pid)]
            for name in dead:
                conn.execute("UPDATE runs SET status = 'interrupted', error = ? WHERE name = ?",
                             (INTERRUPTED_BY_KILL, name))
            return dead

        return self._retry(update, write=True)

    # ---- reads -------------------------------------------------------------------------------
    def rows(self, sort: str = "started", filters: Mapping[str, Any] | Iterable[str] | None = None
             ) -> list[dict[str, Any]]:
        """Runs as dicts of COLUMNS, filtered and sorted.

        Args:
            sort: a column; a leading "-" sorts descending. Empty values sort last.
            filters: {column: value} for equality, or expressions such as "backbone=mobilenet_v1",
                "float_accuracy>=0.9", "name=crossing*" (`*`/`?` glob text with = and !=).
        """
        descending, column = sort.startswith("-"), _check_column(sort.lstrip("-"), "sort")
        where, params = _where(filters)
        order = f"{column} IS NULL, {column} {'DESC' if descending else 'ASC'}, rowid"
        sql = f"SELECT {', '.join(COLUMNS)} FROM runs {where} ORDER BY {order}"
        return self._retry(lambda conn: [dict(r) for r in conn.execute(sql, params)], write=False)

    def get(self, name: str) -> dict[str, Any]:
        """One run: its COLUMNS plus `config` and `metrics` (None until finished) as dicts."""
        def fetch(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute(f"SELECT {', '.join(COLUMNS)}, config_json, metrics_json FROM runs "
                               "WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._unknown(conn, name)
            result = dict(row)
            result["config"] = json.loads(result.pop("config_json"))
            metrics = result.pop("metrics_json")
            result["metrics"] = json.loads(metrics) if metrics is not None else None
            return result

        return self._retry(fetch, write=False)

    def to_csv(self, path: str | Path, sort: str = "started",
               filters: Mapping[str, Any] | Iterable[str] | None = None) -> int:
        """Write the (filtered, sorted) table to `path` atomically; return the number of rows."""
        rows = self.rows(sort=sort, filters=filters)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buffer.getvalue())
        return len(rows)

    def compare(self, a: str, b: str) -> tuple[list[ConfigChange], list[MetricDelta]]:
        """Config keys that differ between runs `a` and `b`, and b - a of every shared metric.

        Config keys are dotted (`train.head.learning_rate`); a key only one run has shows
        ABSENT on the other side. Metric deltas cover numeric leaves of both metrics dicts, the
        registry's columns' metrics first.
        """
        run_a, run_b = self.get(a), self.get(b)
        flat_a, flat_b = (_flatten(_without_volatile(r["config"])) for r in (run_a, run_b))
        changes = [ConfigChange(k, flat_a.get(k, ABSENT), flat_b.get(k, ABSENT))
                   for k in {**flat_a, **flat_b} if flat_a.get(k, ABSENT) != flat_b.get(k, ABSENT)]
        metrics_a, metrics_b = (_numeric_leaves(r["metrics"] or {}) for r in (run_a, run_b))
        first = [p for _, _, paths in METRIC_COLUMNS for p in paths]
        keys = [k for k in first if k in metrics_a] + [k for k in metrics_a if k not in first]
        deltas = [MetricDelta(k, metrics_a[k], metrics_b[k], metrics_b[k] - metrics_a[k])
                  for k in keys if k in metrics_b]
        return changes, deltas

    # ---- connection, retries, schema ---------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn

    def _retry(self, work: Callable[[sqlite3.Connection], _T], write: bool) -> _T:
        """Run `work` in one transaction (BEGIN IMMEDIATE if `write`); retry while locked."""
        for attempt in range(self.retries):
            try:
                conn = self._connect()
            except sqlite3.Error as exc:
                raise RegistryError(f"Cannot open run registry {self.path}: {exc}.") from None
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                result = work(conn)
                if write:
                    conn.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == self.retries - 1:
                    raise self._failed(exc, attempt + 1) from None
            except sqlite3.DatabaseError as exc:
                raise self._failed(exc, attempt + 1) from None
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.close()
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _failed(self, exc: sqlite3.Error, attempts: int) -> RegistryError:
        if _is_busy(exc):
            return RegistryError(f"Run registry {self.path} stayed locked through {attempts} "
                                 f"attempts of {self.timeout:g} s; another process holds it. Retry "
                                 "later, and keep runs_dir on a local disk (not NFS/SMB).")
        return RegistryError(f"Run registry {self.path} failed: {exc}. If the file is damaged, "
                             "move it aside; a new registry starts empty.")

    @staticmethod
    def _set_wal(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RegistryError(f"Run registry {self.path} has schema version {version}, newer "
                                f"than this tinyvision's {SCHEMA_VERSION}; upgrade tinyvision.")
        if version < 0:  # no tinyvision writes one: another program's file, or a damaged one
            raise RegistryError(f"Run registry {self.path} has schema version {version}, which "
                                "no tinyvision writes; move it aside (a new registry starts "
                                "empty) or restore it from a backup.")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")

    def _unknown(self, conn: sqlite3.Connection, name: str) -> RegistryError:
        names = [r[0] for r in conn.execute("SELECT name FROM runs")]
        hint = did_you_mean(name, names, n=3)
        return RegistryError(f"No run named {name!r} in {self.path}.{hint} "
                             "`tinyvision runs` lists the runs.")


# ---- helpers ---------------------------------------------------------------------------------
def key_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """{column: value} of CONFIG_COLUMNS read from a config dict (input_size as "96x96")."""
    return {c: _sql_value(_lookup(config, path)) for c, _, path in CONFIG_COLUMNS}


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex digits identifying what a config trains; name, runs_dir and overwrite left out."""
    canonical = json.dumps(_without_volatile(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_filter(text: str) -> tuple[str, str, str]:
    """`"float_accuracy>=0.9"` -> ("float_accuracy", ">=", "0.9"), with the column checked."""
    match = _FILTER_RE.match(text)
    if not match:
        raise RegistryError(f"Filter {text!r} must look like COLUMN=VALUE (or !=, >=, <=, >, <), "
                            "e.g. backbone=mobilenet_v1 or float_accuracy>=0.9.")
    column, operator, value = match.groups()
    return _check_column(column, "filter"), operator, value


def _where(filters: Mapping[str, Any] | Iterable[str] | None) -> tuple[str, list[Any]]:
    if not filters:
        return "", []
    if isinstance(filters, str):
        filters = [filters]
    triples = ([(_check_column(k, "filter"), "=", v) for k, v in filters.items()]
               if isinstance(filters, Mapping) else [parse_filter(f) for f in filters])
    clauses, params = [], []
    for column, operator, value in triples:
        value = _filter_value(column, operator, value)
        if isinstance(value, str) and operator in ("=", "!=") and any(ch in value for ch in "*?["):
            clauses.append(f"{column} {'NOT ' if operator == '!=' else ''}GLOB ?")
        else:
            clauses.append(f"{column} {operator} ?")
        params.append(value)
    return "WHERE " + " AND ".join(clauses), params


def _filter_value(column: str, operator: str, value: Any) -> Any:
    if _COLUMN_TYPES[column] == "TEXT":
        return _sql_value(value) if isinstance(value, (list, tuple)) else str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RegistryError(f"Filter {column}{operator}{value}: {column} holds numbers, received "
                            f"{value!r}; e.g. {column}>=0.5.") from None


def _check_column(column: str, what: str) -> str:
    if column not in _COLUMN_TYPES:
        hint = did_you_mean(column, COLUMNS, n=3, cutoff=0.5)
        raise RegistryError(f"Unknown {what} column {column!r}.{hint} Columns: "
                            f"{', '.join(COLUMNS)}.")
    return column


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"Expected a run name (the run directory's name), received "
                            f"name={name!r}.")
    return name


def _plain_json(value: Any, what: str) -> dict:
    """`value` as plain JSON types (numpy scalars and arrays converted), or a RegistryError."""
    if not isinstance(value, Mapping):
        raise RegistryError(f"Expected {what} as a dict, received a {type(value).__name__}; for a "
                            "RunConfig pass cfg.model_dump(mode='json').")
    try:
        return json.loads(json.dumps(dict(value), default=_json_default))
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} must be JSON-serialisable: {exc}.") from None


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


def _lookup(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _first(tree: Mapping[str, Any], paths: tuple[str, ...]) -> Any:
    return next((v for v in (_lookup(tree, p) for p in paths) if v is not None), None)


def _sql_value(value: Any) -> Any:
    """Lists (input_size) become "96x96", warnings their codes ("collapse, few_steps"); dicts
    become JSON; scalars pass through."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
        return ", ".join(str(v.get("code", "")) for v in value)
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _without_volatile(config: Mapping[str, Any]) -> dict:
    return {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _numeric_leaves(tree: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in _flatten(tree).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
