"""`mcnet-rt cluster` as a user runs it: a separate process joining a running Ray cluster (here a local one whose
node declares one GPU: Ray schedules on the declared count, the engine runs `small` on the CPU), serving the page
until SIGTERM, then removing its deployment. Loopback only; Ray is started and stopped here."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from support.cluster_helpers import NODE, local_cluster  # first: it keeps Ray's usage report off
from ray import serve
from support.serve_helpers import SERVE_ON_LOOPBACK, needs_isolation, seconds_to_stop

pytestmark = pytest.mark.slow  # a Ray cluster and the command as a process


@needs_isolation
def test_the_command_deploys_serves_the_page_and_removes_its_deployment_on_sigterm(tmp_path):
    with local_cluster(nodes=1, node={**NODE, "num_cpus": 2, "num_gpus": 1}) as address:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "RAY_USAGE_STATS_ENABLED": "0"}
        with open(tmp_path / "cluster.log", "w") as log:
            process = subprocess.Popen([sys.executable, "-c", SERVE_ON_LOOPBACK, "cluster", "--address", address,
                                        "--untrained", "small", "--device", "cpu", "--sessions-per-gpu", "2",
                                        "--port", "0", "--ice-server", "stun:stun.example.org:3478"],
                                       stdout=subprocess.PIPE, stderr=log, text=True, env=env)
            try:
                line = process.stdout.readline()  # after the engine is up
                assert line.startswith("serving on http://127.0.0.1:"), (line, (tmp_path / "cluster.log").read_text())
                url = line.split()[-1].rstrip("/")
                with urllib.request.urlopen(f"{url}/api/status", timeout=10) as response:
                    assert json.loads(response.read()) == {"calls": 0}
                with urllib.request.urlopen(f"{url}/api/config", timeout=10) as response:
                    assert json.loads(response.read()) == {"iceServers": [{"urls": "stun:stun.example.org:3478"}]}
                assert "mcnet-rt" in serve.status().applications
                assert seconds_to_stop(process, signal.SIGTERM, 60) < 60
                assert process.returncode == 128 + signal.SIGTERM
                assert "mcnet-rt" not in serve.status().applications
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
