"""Where flows run: the Prefect API they report to and the task runner for chunk tasks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner, TaskRunner
from prefect_dask import DaskTaskRunner


@contextlib.contextmanager
def embedded_api() -> Iterator[str]:
    """Use the configured Prefect API, or start ONE temporary local server for this process.

    The URL is exported to the environment, so Dask worker processes started inside the block
    report to the same server instead of each starting their own (about 10 s apiece).
    """
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = SubprocessASGIServer()
    server.start()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        # Deliver queued logs and events while the server still listens.
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        server.stop()


def dask_task_runner(dask_address: str | None, workers: int) -> TaskRunner:
    """Where a flow's mapped tasks run: the existing Dask cluster at ``dask_address``; else a
    LocalCluster of ``workers`` worker processes (one thread each); ``workers=0``: in this
    process, one task at a time."""
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    if workers == 0:
        return ThreadPoolTaskRunner(max_workers=1)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})
