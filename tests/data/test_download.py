"""Downloads against a local HTTP server on 127.0.0.1 (never the internet): resume, retries,
404s, safe zip extraction, and the whole `download_coco` flow."""

from __future__ import annotations

import io
import hashlib
import json
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from helpers import coco_document, square_images
from tinyvision.config import load_config
from tinyvision.data.download import download_coco, extract, fetch, fetch_many
from tinyvision.data.manifest import Manifest
from tinyvision.data.sources import build_manifest
from tinyvision.errors import DataError

FAST = {"timeout": 5.0, "retries": 2, "backoff": 0.0}


class FakeServer:
    """Serves `files` by path; paths in `drop_once` send half their body then hang up once;
    paths in `no_range` ignore Range headers; everything else 404s. Records every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_once: set[str] = set()
        self.no_range: set[str] = set()
        self.wrong_range: set[str] = set()  # answer a Range request with bytes from 0 (206)
        self.no_length: set[str] = set()  # no Content-Length: the body ends when the socket does
        self.requests: list[tuple[str, str | None]] = []
        self.if_range: list[str | None] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def hits(self) -> Counter:
        return Counter(path for path, _ in self.requests)

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                with server.lock:
                    server.requests.append((self.path, self.headers.get("Range")))
                    server.if_range.append(self.headers.get("If-Range"))
                    drop = self.path in server.drop_once
                    server.drop_once.discard(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                wanted = self.headers.get("Range")
                etag = f'"{hash(body) & 0xffffffff:x}"'
                if wanted and self.path in server.wrong_range:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
                elif wanted and self.path not in server.no_range:
                    start = int(wanted.split("=")[1].rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("ETag", etag)
                if self.path not in server.no_length:
                    self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Connection", "close")
                self.end_headers()
                if drop:
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        return Handler


@pytest.fixture
def server():
    fake = FakeServer()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


BLOB = bytes(range(256)) * 400  # 100 KiB, more than one read chunk


def test_fetch_then_skip_complete_file(server, tmp_path):
    server.files["/a.bin"] = BLOB
    result = fetch(server.url + "/a.bin", tmp_path / "a.bin", **FAST)
    assert result.status == "downloaded" and result.bytes == len(BLOB)
    assert (tmp_path / "a.bin").read_bytes() == BLOB
    again = fetch(server.url + "/a.bin", tmp_path / "a.bin", **FAST)
    assert again.status == "skipped" and server.hits()["/a.bin"] == 1


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    server.files["/big.bin"] = BLOB
    server.drop_once.add("/big.bin")
    result = fetch(server.url + "/big.bin", tmp_path / "big.bin", **FAST)
    assert result.status == "downloaded"
    assert (tmp_path / "big.bin").read_bytes() == BLOB
    assert [r for p, r in server.requests if p == "/big.bin"] == [None, f"bytes={len(BLOB) // 2}-"]
    assert not (tmp_path / "big.bin.part").exists()


def test_part_file_of_an_interrupted_run_is_resumed(server, tmp_path):
    server.files["/c.bin"] = BLOB
    (tmp_path / "c.bin.part").write_bytes(BLOB[:1000])
    assert fetch(server.url + "/c.bin", tmp_path / "c.bin", **FAST).status == "downloaded"
    assert (tmp_path / "c.bin").read_bytes() == BLOB
    assert server.requests == [("/c.bin", "bytes=1000-")]


def test_complete_part_file_is_renamed_on_416(server, tmp_path):
    server.files["/d.bin"] = BLOB
    (tmp_path / "d.bin.part").write_bytes(BLOB)
    assert fetch(server.url + "/d.bin", tmp_path / "d.bin", **FAST).status == "downloaded"
    assert (tmp_path / "d.bin").read_bytes() == BLOB


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    server.files["/e.bin"] = BLOB
    server.no_range.add("/e.bin")
    (tmp_path / "e.bin.part").write_bytes(b"stale bytes")
    assert fetch(server.url + "/e.bin", tmp_path / "e.bin", **FAST).status == "downloaded"
    assert (tmp_path / "e.bin").read_bytes() == BLOB


def test_404_fails_without_retrying(server, tmp_path):
    result = fetch(server.url + "/missing.jpg", tmp_path / "missing.jpg", **FAST)
    assert result.status == "failed" and "404" in result.error
    assert server.hits()["/missing.jpg"] == 1 and not (tmp_path / "missing.jpg").exists()


def test_unreachable_server_fails_after_retries(tmp_path):
    result = fetch("http://127.0.0.1:9/x.jpg", tmp_path / "x.jpg", timeout=2, retries=1, backoff=0)
    assert result.status == "failed" and result.error


def test_fetch_many_in_parallel(server, tmp_path):
    for i in range(12):
        server.files[f"/img/{i}.jpg"] = bytes([i]) * (1000 + i)
    server.drop_once.add("/img/3.jpg")
    jobs = [(f"{server.url}/img/{i}.jpg", tmp_path / f"{i}.jpg") for i in range(12)]
    jobs.append((f"{server.url}/img/404.jpg", tmp_path / "404.jpg"))
    results = fetch_many(jobs, workers=4, **FAST)
    assert [r.status for r in results] == ["downloaded"] * 12 + ["failed"]
    assert all((tmp_path / f"{i}.jpg").read_bytes() == bytes([i]) * (1000 + i) for i in range(12))


# ---- archives --------------------------------------------------------------------------------
def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_extract_selected_members_and_keep_complete_ones(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"annotations/x.json": b"{}", "annotations/y.json": b"[]"}))
    out = tmp_path / "out"
    assert extract(archive, out, ["annotations/x.json"]) == [out / "annotations" / "x.json"]
    assert not (out / "annotations" / "y.json").exists()
    with pytest.raises(DataError, match=r"lacks \['annotations/z.json'\]"):
        extract(archive, out, ["annotations/z.json"])


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt",
                                  "C:/escape.txt"])
def test_extract_refuses_members_escaping_the_target(tmp_path, evil):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_zip({"ok.txt": b"fine", evil: b"gotcha"}))
    with pytest.raises(DataError, match=r"would be written outside .*refusing to extract"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "ok.txt").exists()  # nothing is extracted
    assert not (tmp_path / "escape.txt").exists()


def test_corrupt_archive(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"not a valid zip archive.*delete it"):
        extract(tmp_path / "bad.zip", tmp_path)


# ---- the COCO flow ---------------------------------------------------------------------------
@pytest.fixture
def fake_coco(server):
    """Annotation zip (train + val) and images: persons, cars, dogs; one person image 404s."""
    base = server.url
    train = coco_document(square_images(8, "t"), [
        (0, "person", [0, 0, 40, 40]), (1, "person", [0, 0, 40, 40]),
        (2, "car", [0, 0, 40, 40]), (3, "car", [0, 0, 2, 2]),  # too small with min_area
        (4, "dog", [0, 0, 40, 40]), (5, "dog", [0, 0, 40, 40]), (6, "dog", [0, 0, 40, 40]),
        (7, "person", [0, 0, 40, 40])], url_base=f"{base}/train2017")
    val = coco_document(square_images(3, "v"), [
        (0, "person", [0, 0, 40, 40]), (1, "car", [0, 0, 40, 40]), (2, "dog", [0, 0, 40, 40])],
        url_base=f"{base}/val2017")
    server.files["/annotations/annotations_trainval2017.zip"] = make_zip({
        "annotations/instances_train2017.json": json.dumps(train).encode(),
        "annotations/instances_val2017.json": json.dumps(val).encode(),
        "annotations/captions_train2017.json": b"{}"})
    # a local test server, and a stand-in archive with its own hash (not the official one)
    server.trust = {"allow_hosts": ("127.0.0.1",), "annotations_sha256": hashlib.sha256(
        server.files["/annotations/annotations_trainval2017.zip"]).hexdigest()}
    for split, doc in (("train2017", train), ("val2017", val)):
        for image in doc["images"]:
            if image["file_name"] != "t007.png":  # the server lost this one
                server.files[f"/{split}/{image['file_name']}"] = image["file_name"].encode() * 50
    server.drop_once.add("/annotations/annotations_trainval2017.zip")
    return server


def test_download_coco_fetches_only_needed_images_and_resumes(fake_coco, tmp_path):
    url = fake_coco.url + "/annotations/annotations_trainval2017.zip"
    result = download_coco(tmp_path / "coco", ["person", "car"], negative=False, min_area=0.01,
                           workers=3, annotations_url=url, **fake_coco.trust, **FAST)
    hits = fake_coco.hits()
    assert hits[url.replace(fake_coco.url, "")] == 2  # dropped once, resumed
    assert not any("t004" in p or "t005" in p or "t003" in p for p in hits)  # not needed
    assert [r.url.rsplit("/", 1)[-1] for r in result.failed] == ["t007.png"]
    assert result.count("downloaded") == 5
    manifest = Manifest.load(result.manifest)
    names = {Path(s.path).name: s.labels for s in manifest.samples}
    assert names == {"t000.png": ("person",), "t001.png": ("person",), "t002.png": ("car",),
                     "v000.png": ("person",), "v001.png": ("car",)}
    assert (tmp_path / "coco" / "train2017" / "t000.png").is_file()
    assert not (tmp_path / "coco" / "annotations" / "captions_train2017.json").exists()

    before = len(fake_coco.requests)
    again = download_coco(tmp_path / "coco", ["person", "car"], negative=False, min_area=0.01,
                          workers=3, annotations_url=url, **fake_coco.trust, **FAST)
    assert again.count("skipped") == 5 and again.count("downloaded") == 0
    assert [p for p, _ in fake_coco.requests[before:]] == ["/train2017/t007.png"]  # retried only


def test_download_coco_writes_a_config_that_rebuilds_the_manifest(fake_coco, tmp_path):
    url = fake_coco.url + "/annotations/annotations_trainval2017.zip"
    fake_coco.files["/train2017/t007.png"] = b"found it again"
    result = download_coco(tmp_path / "coco", ["person"], negative=True, annotations_url=url,
                           **fake_coco.trust, **FAST)
    assert not result.failed
    written = yaml.safe_load(result.config.read_text())["data"]["source"]
    assert written["train_annotations"] == "annotations/instances_train2017.json"
    assert written["negative"] is True
    cfg = load_config(result.config)
    rebuilt = build_manifest(cfg.data, cfg.seed, cfg.model.task)
    assert rebuilt.samples == Manifest.load(result.manifest).samples
    assert {s.labels for s in rebuilt.samples} == {("person",), ("negative",)}


def test_download_coco_argument_checks(tmp_path):
    with pytest.raises(DataError, match=r"year='2016' is not one of"):
        download_coco(tmp_path, ["person"], year="2016")
    with pytest.raises(DataError, match=r"expected some of \['train', 'val'\]"):
        download_coco(tmp_path, ["person"], splits=("test",))
    with pytest.raises(DataError, match=r"Could not download http://127.0.0.1:9/none.zip: URLError"):
        download_coco(tmp_path, ["person"], annotations_url="http://127.0.0.1:9/none.zip",
                      allow_hosts=("127.0.0.1",),
                      timeout=2, retries=0)


def test_cli_download_reports_failures_and_exits_1(fake_coco, tmp_path):
    from typer.testing import CliRunner

    from tinyvision.cli.data import data_app

    url = fake_coco.url + "/annotations/annotations_trainval2017.zip"
    result = CliRunner().invoke(data_app, [
        "download", "coco", "--classes", "person,car", "--no-negative", "--min-area", "0.01",
        "--out", str(tmp_path / "coco"), "--annotations-url", url, "--workers", "2",
        "--allow-host", "127.0.0.1", "--annotations-sha256", fake_coco.trust["annotations_sha256"]])
    assert result.exit_code == 1
    assert "5 downloaded, 0 already present, 1 failed" in result.output
    assert "t007.png: HTTP 404" in result.output and "run the same command again" in result.output
    assert (tmp_path / "coco" / "coco2017.yaml").is_file()


# ---- what a download trusts (issue: https, hosts, pinned hashes, ranges, caps, zip bombs) -------
def test_only_https_on_the_expected_host_unless_allowed():
    from tinyvision.data.download import COCO_ANNOTATIONS_URL, COCO_IMAGE_URL, check_url

    assert COCO_ANNOTATIONS_URL.startswith("https://") and COCO_IMAGE_URL.startswith("https://")
    assert check_url("http://images.cocodataset.org/train2017/1.jpg") == \
        "https://images.cocodataset.org/train2017/1.jpg"  # a coco_url is upgraded
    for bad in ("file:///etc/passwd", "data:text/plain,hello", "ftp://images.cocodataset.org/a",
                "/local/annotations.zip"):
        with pytest.raises(DataError, match="only http\\(s\\) URLs"):
            check_url(bad)
    with pytest.raises(DataError, match=r"host 'evil.example' is not images.cocodataset.org.*"
                                        r"--allow-host evil.example"):
        check_url("https://evil.example/annotations_trainval2017.zip")
    assert check_url("https://mirror.example/a.zip", ["mirror.example"]) == \
        "https://mirror.example/a.zip"


def test_cli_refuses_a_file_url_and_a_foreign_host(tmp_path):
    from typer.testing import CliRunner

    from tinyvision.cli import app

    for url, message in (("file:///etc/passwd", "only http(s) URLs"),
                         ("https://127.0.0.1:9/a.zip", "--allow-host 127.0.0.1")):
        result = CliRunner().invoke(app, ["data", "download", "coco", "--classes", "person",
                                          "--out", str(tmp_path), "--annotations-url", url])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing fetched, nothing written


def test_the_official_archive_name_is_checked_against_its_pinned_hash(fake_coco, tmp_path):
    """An archive served under the official name but with other bytes is refused and deleted."""
    url = fake_coco.url + "/annotations/annotations_trainval2017.zip"
    with pytest.raises(DataError, match=r"SHA-256 [0-9a-f]{64}, not the expected 113a836d"):
        download_coco(tmp_path / "coco", ["person"], annotations_url=url,
                      allow_hosts=("127.0.0.1",), **FAST)
    assert not (tmp_path / "coco" / "annotations_trainval2017.zip").exists()


def test_resume_sends_if_range_and_restarts_on_a_wrong_range(server, tmp_path):
    from tinyvision.data.download import fetch

    server.files["/a.bin"] = BLOB
    server.drop_once.add("/a.bin")
    result = fetch(server.url + "/a.bin", tmp_path / "a.bin", **FAST)
    assert result.status == "downloaded" and (tmp_path / "a.bin").read_bytes() == BLOB
    assert server.requests[1][1] == f"bytes={len(BLOB) // 2}-"  # resumed...
    assert server.if_range[1] and server.if_range[1].startswith('"')  # ...only if unchanged
    server.files["/b.bin"] = BLOB
    server.drop_once.add("/b.bin")
    server.wrong_range.add("/b.bin")  # answers a range with bytes from 0
    result = fetch(server.url + "/b.bin", tmp_path / "b.bin", **FAST)
    assert result.status == "downloaded" and (tmp_path / "b.bin").read_bytes() == BLOB


def test_a_reply_without_length_is_verified_before_it_is_kept(server, tmp_path):
    from tinyvision.data.download import check_sha256, fetch

    server.files["/c.bin"] = BLOB
    server.no_length.add("/c.bin")
    wrong = fetch(server.url + "/c.bin", tmp_path / "c.bin",
                  verify=lambda p: check_sha256(p, "0" * 64), **FAST)
    assert wrong.status == "failed" and "SHA-256" in wrong.error
    assert not (tmp_path / "c.bin").exists() and not (tmp_path / "c.bin.part").exists()
    right = fetch(server.url + "/c.bin", tmp_path / "c.bin", verify=lambda p: check_sha256(
        p, hashlib.sha256(BLOB).hexdigest()), **FAST)
    assert right.status == "downloaded" and (tmp_path / "c.bin").read_bytes() == BLOB


def test_downloads_over_their_size_cap_are_refused(server, tmp_path):
    from tinyvision.data.download import fetch

    server.files["/big.bin"] = BLOB
    result = fetch(server.url + "/big.bin", tmp_path / "big.bin", max_bytes=1000, **FAST)
    assert result.status == "failed" and "over the 1,000-byte cap" in result.error
    server.no_length.add("/big.bin")  # no announced length: stopped while reading
    result = fetch(server.url + "/big.bin", tmp_path / "big2.bin", max_bytes=1000, **FAST)
    assert result.status == "failed" and "more than the 1,000-byte cap" in result.error
    assert not list(tmp_path.glob("big*"))


def test_a_zip_bomb_is_refused_with_its_sizes(tmp_path):
    from tinyvision.data.download import extract

    archive = tmp_path / "bomb.zip"
    archive.write_bytes(make_zip({"annotations/huge.json": b"\0" * (40 << 20)}))
    with pytest.raises(DataError, match=r"inflates from [\d,]+ to 41,943,040 bytes .*zip bomb"):
        extract(archive, tmp_path / "out")
    archive.write_bytes(make_zip({"a.json": b"x" * 5000, "b.json": b"y" * 5000}))
    with pytest.raises(DataError, match=r"would extract 10,000 bytes, over the 4,096-byte limit"):
        extract(archive, tmp_path / "out", max_bytes=4096)
    assert not (tmp_path / "out").exists()
