"""Download COCO for users who start from nothing: the annotation archive, then only the images
the presence manifest needs — several at a time, resumable, skipping files already complete.

Stdlib only (urllib + threads). A file is written to `<name>.part` and renamed when its length
matches what the server announced, so a file under its final name is always complete; a `.part`
file left by an interrupted run is resumed with an HTTP Range request. Archive members are
checked before anything is extracted: a member that would land outside the target folder
(absolute path, `..`) stops the extraction.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tinyvision.config import validate_config
from tinyvision.data.sources import finish_manifest
from tinyvision.data.sources.coco import build_coco
from tinyvision.errors import DataError
from tinyvision.files import atomic_write_text

logger = logging.getLogger(__name__)

COCO_ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval{year}.zip"
COCO_IMAGE_URL = "http://images.cocodataset.org/{folder}/{file_name}"  # when coco_url is missing
COCO_YEARS = frozenset({"2014", "2017"})
COCO_SPLITS = frozenset({"train", "val"})
USER_AGENT = "tinyvision-downloader"
_CHUNK = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


class Reporter:
    """Progress callbacks of the downloads; the CLI draws them with rich, the default ignores them.
    Called from worker threads."""

    def stage(self, text: str) -> None:
        """A new step starts (downloading annotations, building the manifest, ...)."""

    def bytes_started(self, name: str, total: int | None) -> None:
        """A large single download starts."""

    def bytes_done(self, n: int) -> None:
        """`n` more bytes of the large download arrived."""

    def files_started(self, total: int) -> None:
        """A batch of `total` file downloads starts."""

    def file_done(self, result: FetchResult) -> None:
        """One file of the batch finished (downloaded, skipped or failed)."""


@dataclass
class FetchResult:
    url: str
    path: Path
    status: str  # "downloaded", "skipped" (already complete) or "failed"
    bytes: int = 0
    error: str = ""


# ---- single files ----------------------------------------------------------------------------
def fetch(url: str, dest: str | Path, timeout: float = 30.0, retries: int = 3,
          backoff: float = 0.5, on_bytes=None) -> FetchResult:
    """Download `url` to `dest` unless `dest` exists; resume a `.part` file; retry dropped
    connections and server errors, not client errors (404)."""
    dest = Path(dest)
    if dest.is_file():
        return FetchResult(url, dest, "skipped")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    error = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff * 2 ** (attempt - 1), 10.0))
        try:
            received = _fetch_once(url, part, timeout, on_bytes)
            os.replace(part, dest)
            return FetchResult(url, dest, "downloaded", received)
        except HTTPError as exc:
            error = f"HTTP {exc.code} {exc.reason}"
            if 400 <= exc.code < 500 and exc.code not in (408, 416, 429):
                break
        except _Incomplete as exc:
            error = str(exc)
        except (URLError, OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return FetchResult(url, dest, "failed", error=error)


class _Incomplete(Exception):
    """The connection ended before the announced length arrived (resumed on the next try)."""


def _fetch_once(url: str, part: Path, timeout: float, on_bytes) -> int:
    """One request: append to `part` from its current length (Range) or start over (200)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and offset and _complete_by(exc.headers.get("Content-Range"), offset):
            return 0  # the part file already holds every byte
        if exc.code == 416:
            part.unlink(missing_ok=True)
        raise
    with response:
        if response.status == 206 and offset:
            mode, total = "ab", _range_total(response.headers.get("Content-Range"))
        else:
            mode, offset = "wb", 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        received = 0
        with open(part, mode) as handle:
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                received += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
    if total is not None and offset + received != total:
        raise _Incomplete(f"connection closed after {offset + received} of {total} bytes")
    return received


def _range_total(header: str | None) -> int | None:
    match = _CONTENT_RANGE.match(header or "")
    return int(match.group(3)) if match and match.group(3) != "*" else None


def _complete_by(header: str | None, size: int) -> bool:
    return _range_total(header) == size


def fetch_many(jobs: list[tuple[str, Path]], workers: int = 8, reporter: Reporter | None = None,
               **options) -> list[FetchResult]:
    """Download (url, path) pairs with `workers` threads; results in job order."""
    reporter = reporter or Reporter()
    reporter.files_started(len(jobs))

    def run(job: tuple[str, Path]) -> FetchResult:
        try:
            result = fetch(job[0], job[1], **options)
        except Exception as exc:  # one broken file must not stop the batch; it is reported
            result = FetchResult(job[0], Path(job[1]), "failed", error=f"{type(exc).__name__}: {exc}")
        reporter.file_done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(run, jobs))


# ---- archives --------------------------------------------------------------------------------
def extract(archive: str | Path, target: str | Path, members: list[str] | None = None) -> list[Path]:
    """Extract `members` (default: all) of a zip into `target`; files already there with the
    right size are kept. Every member name is checked first; one escaping `target` is an error."""
    archive, target = Path(archive), Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            unsafe = [i.filename for i in infos if _escapes(i.filename, target)]
            if unsafe:
                raise DataError(f"Archive {archive} has member(s) that would be written outside "
                                f"{target}: {unsafe[:5]}; refusing to extract it.")
            wanted = infos if members is None else _select(infos, members, archive)
            return [_extract_one(zf, info, target) for info in wanted if not info.is_dir()]
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive} is not a valid zip archive ({exc}); delete it and run the "
                        "download again.") from None


def _escapes(name: str, target: Path) -> bool:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    if ".." in re.split(r"[/\\]", name):
        return True
    root = os.path.realpath(target)
    return os.path.commonpath([root, os.path.realpath(os.path.join(root, name))]) != root


