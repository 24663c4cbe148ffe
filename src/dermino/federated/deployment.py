"""Real separate processes: a SuperLink (server) and SuperNodes (one per site), on Flower's CLI.

``dermino federate server`` starts ``flower-superlink``, writes a small Flower app folder
whose components are dermino's ``ServerApp``/``ClientApp`` (the code is the installed dermino
package, on every machine), submits it with ``flwr run`` and waits for the run to finish.
``dermino federate client`` starts ``flower-supernode`` with the site's ``--node-config``.
TLS is on unless ``insecure`` is asked for: the SuperLink gets a certificate and key, the
SuperNodes and ``flwr run`` the CA certificate that signed it.

In flwr 1.42 the SuperLink serves its Fleet API (SuperNodes), Control API (``flwr run``) and
Runtime API (the ServerApp process) over HTTP on one ``--host``/``--port``, all with the same
TLS files; a SuperNode serves its own Runtime API (the ClientApp process) on its ``--host``/
``--port``. The old ``--fleet-api-address``/``--serverappio-api-address``/``--control-api-address``
and ``--clientappio-api-address`` flags of 1.32 are gone (1.42 refuses them; the Control and
Runtime APIs moved to HTTP in 1.37).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

APP_PYPROJECT = """\
# Flower app folder written by `dermino federate server`; the code is the installed dermino package.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "dermino-federated"
version = "1.0.0"
description = "dermino federated fine-tuning"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "dermino"

[tool.flwr.app.components]
serverapp = "dermino.federated.server_app:app"
clientapp = "dermino.federated.client_app:app"

[tool.flwr.app.config]
config = ""
out-dir = ""
"""


@dataclass
class TLS:
    """Certificate files; ``None`` everywhere means an insecure (plain-text) connection."""

    ca_cert: str | None = None  # CA that signed the SuperLink's certificate (SuperNodes, flwr run)
    server_cert: str | None = None  # SuperLink certificate
    server_key: str | None = None  # SuperLink private key

    @property
    def insecure(self) -> bool:
        return not (self.ca_cert or self.server_cert)


def executable(name: str) -> str:
    """A Flower CLI beside this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install flwr in this environment")
    return found


