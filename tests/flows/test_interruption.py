"""Stopping the `pointdistill` command: Ctrl-C and SIGTERM stop a run within seconds and leave
it resumable; no way of stopping it (kill -9 included) leaves its temporary Prefect server
behind; a server that goes away mid-run ends the command with a clear error, not a hang."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def start_teacher_run(shapes_dir: str, out: Path, log: Path) -> subprocess.Popen:
    """`pointdistill train-teacher` with no Prefect server configured (a temporary one is
    started), in its own session, as a terminal would run it (SIGINT not ignored)."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    command = [sys.executable, "-m", "flows.cli", "train-teacher", "--dataset", shapes_dir, "--out", str(out),
               "--num-points", "128", "--point-widths", "16,16,16,32,64", "--head-widths", "32,16",
               "--epochs", "1000", "--device", "cpu"]
    return subprocess.Popen(command, env=env, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def server_of(command: subprocess.Popen, state: Path) -> int:
    """The temporary server's pid, once the run has finished an epoch."""
    wait_until(lambda: state.exists() or command.poll() is not None, 120, "the first epoch")
    assert command.poll() is None, "the run ended early"
    servers = [pid for pid in children(command.pid) if b"uvicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(servers) == 1, servers
    return servers[0]


@pytest.mark.parametrize("sig, to_group, code", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143)])
def test_ctrl_c_and_sigterm_stop_within_seconds_resumable_and_stop_the_server(
        shapes_dir, tmp_path, sig, to_group, code):
    out, log = tmp_path / "teacher.pt", tmp_path / "run.log"
    command = start_teacher_run(shapes_dir, out, log)
    server = server_of(command, tmp_path / "teacher.pt.incomplete" / "state.pt")
    started = time.monotonic()
    os.killpg(command.pid, sig) if to_group else command.send_signal(sig)  # Ctrl-C reaches the whole group
    assert command.wait(timeout=60) == code, log.read_text()[-2000:]
    assert time.monotonic() - started < 15
    assert "--resume" in log.read_text().splitlines()[-1]
    assert not alive(server)
    assert (tmp_path / "teacher.pt.incomplete" / "state.pt").is_file() and not out.exists()


def test_kill_9_never_leaves_the_temporary_server_behind(shapes_dir, tmp_path):
    command = start_teacher_run(shapes_dir, tmp_path / "teacher.pt", tmp_path / "run.log")
    server = server_of(command, tmp_path / "teacher.pt.incomplete" / "state.pt")
    command.kill()
    command.wait()
    wait_until(lambda: not alive(server), 15, "the orphaned server to exit")


def test_a_server_gone_mid_run_ends_the_command_with_a_clear_error(shapes_dir, tmp_path):
    log = tmp_path / "run.log"
    command = start_teacher_run(shapes_dir, tmp_path / "teacher.pt", log)
    server = server_of(command, tmp_path / "teacher.pt.incomplete" / "state.pt")
    os.kill(server, signal.SIGKILL)
    assert command.wait(timeout=60) == 2
    assert "pointdistill: error: the temporary Prefect server exited" in log.read_text()


def test_the_temporary_server_gets_a_long_start_up_wait_unless_the_user_sets_one():
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    from flows.runtime import EMBEDDED_STARTUP_TIMEOUT_S, _startup_timeout_s

    assert _startup_timeout_s() == EMBEDDED_STARTUP_TIMEOUT_S > PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    with temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 7}):
        assert _startup_timeout_s() == 7