def _select(infos: list[zipfile.ZipInfo], members: list[str], archive: Path) -> list[zipfile.ZipInfo]:
    by_name = {i.filename: i for i in infos}
    missing = [m for m in members if m not in by_name]
    if missing:
        raise DataError(f"Archive {archive} lacks {missing}; it has "
                        f"{sorted(by_name)[:20]}.")
    return [by_name[m] for m in members]


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> Path:
    out = target / info.filename
    if out.is_file() and out.stat().st_size == info.file_size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with zf.open(info) as source, open(tmp, "wb") as handle:
        shutil.copyfileobj(source, handle, _CHUNK)
    os.replace(tmp, out)
    return out


# ---- COCO ------------------------------------------------------------------------------------
@dataclass
class CocoDownload:
    """What `download_coco` did: the config and manifest it wrote and the image downloads."""

    config: Path
    manifest: Path
    results: list[FetchResult] = field(default_factory=list)

    @property
    def failed(self) -> list[FetchResult]:
        return [r for r in self.results if r.status == "failed"]

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)


def download_coco(out_dir: str | Path, classes: list[str], year: str = "2017",
                  splits: tuple[str, ...] = ("train", "val"), negative: bool = True,
                  min_area: float = 0.0, max_per_class: int | None = None, seed: int = 0,
                  workers: int = 8, annotations_url: str | None = None,
                  reporter: Reporter | None = None, **fetch_options) -> CocoDownload:
    """Fetch COCO annotations, build the presence manifest, download the images it needs.

    Writes `coco{year}.yaml` (a config whose data section rebuilds the same manifest) and
    `manifest.jsonl` (the images that are on disk) into `out_dir`. Rerunning resumes.
    """
    _check_request(year, splits, classes)
    out_dir, reporter = Path(out_dir).resolve(), reporter or Reporter()
    url = annotations_url or COCO_ANNOTATIONS_URL.format(year=year)
    archive = out_dir / url.rsplit("/", 1)[-1]
    reporter.stage(f"Annotations: {url}")
    _fetch_archive(url, archive, reporter, **fetch_options)
    members = [f"annotations/instances_{s}{year}.json" for s in splits]
    extract(archive, out_dir, members)
    data = _coco_data_section(out_dir, classes, year, splits, negative, min_area, max_per_class)
    reporter.stage("Building the presence manifest")
    manifest, urls = _build(data, seed)
    jobs = [(urls.get(s.path) or _fallback_url(s.path, out_dir), Path(s.path))
            for s in manifest.samples]
    reporter.stage(f"Images: {len(jobs)} needed")
    results = fetch_many(jobs, workers, reporter, **fetch_options)
    failed = {str(r.path) for r in results if r.status == "failed"}
    manifest.samples = [s for s in manifest.samples if s.path not in failed]
    return _write_outputs(out_dir, year, data, seed, manifest, results)


def _check_request(year: str, splits: tuple[str, ...], classes: list[str]) -> None:
    if year not in COCO_YEARS:
        raise DataError(f"COCO year={year!r} is not one of {sorted(COCO_YEARS)}.")
    bad = [s for s in splits if s not in COCO_SPLITS]
    if bad or not splits:
        raise DataError(f"COCO splits {list(splits)}: expected some of {sorted(COCO_SPLITS)}.")
    if not classes:
        raise DataError("Name at least one COCO category, e.g. --classes person,car.")


def _fetch_archive(url: str, archive: Path, reporter: Reporter, **options) -> None:
    reporter.bytes_started(archive.name, None)
    result = fetch(url, archive, on_bytes=reporter.bytes_done, **options)
    if result.status == "failed":
        raise DataError(f"Could not download {url}: {result.error}. Run the command again to "
                        "resume, or pass --annotations-url with a mirror.")


def _coco_data_section(out_dir: Path, classes: list[str], year: str, splits: tuple[str, ...],
                       negative: bool, min_area: float, max_per_class: int | None) -> dict:
    source: dict = {"format": "coco", "classes": list(classes), "min_area": min_area}
    for split in splits:
        source[f"{split}_annotations"] = str(out_dir / "annotations" / f"instances_{split}{year}.json")
        source[f"{split}_images"] = str(out_dir / f"{split}{year}")
    if "train" not in splits:  # a lone val file is split later
        source["annotations"] = source.pop("val_annotations")
        source["images"] = source.pop("val_images")
    if negative:
        source["negative"] = True
    if max_per_class:
        source["max_per_class"] = max_per_class
    return {"source": source}


def _build(data: dict, seed: int):
    """The manifest (splits assigned) and image URLs, before any image exists."""
    cfg = validate_config({"seed": seed, "data": data}, source="download config")
    cfg.data.source.check_images = False
    manifest, urls = build_coco(cfg.data.source, "auto", seed, False)
    return finish_manifest(manifest, cfg.data, seed), urls


def _fallback_url(path: str, out_dir: Path) -> str:
    folder = Path(path).relative_to(out_dir).parts[0]
    return COCO_IMAGE_URL.format(folder=folder, file_name=Path(path).name)


def _write_outputs(out_dir: Path, year: str, data: dict, seed: int, manifest,
                   results: list[FetchResult]) -> CocoDownload:
    import yaml

    relative = {k: os.path.relpath(v, out_dir) if k.endswith(("annotations", "images")) else v
                for k, v in data["source"].items()}
    config = out_dir / f"coco{year}.yaml"
    atomic_write_text(config, "# Written by `tinyvision data download coco`; paths are relative "
                      "to this file.\n" + yaml.safe_dump({"seed": seed, "data": {"source": relative}},
                                                         sort_keys=False))
    path = out_dir / "manifest.jsonl"
    manifest.save(path)
    return CocoDownload(config, path, results)
