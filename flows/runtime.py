"""Where flows run: the Prefect API they report to and the task runner for chunk tasks."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner, TaskRunner
from prefect_dask import DaskTaskRunner


class ServerGone(RuntimeError):
    """The temporary Prefect server exited while a command was using it."""


def _embedded_server_class():
    from prefect.server.api.server import SubprocessASGIServer

    class EmbeddedServer(SubprocessASGIServer):
        """Prefect's temporary server, started so that it outlives nothing: in its own session
        (a terminal's Ctrl-C reaches the command, which then stops the server after reporting
        to it) and through ``flows.die_with_parent`` (gone when this process dies, kill -9
        included)."""

        _instances: dict = {}  # not shared with SubprocessASGIServer's own singletons

        def _run_uvicorn_command(self) -> subprocess.Popen:
            import prefect
            from prefect.settings import get_current_settings

            return subprocess.Popen(
                [sys.executable, "-m", "flows.die_with_parent", str(os.getpid()),
                 "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"],
                env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                     "PREFECT__SERVER_FINAL": "1",
                     **get_current_settings().to_environment_variables(exclude_unset=True)},
                start_new_session=True)

    return EmbeddedServer


# Prefect waits 20 s for its temporary server by default; a busy 2-core machine (a Dask cluster
# winding down, a training run beside it) has been seen to need longer. A user's own
# PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS wins.
EMBEDDED_STARTUP_TIMEOUT_S = 120


def _startup_timeout_s() -> int:
    from prefect.settings import get_current_settings

    ephemeral = get_current_settings().server.ephemeral
    if "startup_timeout_seconds" in ephemeral.model_fields_set:
        return ephemeral.startup_timeout_seconds
    return EMBEDDED_STARTUP_TIMEOUT_S


SERVER_GONE = threading.Event()  # set when the temporary server exited during a command


def _watch(server, stopped: threading.Event, gone: list) -> None:
    """Interrupt the main thread when the server process exits before ``stopped`` is set, so a
    command never waits on a server that is gone."""
    while not stopped.wait(0.5):
        process = server.server_process
        if process is not None and process.poll() is not None:
            gone.append(process.returncode)
            SERVER_GONE.set()
            os.kill(os.getpid(), signal.SIGINT)  # wakes a main thread blocked in a call, unlike interrupt_main
            return


@contextlib.contextmanager
def embedded_api() -> Iterator[str]:
    """Use the configured Prefect API, or start ONE temporary local server for this process.

    The URL is exported to the environment, so Dask worker processes started inside the block
    report to the same server instead of each starting their own (about 10 s apiece). If that
    server exits early, the block is interrupted with ServerGone.
    """
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = _embedded_server_class()()
    server.start(timeout=_startup_timeout_s())
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url
    stopped, gone = threading.Event(), []
    threading.Thread(target=_watch, args=(server, stopped, gone), daemon=True).start()
    completed = False
    try:
        # Few client retries: the server is local, and a command must not wait minutes on one that is gone.
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_CLIENT_MAX_RETRIES: 1}):
            yield server.api_url
        completed = True
    except BaseException:
        if gone:  # whatever the interrupted flow engine raised while reporting to it
            raise ServerGone(f"the temporary Prefect server exited (code {gone[0]}) during the run; "
                             f"training runs continue from their last finished epoch with --resume") from None
        raise
    finally:
        stopped.set()
        # Deliver queued logs and events while the server still listens (briefly when interrupted).
        if not gone:
            APILogWorker.drain_all(timeout=10 if completed else 2)
            EventsWorker.drain_all(timeout=10 if completed else 2)
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        server.stop()
        atexit.unregister(server.stop)  # stopped here; at exit it would only log to closed streams


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
