"""The skeleton `bench http` and `bench thesis` runs share.

Each lab kind is brought up once for the routes that run in it, each route is
started, measured and stopped, and the client of the benchmark runs in the
client namespace under the run's one deadline. Subclasses say what objects
the origin serves and what a route's measurement is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from tools.bench.harness import BenchTimeout
from tools.bench.proc import ns_cmd, run_json_client, signals_deferred
from tools.bench.splice_paths import (
    HTTP_PORT,
    SMALL_SIZE,
    BenchLab,
    KernelTwinLab,
    Route,
    StackLab,
    python_argv,
)

Progress = Callable[[str, bool], None]
OnLine = Callable[[dict[str, Any]], None]


class CountsErrors(Protocol):
    """A result that counts failed requests, in all and by error text."""

    errors: int
    error_kinds: dict[str, int]


def count_error(result: CountsErrors, obj: dict[str, Any]) -> None:
    """Count a client's ``{"kind": "error"}`` line on ``result``, also under its error text."""
    result.errors += 1
    text = str(obj.get("error", "?"))
    result.error_kinds[text] = result.error_kinds.get(text, 0) + 1


def no_progress(text: str, advance: bool) -> None:
    """A progress callback that shows nothing (the default)."""
    return None


class LabRunner:
    """Runs routes lab by lab under one deadline of ``max_seconds``, reporting progress.

    ``client_module`` is the client's module, ``client_name`` names it in
    errors, ``min_client_deadline`` is the least ``--deadline`` it is given.
    """

    client_module = ""
    client_name = ""
    min_client_deadline = 0.0

    def __init__(self, max_seconds: float, progress: Progress = no_progress,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_seconds = max_seconds
        self.progress = progress
        self.clock = clock
        self.deadline = clock() + max_seconds

    def left(self, what: str) -> float:
        """Seconds left before the deadline; BenchTimeout once it has passed."""
        left = self.deadline - self.clock()
        if left <= 0:
            raise BenchTimeout(f"deadline of {self.max_seconds:g}s passed during {what}")
        return left

    def make_objects(self, lab: BenchLab) -> None:
        """Put the objects the plan fetches on the lab's origin."""
        raise NotImplementedError

    def measure_route(self, lab: BenchLab, route: Route) -> None:
        """Measure one started route."""
        raise NotImplementedError

    def route_stopped(self, route: Route, summary: dict[str, Any]) -> None:
        """Keep what the route reported when it stopped (by default nothing)."""

    def run_labs(self, routes: list[Route]) -> None:
        """Each lab kind once for its routes; every lab and route is stopped even on failure."""
        for lab_cls in (KernelTwinLab, StackLab):
            mine = [r for r in routes if r.lab_kind == lab_cls.kind]
            if not mine:
                continue
            lab = lab_cls()
            self.progress(f"{lab.kind} lab: setting up", False)
            try:
                with signals_deferred():
                    lab.start(SMALL_SIZE)
                    self.make_objects(lab)
                for route in mine:
                    self._route(lab, route)
            finally:
                with signals_deferred():
                    lab.stop()

    def _route(self, lab: BenchLab, route: Route) -> None:
        self.progress(f"{route.label}: starting", False)
        with signals_deferred():
            route.start(lab)
        try:
            self.measure_route(lab, route)
        finally:
            with signals_deferred():
                self.route_stopped(route, route.stop())

    def base_argv(self, lab: BenchLab, route: Route, mode: str, *extra: str) -> list[str]:
        """The client's mode, ``--dest`` (the origin), ``extra``, and the route's ``--proxy``."""
        argv = [mode, "--dest", f"{lab.server_ip}:{HTTP_PORT}", *extra]
        proxy = route.proxy(lab)
        if proxy is not None:
            argv += ["--proxy", f"{proxy[0]}:{proxy[1]}"]
        return argv

    def client(self, lab: BenchLab, args: list[str], on_line: OnLine, what: str) -> None:
        """Run the client in the client namespace, feeding each JSON line to ``on_line``.

        The client gets the seconds left (at least ``min_client_deadline``) as
        its own ``--deadline``; the runner waits up to a minute past the run's.
        """
        left = max(self.left(what), self.min_client_deadline)
        argv = ns_cmd(lab.client_ns, *python_argv(self.client_module, *args,
                                                  "--deadline", f"{left:.0f}"))
        run_json_client(argv, on_line, self.deadline + 60.0, self.clock, self.client_name, what)
