"""The MLflow UI on this project's store, on a free port: ``make ui`` (or ``python -m minirec.ui [--port N]``).

    make ui
    [ui] MLflow UI for sqlite:///.../mlflow.db starting on http://127.0.0.1:38211 ...
    [ui] ready: http://127.0.0.1:38211  (Ctrl-C stops it)

Port 5000 when it is free (the comparison report links there), else a free one. One worker and no background
job runner, so it answers in seconds on a 2-core machine; the address is printed
once the server answers its health check.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from minirec.tracking import configure_environment


DEFAULT_PORT = 5000  # the address the comparison report links to (MINIREC_UI_URL overrides it)


def free_port(preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` when nothing listens there, else any free port."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minirec.ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help=f"port to serve on (default: {DEFAULT_PORT} when free, "
                        "else a free one)")
    args = parser.parse_args(argv)
    uri = configure_environment()
    if uri.startswith("http"):
        print(f"[ui] the tracking store is a server already: open {uri}")
        return 0
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    print(f"[ui] MLflow UI for {uri} starting on {url} ...", flush=True)
    server = subprocess.Popen(command, env=env)
    try:
        while not answers(url):
            if server.poll() is not None:
                return server.returncode
            time.sleep(0.5)
        print(f"[ui] ready: {url}  (Ctrl-C stops it)", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
