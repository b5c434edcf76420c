"""``pvscope record``: run a guest on the emulated PC and write its trace atomically."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import unicorn

from pvscope import __version__, schema
from pvscope.errors import GuestError, PvscopeError, UsageError
from pvscope.hooks import ABI
from recorder.elf import load_image
from recorder.guests import GUESTS, resolve
from recorder.machine import Machine, MachineConfig, Stop
from recorder.writer import TraceWriter


def check_output(out: Path, force: bool) -> None:
    """Refuse an output path we must not or cannot write, before any work is done."""
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out}: already exists (use --force to replace it)")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{parent}: no such directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{parent}: not writable")


def record(
    guest: str,
    out: Path,
    *,
    scale: int | None = None,
    seed: int = 0,
    budget: int | None = None,
    mem_mib: int = 64,
    quantum: int = 10_000,
    log_path: str = "ring",
    stamp: str = "auto",
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Record a guest into the trace directory ``out``; return the manifest written.

    The trace is built in a temporary sibling directory and renamed into place
    only when complete, so ``out`` is never half-written.  A run the guest or the
    user ends early still yields a complete, readable trace whose manifest's
    ``end`` says why.  ``stamp`` picks how ROM entries are stamped with their exact
    vtime: ``native`` code (x86-64 Linux), ``python`` or ``auto``; the trace is the same.
    """
    out = Path(out)
    if budget is not None and budget <= 0:
        raise UsageError(f"--budget must be a positive instruction count, not {budget}")
    if scale is not None and scale <= 0:
        raise UsageError(f"--scale must be positive, not {scale}")
    if not 16 <= mem_mib <= 1024:
        raise UsageError(f"--mem must be between 16 and 1024 MiB, not {mem_mib}")
    if not 0 <= seed < 1 << 32:
        raise UsageError(
            f"--seed must be between 0 and 2**32 - 1 (the ROM's 32-bit word), not {seed}"
        )
    if not 100 <= quantum <= 200_000:
        raise UsageError(f"--quantum must be between 100 and 200000 instructions, not {quantum}")
    check_output(out, force)
    name, path = resolve(guest)
    image = load_image(path, name)
    if scale is None:
        scale = GUESTS[name].default_scale if name in GUESTS else 1
    cfg = MachineConfig(mem_mib=mem_mib, quantum=quantum, seed=seed, scale=scale)
    if budget is not None:
        cfg.budget = budget

    try:
        _clear_stale(out)
        tmp = Path(
            tempfile.mkdtemp(
                prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.absolute().parent
            )
        )
    except OSError as e:
        raise UsageError(f"{out.absolute().parent}: cannot write there ({e.strerror})") from None
    try:
        writer = TraceWriter(tmp)
        writer.write_symbols([(s.name, s.addr, s.size, s.type) for s in image.symbols])
        try:
            machine = Machine(
                image, cfg, writer, log_path=log_path, stamp=stamp, on_progress=on_progress
            )
        except Stop as s:
            raise GuestError(f"{path}: {s.reason}") from None
        try:
            with _signals_end_the_run(machine):
                result = machine.run()
        finally:
            machine.close()
        if result.hook_calls == 0 and result.status not in ("complete", "interrupted"):
            raise GuestError(
                f"{path}: the guest never found the ROM (no hook call before it stopped: "
                f"{result.reason})"
            )
        manifest = {
            "schema_version": schema.SCHEMA_VERSION,
            "min_reader_version": schema.MIN_READER_VERSION,
            "pvscope_version": __version__,
            "unicorn_version": unicorn.__version__,
            "abi": ABI,
            "guest": {"name": image.name, "sha256": image.sha256, "entry": image.entry},
            "machine": cfg.manifest(),
            "seed": seed,
            "scale": scale,
            "budget": cfg.budget,
            "counts": {"instructions": result.instructions, "vtime": result.vtime},
            "end": {"status": result.status, "reason": result.reason, **result.extra},
        }
        manifest = writer.close(manifest)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
        _replace(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest["console"] = result.console
    return manifest


def _clear_stale(out: Path) -> None:
    """Remove what recordings to ``out`` killed outright (SIGKILL, a crash) left behind:
    temporaries named ``.NAME.PID.*.tmp`` whose process is gone."""
    for d in out.absolute().parent.glob(f".{out.name}.*.tmp"):
        parts = d.name[len(out.name) + 2 :].split(".")
        if not parts or not parts[0].isdigit():
            continue
        try:
            os.kill(int(parts[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue  # someone else's live process


def _replace(tmp: Path, out: Path, force: bool) -> None:
    """Move the finished trace into place, replacing an old one only at the last moment
    and only with ``force``.  Without it, a trace that appeared at ``out`` while this one
    was recorded (another ``record`` to the same place) is left alone and this one is
    kept beside it, said in one line."""
    if force and out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, out)  # fails on a non-empty directory: never replaces a trace
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        kept = out.with_name(f"{out.name}.{os.getpid()}")
        os.rename(tmp, kept)
        raise PvscopeError(
            f"{out}: appeared while recording (another record to the same place?); "
            f"not replaced without --force; this recording is kept as {kept}"
        ) from None


@contextlib.contextmanager
def _signals_end_the_run(machine: Machine) -> Iterator[None]:
    """While recording, SIGINT (Ctrl-C) and SIGTERM end the run at the next instruction
    boundary -- the handler only sets the machine's stop, never raises inside a unicorn
    callback -- so the trace is written whole, ``interrupted``, and no temporary
    directory is left behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    why = {
        signal.SIGINT: "interrupted by the user (Ctrl-C)",
        signal.SIGTERM: "terminated (SIGTERM)",
    }

    def handler(signum: int, frame: Any) -> None:
        machine.interrupt(why[signal.Signals(signum)])

    old = {s: signal.signal(s, handler) for s in why}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
