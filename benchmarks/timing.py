"""Timing that survives a noisy machine: warm-up, then the measured setups interleaved, with their spread.

This machine's speed swings several-fold when its neighbours are busy, so a single timing of A then B decides
nothing. Every benchmark measures through this module:

- :class:`Worker`: one measured setup in its own process (built once there; peak memory of that process alone:
  resident-set growth on CPU, ``max_memory_allocated`` on GPU; CPU time includes its finished child processes, so a
  setup running a command line tool counts the tool's CPU), asked to run one repeat at a time;
- :func:`interleave`: a warm-up of each, then ``pairs`` rounds A B C, C B A, A B C, ... so slow spells hit every
  setup alike; wall and process CPU seconds of every repeat;
- :func:`memory_in_use`: a setup's peak memory per run in a process of its own whose allocator hands freed blocks
  straight back to the system, so the figure is what the run holds, not what glibc happened to keep;
- :class:`Spread` (min / median / max), :func:`pair_ratio` (the median of per-round ratios, which cancels most of a
  slow spell), :func:`verdict` (a figure against its target) and :func:`machine_header` (torch threads and load
  average at the start, with a warning when the machine was already busy).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass(frozen=True, kw_only=True)
class RoundsConfig:
    """What every benchmark's config starts with (each adds what it measures)."""

    pairs: int = 5
    """Interleaved rounds after one warm-up of each setup."""


@dataclass(frozen=True, kw_only=True)
class TorchRoundsConfig(RoundsConfig):
    """A benchmark whose setups run torch on the CPU."""

    threads: int = 1
    """Torch threads per worker (0: torch's default; 1 on a shared 2-core machine, where a second thread makes every
    small op wait for a descheduled partner)."""


@dataclass(frozen=True)
class Spread:
    """Min / median / max of repeated measurements."""

    values: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def __str__(self) -> str:
        return f"{self.median:.3f} ({self.min:.3f}-{self.max:.3f})"


@dataclass
class Timings:
    """Every repeat of one setup: wall and process CPU seconds, and the peak memory its process reached."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    peak_mib: float = 0.0

    @property
    def wall_spread(self) -> Spread:
        return Spread(tuple(self.wall))

    @property
    def cpu_spread(self) -> Spread:
        return Spread(tuple(self.cpu))


def _rss_mib(field: str = "VmHWM") -> float:
    """This process's resident set (``VmRSS``) or its high-water mark (``VmHWM``) in MiB; the peak since the process
    started where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss() -> bool:
    """Reset the resident-set high-water mark (Linux), so a peak reached while building a setup (weights loading)
    does not hide the peak of its runs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _return_freed_memory() -> bool:
    """Make glibc hand every freed block of 64 KiB or more back to the system at once (a fixed mmap threshold, which
    also stops glibc raising it as it goes, and a low trim threshold). By default glibc keeps freed blocks in its heap,
    so a process's resident-set growth depends on the order of its allocations: the same generation measured 31-53
    MiB in repeated identical runs. With this it tracks the bytes in use, the figure ``max_memory_allocated`` gives on
    a GPU. False where there is no glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 64 * 1024)) and bool(mallopt(m_trim_threshold, 128 * 1024))


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (a setup that runs a command line tool)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _serve(connection, factory: Callable, args: tuple, device: str, per_run_peak: bool = False) -> None:
    """Worker process: build the setup (``factory(*args)`` returns a zero-argument callable), then run it on request.
    ``per_run_peak``: freed memory goes back to the system at once and each run's peak is its own (measured from the
    run's start) instead of the highest since the build."""
    import torch

    if per_run_peak and not _return_freed_memory():
        print("warning: no glibc here, so the memory in use includes freed memory the allocator kept", file=sys.stderr)
    run = factory(*args)
    cuda = torch.device(device).type == "cuda"
    start_rss = _rss_mib("VmRSS") if _reset_peak_rss() else _rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        start_gpu = torch.cuda.memory_allocated()
    connection.send("ready")
    while connection.recv() == "run":
        if per_run_peak:
            start_rss = _rss_mib("VmRSS") if _reset_peak_rss() else _rss_mib()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                start_gpu = torch.cuda.memory_allocated()
        wall, cpu = time.perf_counter(), _cpu_seconds()
        run()
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
        peak = (torch.cuda.max_memory_allocated() - start_gpu) / 2**20 if cuda else _rss_mib() - start_rss
        connection.send((wall, cpu, peak))
    connection.close()


