"""Keep TensorFlow's native start-up chatter off the user's terminal.

TensorFlow's C++ code writes straight to file descriptor 2 (`oneDNN custom operations are on`,
`Could not find cuda drivers`, `failed call to cuInit`, the CPU-instructions notice) and the LiteRT
converter prints `fully_quantize: 0, inference_type: 6, ...`; no environment variable silences
all of it. The CLI therefore routes descriptor 2 through a filter that drops exactly those lines
and passes everything else on at once. `--verbose` leaves stderr untouched.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl/glog lines (I0000 00:00:1796201062.213228  5461 port.cc:153] ...), their preamble, TF's
# CPU notice and the converter's summary line
NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\)"
                   rb"|[IWE]\d{4} [\d:]+\.\d+\s+\d+ [\w.]+:\d+\]"
                   rb"|To enable the following instructions:"
                   rb"|fully_quantize: \d)")
_PREFIXES = (b"WARNING: All log", b"I0", b"W0", b"E0", b"I1", b"W1", b"E1", b"To enable",
             b"fully_quantize")

_state: dict = {}


def filter_native_stderr() -> None:
    """Install the filter on descriptor 2 for the rest of the process (once)."""
    if _state or not _is_real_fd(2):
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_pump, args=(read_end, real), daemon=True,
                              name="tinyvision-stderr-filter")
    thread.start()
    _state.update(real=real, thread=thread)
    atexit.register(_restore)


def _is_real_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _pump(read_end: int, real: int) -> None:
    """Forward what arrives on the pipe to the real stderr, line by line, minus the noise; a
    partial line that cannot be noise goes on at once (progress bars rewrite their line)."""
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as source:
        while True:
            chunk = source.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
            if pending and not any(p.startswith(pending[:len(p)]) for p in _PREFIXES):
                out, pending = out + pending, b""
            if out:
                os.write(real, out)
    if pending and not NOISE.match(pending):
        os.write(real, pending)


def _restore() -> None:
    """Put the real stderr back and let the filter drain (at exit)."""
    real, thread = _state.get("real"), _state.get("thread")
    if real is None:
        return
    try:
        sys.stderr.flush()
    except Exception:  # stderr may already be closed at exit
        pass
    os.dup2(real, 2)  # closes the pipe's last write end: the pump reads EOF and stops
    thread.join(timeout=2.0)
    _state.clear()
