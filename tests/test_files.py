"""files.py, the bottom of the package: atomic writes that reach the disk in order."""

from __future__ import annotations

import os

from tinyvision.files import atomic_write_text


def test_atomic_write_fsyncs_the_file_before_and_the_folder_after_the_rename(tmp_path,
                                                                               monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "run" / "summary.json"
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "rename", "fsync"], events
    assert os.path.basename(events[0][1]).startswith(".summary.json.")  # the new file's data
    assert events[1][1] == str(target)
    assert events[2][1] == str(target.parent)  # the folder's entry for the new name
