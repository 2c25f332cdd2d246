"""`pointdistill serve`: the pipeline's flows as deployments on a Prefect server.

Each flow is served as deployment ``<flow>/local`` (record-teacher/local, train-student/local,
train-teacher/local, ablation/local) by this long-running process; runs started with
``prefect deployment run`` or the UI execute here, as subprocesses. Parameters are validated
against each flow's typed signature by the server before a run is created.
"""

from __future__ import annotations

from prefect import serve
from prefect.settings import PREFECT_API_URL

from flows.ablation import ablation
from flows.record_teacher import record_teacher
from flows.train_student import train_student
from flows.train_teacher import train_teacher

FLOWS = (record_teacher, train_student, train_teacher, ablation)
DEPLOYMENT_NAME = "local"


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
    serve(*deployments(name), limit=limit, pause_on_shutdown=False)