class Worker:
    """One measured setup living in its own (spawned) process: ``factory(*args)``, run there, builds it and returns the
    zero-argument callable to time; ``factory`` must be importable (module level). ``device``: where it runs (memory).
    ``daemon=False`` for a setup that starts processes of its own (DataLoader workers, a process pool): a daemonic
    process may not have children; close such a worker (``try``/``finally``) or the benchmark waits for it at exit."""

    def __init__(
        self, factory: Callable, args: tuple = (), *, device: str = "cpu", daemon: bool = True, per_run_peak: bool = False
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        target_args = (child, factory, args, str(device), per_run_peak)
        self._process = context.Process(target=_serve, args=target_args, daemon=daemon)
        self._process.start()
        child.close()  # only the worker holds its end now: if it dies, recv() below raises instead of waiting forever
        if self._connection.recv() != "ready":
            raise RuntimeError("benchmark worker failed to start")

    def run(self) -> tuple[float, float, float]:
        """One repeat: ``(wall seconds, CPU seconds, peak MiB so far)``."""
        self._connection.send("run")
        return self._connection.recv()

    def close(self) -> None:
        try:
            self._connection.send("stop")
        except OSError:  # the worker has died already (its traceback is above): nothing to stop
            pass
        finally:
            self._process.join(timeout=30)


def interleave(workers: dict[str, Worker], pairs: int = 5, warmup: int = 1) -> dict[str, Timings]:
    """Warm each worker up, then run them in alternating order for ``pairs`` rounds; every repeat is kept. Every
    worker is closed afterwards, also when a run fails."""
    names = list(workers)
    try:
        for name in names:
            for _ in range(warmup):
                workers[name].run()
        results = {name: Timings() for name in names}
        for round_index in range(pairs):
            for name in names if round_index % 2 == 0 else reversed(names):
                wall, cpu, peak = workers[name].run()
                results[name].wall.append(wall)
                results[name].cpu.append(cpu)
                results[name].peak_mib = max(results[name].peak_mib, peak)
        return results
    finally:
        for worker in workers.values():
            worker.close()


def memory_in_use(factory: Callable, args: tuple = (), *, runs: int = 3, device: str = "cpu") -> Spread:
    """Peak memory each of ``runs`` runs of a setup had in use (MiB, after a warm-up), in a worker of its own whose
    freed memory goes straight back to the system (:func:`_return_freed_memory`; ``max_memory_allocated`` on GPU).
    A separate pass from the timed one: returning memory at once costs time (page faults)."""
    worker = Worker(factory, args, device=device, per_run_peak=True)
    try:
        worker.run()
        return Spread(tuple(worker.run()[2] for _ in range(runs)))
    finally:
        worker.close()


def interleave_setups(factory: Callable, setups: dict[str, tuple], pairs: int = 5, **worker_options) -> dict[str, Timings]:
    """A :class:`Worker` per setup (``factory`` and that setup's arguments), :func:`interleave`d; every worker started
    is closed, also when a later one fails to start (``daemon=False`` for setups that start processes)."""
    workers: dict[str, Worker] = {}
    try:
        for name, args in setups.items():
            workers[name] = Worker(factory, args, **worker_options)
    except BaseException:
        for worker in workers.values():
            worker.close()
        raise
    return interleave(workers, pairs=pairs)


def print_timings(results: dict[str, Timings], per: str = "repeat", indent: str = "") -> None:
    """One row per setup: wall seconds per ``per`` median (min-max), CPU seconds median, peak MiB."""
    width = max(13, *(len(name) for name in results))
    print(f"{indent}{'setup':>{width}} {'s/' + per + ' median (min-max)':>26} {'CPU s':>7} {'peak MiB':>9}")
    for name, timings in results.items():
        print(f"{indent}{name:>{width}} {str(timings.wall_spread):>26} {timings.cpu_spread.median:>7.3f} {timings.peak_mib:>9.1f}")


def pair_ratio(a: Timings, b: Timings) -> Spread:
    """The per-round ratios a / b of wall time (round i of a against round i of b)."""
    return Spread(tuple(x / y for x, y in zip(a.wall, b.wall)))


def verdict(value: float, target: float, *, at_most: bool = True) -> str:
    met = value <= target if at_most else value >= target
    return f"target {'<=' if at_most else '>='} {target:g}: {'met' if met else 'MISSED'}"


def start(config_class, argv: list[str] | None, *, prog: str, doc: str | None):
    """A benchmark's opening: its config from the command line (:func:`datasets.cli.parse`: ``--help``, ``--config``),
    torch's threads set from a ``threads`` option (0 keeps torch's default), the config and :func:`machine_header`
    printed. Returns the config."""
    import dataclasses

    import torch

    from datasets import cli

    config = cli.parse(config_class, argv, prog=prog, description=(doc or "").split("\n\n")[0])
    if getattr(config, "threads", 0):
        torch.set_num_threads(config.threads)
    print("config:", dataclasses.asdict(config))
    print(machine_header())
    return config


def machine_header() -> str:
    """Torch threads, cores and load average now; a warning when the machine is already busy."""
    import torch

    load = os.getloadavg()
    cores = os.cpu_count() or 1
    line = f"machine: {cores} cores, torch threads {torch.get_num_threads()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    if load[0] > 0.5 * cores:
        line += f"\nWARNING: the machine was busy before this benchmark started (load {load[0]:.2f} on {cores} cores): figures may be slow and noisy"
    return line
