"""`pointdistill serve`: the pipeline's flows as deployments on a Prefect server.

Each flow is served as deployment ``<flow>/local`` (record-teacher/local, train-student/local,
train-teacher/local, ablation/local) by this long-running process; runs started with
``prefect deployment run`` or the UI execute here, as subprocesses. Parameters are validated
against each flow's typed signature by the server before a run is created.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from prefect import serve
from prefect.settings import PREFECT_API_URL

from flows.ablation import ablation
from flows.record_teacher import record_teacher
from flows.train_student import train_student
from flows.train_teacher import train_teacher

FLOWS = (record_teacher, train_student, train_teacher, ablation)
DEPLOYMENT_NAME = "local"
SHUTDOWN_GRACE_S = 10.0  # how long Ctrl-C waits for Prefect's graceful shutdown before exiting anyway


class NoPrefectServer(RuntimeError):
    """Serving needs a Prefect server that `prefect deployment run` can reach too."""


def deployments(name: str = DEPLOYMENT_NAME) -> list:
    """One RunnerDeployment per flow, named ``name``, with the server enforcing its parameter schema."""
    return [f.to_deployment(name=name, description=(f.description or "").split("\n\n")[0],
                            enforce_parameter_schema=True, tags=["pointdistill"]) for f in FLOWS]


def serve_deployments(name: str = DEPLOYMENT_NAME, limit: int | None = None) -> None:
    """Register the deployments and execute their runs until interrupted (at most ``limit`` at once)."""
    if not PREFECT_API_URL.value():
        raise NoPrefectServer(
            "no Prefect server configured: start one (`prefect server start`) and set PREFECT_API_URL "
            "(e.g. `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`), then serve again")
    # No schedules to pause on shutdown; pausing would wait on a server that may be gone.
    signal.signal(signal.SIGINT, _interrupt_within(SHUTDOWN_GRACE_S))
    serve(*deployments(name), limit=limit, pause_on_shutdown=False)


def _interrupt_within(grace_s: float):
    """A SIGINT handler: Prefect's graceful shutdown (KeyboardInterrupt), bounded. With the
    server gone, Prefect's runner can hang while shutting down (an error in its cancellation
    observer); after ``grace_s`` the process exits anyway (status 130), saying why."""

    def force_exit() -> None:
        print(f"pointdistill serve: the shutdown did not finish within {grace_s:g} s (is the Prefect server "
              f"gone?); exiting", file=sys.stderr, flush=True)
        os._exit(130)

    def on_interrupt(signum, frame):
        timer = threading.Timer(grace_s, force_exit)
        timer.daemon = True
        timer.start()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: no new timer
        signal.default_int_handler(signum, frame)

    return on_interrupt