def flower_env(**extra: str) -> dict[str, str]:
    """Environment for Flower's processes: this venv's bin first on PATH (the SuperLink and
    SuperNode spawn ``flower-superexec``/``flwr-serverapp``/``flwr-clientapp`` by name) and
    PYTHONPATH made absolute (they run from other folders)."""
    env = dict(os.environ, **extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    return env


def split_address(address: str) -> tuple[str, str]:
    """``host:port`` (IPv6 in brackets) -> (host, port), with an error naming the bad value."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    return host.strip("[]"), port


def client_address(address: str) -> str:
    """Where a process on this machine reaches a server bound to ``address`` (0.0.0.0 -> 127.0.0.1)."""
    host, port = split_address(address)
    return f"{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def superlink_command(address: str, tls: TLS, database: str | None = None) -> list[str]:
    """``flower-superlink`` serving Fleet, Control and Runtime APIs on ``address`` (one HTTP port)."""
    host, port = split_address(address)
    cmd = [executable("flower-superlink"), "--host", host, "--port", port, "--disable-runtime-dependency-installation"]
    if tls.insecure:
        cmd.append("--insecure")
    else:
        if not (tls.server_cert and tls.server_key and tls.ca_cert):
            raise ValueError("TLS needs the CA certificate, the server certificate and its key")
        cmd += ["--ssl-ca-certfile", tls.ca_cert, "--ssl-certfile", tls.server_cert, "--ssl-keyfile", tls.server_key]
    if database:
        cmd += ["--database", database]
    return cmd


def supernode_command(superlink: str, config: str, partition: str, runtime: str, tls: TLS) -> list[str]:
    """``flower-supernode`` for one site; ``runtime`` is its local Runtime API address (one per SuperNode)."""
    host, port = split_address(runtime)
    cmd = [executable("flower-supernode"), "--superlink", superlink, "--host", host, "--port", port,
           "--node-config", f"config={_toml_str(str(Path(config).resolve()))} partition={_toml_str(partition)}"]
    cmd += ["--insecure"] if tls.insecure else ["--root-certificates", str(tls.ca_cert)]
    return cmd


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_app(folder: Path, superlink: str, tls: TLS) -> tuple[Path, dict[str, str]]:
    """The Flower app folder and the environment (``FLWR_HOME`` with the connection) for ``flwr run``."""
    app = folder / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "pyproject.toml").write_text(APP_PYPROJECT)
    home = folder / "flwr_home"
    home.mkdir(parents=True, exist_ok=True)
    conn = [f"address = {_toml_str(client_address(superlink))}"]
    conn.append("insecure = true" if tls.insecure else f"root-certificates = {_toml_str(str(Path(tls.ca_cert).resolve()))}")
    (home / "config.toml").write_text('[superlink]\ndefault = "dermino"\n\n[superlink.dermino]\n' + "\n".join(conn) + "\n")
    return app, flower_env(FLWR_HOME=str(home.resolve()))


def wait_for_file(path: Path, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.5)
    return path.exists()


def run_server(config: str, out: str | Path, *, address: str, tls: TLS, timeout: float = 24 * 3600) -> int:
    """Start the SuperLink, submit the app, wait until the run wrote ``history.json``, stop the SuperLink."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").unlink(missing_ok=True)
    app, env = write_app(out / "flower", address, tls)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / "superlink.log", "ab") as fh:
        link = subprocess.Popen(superlink_command(address, tls), stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        run_config = f"config={_toml_str(str(Path(config).resolve()))} out-dir={_toml_str(str(out))}"
        cmd = [executable("flwr"), "run", str(app), "dermino", "--run-config", run_config]
        for attempt in range(30):  # the Control API needs a moment to come up
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out)
            if res.returncode == 0:
                break
            if link.poll() is not None:
                raise RuntimeError(f"SuperLink exited early; see {logs / 'superlink.log'}")
            log.debug("flwr run attempt %d failed: %s", attempt, res.stdout[-500:] + res.stderr[-500:])
            time.sleep(1.0)
        else:
            raise RuntimeError(f"flwr run failed: {res.stdout[-2000:]}{res.stderr[-2000:]}")
        log.info("run submitted to the SuperLink at %s; waiting for it to finish", address)
        if not wait_for_file(out / "history.json", timeout, link):
            raise RuntimeError(f"the run did not finish (no {out / 'history.json'}); see {logs}")
        return 0
    finally:
        stop(link)


class _Terminated(Exception):
    """SIGTERM arrived (a service manager, ``kill``, a container stop)."""


def _raise_terminated(signum, frame) -> None:  # noqa: ANN001
    raise _Terminated


def run_client(config: str, partition: str, superlink: str, runtime: str, tls: TLS) -> int:
    """Run a SuperNode for this site until it is stopped (Ctrl-C or SIGTERM); the SuperNode (and
    the ClientApp processes it started, one session) are stopped with it, never left orphaned."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    proc = subprocess.Popen(supernode_command(superlink, config, partition, runtime, tls), env=flower_env(),
                            start_new_session=True)
    try:
        return proc.wait()
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        stop(proc)
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Terminate a process we started (and its own children when it leads a session)."""
    if proc.poll() is not None:
        return
    leads = _leads_session(proc)
    _signal(proc, signal.SIGTERM, leads)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        _signal(proc, signal.SIGKILL, leads)
        proc.wait()


def _leads_session(proc: subprocess.Popen) -> bool:
    if not hasattr(os, "killpg"):  # Windows: no sessions
        return False
    try:
        return os.getsid(proc.pid) == proc.pid
    except OSError:
        return False


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)  # the process and the children it started in its session
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass
