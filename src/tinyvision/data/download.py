"""Download COCO for users who start from nothing: the annotation archive, then only the images
the presence manifest needs — several at a time, resumable, skipping files already complete.

Stdlib only (urllib + threads). What it trusts:
- only http(s) URLs on the expected host (images.cocodataset.org, https), or hosts the user names
  (`allow_hosts`, `--allow-host`); `file:`, `data:`, `ftp:` and other hosts are refused;
- the annotation archives' SHA-256 is pinned (checked after every download and before use);
- a file is written to `<name>.part` and renamed when its length matches what the server
  announced (a reply without a length is verified first: the pinned hash, or the image decodes);
  each download has a size cap;
- an interrupted `.part` file is resumed with a Range request and If-Range (its ETag), and only
  if the reply starts at the requested byte (Content-Range); otherwise it starts over;
- archive members are checked before anything is extracted: one that would land outside the
  target folder (absolute path, `..`) or sizes that add up to a zip bomb stop the extraction.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit, urlunsplit
from urllib.request import Request, urlopen

from tinyvision.config import validate_config
from tinyvision.data.sources import finish_manifest
from tinyvision.data.sources.coco import build_coco
from tinyvision.errors import DataError
from tinyvision.files import atomic_write_text
from tinyvision.layout import MANIFEST_FILE

logger = logging.getLogger(__name__)

COCO_HOST = "images.cocodataset.org"
COCO_ANNOTATIONS_URL = f"https://{COCO_HOST}/annotations/annotations_trainval{{year}}.zip"
COCO_IMAGE_URL = f"https://{COCO_HOST}/{{folder}}/{{file_name}}"  # when coco_url is missing
# SHA-256 of the official annotation archives (annotations_trainval{year}.zip)
COCO_ANNOTATIONS_SHA256 = {
    "2014": "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009",
    "2017": "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
}
MAX_ARCHIVE_BYTES = 2 << 30  # a download of the annotation archive (252 MB for 2017)
MAX_IMAGE_BYTES = 64 << 20  # one image
MAX_EXTRACT_BYTES = 8 << 30  # everything extracted from one archive
MAX_COMPRESSION_RATIO = 200  # a member that inflates more than this is a zip bomb
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
def check_url(url: str, allow_hosts: tuple[str, ...] | list[str] = ()) -> str:
    """The URL to fetch: http(s) on COCO's host (upgraded to https) or on a host the user allowed.
    Anything else (file:, data:, ftp:, another host) is a DataError naming the URL and the fix."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https"):
        raise DataError(f"Refusing to download {url!r}: only http(s) URLs are fetched, not "
                        f"{parts.scheme or 'a plain path'}{':' if parts.scheme else ''}. Give an "
                        f"https URL (the default is {COCO_ANNOTATIONS_URL.format(year='2017')}).")
    allowed = {COCO_HOST, *(h.strip().lower() for h in allow_hosts)}
    if host not in allowed:
        raise DataError(f"Refusing to download {url!r}: its host {host!r} is not {COCO_HOST}. If "
                        f"you trust it (a mirror), pass --allow-host {host} (Python: "
                        f"allow_hosts=[{host!r}]).")
    if host == COCO_HOST and parts.scheme == "http":
        return urlunsplit(("https", *parts[1:]))
    return url


def fetch(url: str, dest: str | Path, timeout: float = 30.0, retries: int = 3,
          backoff: float = 0.5, on_bytes=None, max_bytes: int = MAX_IMAGE_BYTES,
          verify=None) -> FetchResult:
    """Download `url` to `dest` unless `dest` exists; resume a `.part` file; retry dropped
    connections and server errors, not client errors (404). At most `max_bytes` are accepted.
    `verify(path)` (raising DataError) checks a file whose reply gave no length before it is
    renamed into place."""
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
            received, length_known = _fetch_once(url, part, timeout, on_bytes, max_bytes)
            if not length_known and verify is not None:
                verify(part)
            os.replace(part, dest)
            _validator_file(part).unlink(missing_ok=True)
            return FetchResult(url, dest, "downloaded", received)
        except HTTPError as exc:
            error = f"HTTP {exc.code} {exc.reason}"
            if 400 <= exc.code < 500 and exc.code not in (408, 416, 429):
                break
        except _Incomplete as exc:
            error = str(exc)
        except (_Refused, DataError) as exc:  # too large, or the unannounced length failed `verify`
            part.unlink(missing_ok=True)
            _validator_file(part).unlink(missing_ok=True)
            error = str(exc)
            break
        except (URLError, OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    return FetchResult(url, dest, "failed", error=error)


class _Incomplete(Exception):
    """The connection ended before the announced length arrived (resumed on the next try)."""


class _Refused(Exception):
    """A reply that must not be kept (over the size cap)."""


def _validator_file(part: Path) -> Path:
    """Where the ETag / Last-Modified of a `.part` file's first reply is kept, for If-Range."""
    return part.with_name(part.name + ".validator")


def _fetch_once(url: str, part: Path, timeout: float, on_bytes, max_bytes: int) -> tuple[int, bool]:
    """One request: append to `part` from its current length (Range + If-Range) or start over.
    Returns (bytes received, whether the reply announced the total length)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    validator = _validator_file(part)
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator.exists():  # the file changed on the server: send it whole (200), not a range
            headers["If-Range"] = validator.read_text().strip()
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and offset and _complete_by(exc.headers.get("Content-Range"), offset):
            return 0, True  # the part file already holds every byte
        if exc.code == 416:
            part.unlink(missing_ok=True)
        raise
    with response:
        start = _range_start(response.headers.get("Content-Range"))
        if response.status == 206 and offset and start == offset:
            mode, total = "ab", _range_total(response.headers.get("Content-Range"))
        elif response.status == 206:  # a range that is not the one asked for: start over
            part.unlink(missing_ok=True)
            raise _Incomplete(f"the server sent bytes from {start}, not from {offset}; "
                              "starting over")
        else:
            mode, offset = "wb", 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            tag = response.headers.get("ETag") or response.headers.get("Last-Modified")
            if tag:
                validator.write_text(tag)
            else:
                validator.unlink(missing_ok=True)
        if total is not None and total > max_bytes:
            raise _Refused(f"{url} is {total:,} bytes, over the {max_bytes:,}-byte cap")
        received = 0
        with open(part, mode) as handle:
            while chunk := response.read(_CHUNK):
                handle.write(chunk)
                received += len(chunk)
                if offset + received > max_bytes:
                    raise _Refused(f"{url} sent more than the {max_bytes:,}-byte cap")
                if on_bytes is not None:
                    on_bytes(len(chunk))
    if total is not None and offset + received != total:
        raise _Incomplete(f"connection closed after {offset + received} of {total} bytes")
    return received, total is not None


def _range_start(header: str | None) -> int | None:
    match = _CONTENT_RANGE.match(header or "")
    return int(match.group(1)) if match and match.group(1) is not None else None


def _range_total(header: str | None) -> int | None:
    match = _CONTENT_RANGE.match(header or "")
    return int(match.group(3)) if match and match.group(3) != "*" else None


def _complete_by(header: str | None, size: int) -> bool:
    return _range_total(header) == size


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str | Path, expected: str) -> None:
    """DataError (and the file deleted, so the next run downloads it again) on a mismatch."""
    got = sha256_of(path)
    if got != expected.lower():
        Path(path).unlink(missing_ok=True)
        raise DataError(f"{path} has SHA-256 {got}, not the expected {expected}: the download is "
                        "damaged or not the official file. It was deleted; run the command again "
                        "to download it anew (a mirror of a different file needs "
                        "--annotations-sha256).")


def _decodes(path: Path) -> None:
    """An image whose reply gave no length must at least decode before it is kept."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # Pillow raises many types for broken files
        raise DataError(f"the reply gave no length and the file does not decode as an image "
                        f"({exc})") from None


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
def extract(archive: str | Path, target: str | Path, members: list[str] | None = None,
            max_bytes: int = MAX_EXTRACT_BYTES) -> list[Path]:
    """Extract `members` (default: all) of a zip into `target`; files already there with the
    right size are kept. Every member name is checked first; one escaping `target` is an error,
    as are members adding up to more than `max_bytes` or inflating suspiciously (a zip bomb)."""
    archive, target = Path(archive), Path(target)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            unsafe = [i.filename for i in infos if _escapes(i.filename, target)]
            if unsafe:
                raise DataError(f"Archive {archive} has member(s) that would be written outside "
                                f"{target}: {unsafe[:5]}; refusing to extract it.")
            wanted = infos if members is None else _select(infos, members, archive)
            _check_sizes(archive, [i for i in wanted if not i.is_dir()], max_bytes)
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


def _check_sizes(archive: Path, infos: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse a zip bomb before writing a byte: too much in all, or a member that inflates far
    more than real data does."""
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise DataError(f"Archive {archive} would extract {total:,} bytes, over the "
                        f"{max_bytes:,}-byte limit; refusing it (a zip bomb, or the wrong file).")
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > (1 << 20) and ratio > MAX_COMPRESSION_RATIO:
            raise DataError(f"Archive {archive}: member {info.filename} inflates from "
                            f"{info.compress_size:,} to {info.file_size:,} bytes ({ratio:.0f}x); "
                            "refusing it as a zip bomb.")


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> Path:
    out = target / info.filename
    if out.is_file() and out.stat().st_size == info.file_size:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    written = 0
    with zf.open(info) as source, open(tmp, "wb") as handle:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:  # the header lied about the size
                handle.close()
                tmp.unlink(missing_ok=True)
                raise DataError(f"Archive member {info.filename} holds more than the "
                                f"{info.file_size:,} bytes its header declares; refusing it.")
            handle.write(chunk)
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
                  reporter: Reporter | None = None, allow_hosts: tuple[str, ...] = (),
                  annotations_sha256: str | None = None, **fetch_options) -> CocoDownload:
    """Fetch COCO annotations, build the presence manifest, download the images it needs.

    Writes `coco{year}.yaml` (a config whose data section rebuilds the same manifest) and
    `manifest.jsonl` (the images that are on disk) into `out_dir`. Rerunning resumes. URLs must
    be on COCO's host or in `allow_hosts`; the archive must have `annotations_sha256` (default:
    the official archive's pinned hash).
    """
    _check_request(year, splits, classes)
    out_dir, reporter = Path(out_dir).resolve(), reporter or Reporter()
    url = check_url(annotations_url or COCO_ANNOTATIONS_URL.format(year=year), allow_hosts)
    archive = out_dir / url.rsplit("/", 1)[-1]
    reporter.stage(f"Annotations: {url}")
    expected = annotations_sha256 or COCO_ANNOTATIONS_SHA256[year]
    _fetch_archive(url, archive, reporter, expected, **fetch_options)
    check_sha256(archive, expected)  # also a copy already on disk, before it is used
    members = [f"annotations/instances_{s}{year}.json" for s in splits]
    extract(archive, out_dir, members)
    data = _coco_data_section(out_dir, classes, year, splits, negative, min_area, max_per_class)
    reporter.stage("Building the presence manifest")
    manifest, urls = _build(data, seed)
    jobs = [(check_url(urls.get(s.path) or _fallback_url(s.path, out_dir), allow_hosts),
             Path(s.path)) for s in manifest.samples]
    reporter.stage(f"Images: {len(jobs)} needed")
    results = fetch_many(jobs, workers, reporter, verify=_decodes, **fetch_options)
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


def _fetch_archive(url: str, archive: Path, reporter: Reporter, sha256: str, **options) -> None:
    reporter.bytes_started(archive.name, None)
    result = fetch(url, archive, on_bytes=reporter.bytes_done, max_bytes=MAX_ARCHIVE_BYTES,
                   verify=lambda path: check_sha256(path, sha256), **options)
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
    path = out_dir / MANIFEST_FILE
    manifest.save(path)
    return CocoDownload(config, path, results)
