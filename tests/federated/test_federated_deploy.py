"""Real separate processes on 127.0.0.1: a SuperLink (``dermino federate server``) and three SuperNodes
(``flower-supernode`` as ``dermino federate client`` starts it), over TLS with a self-signed CA made here.
One SuperNode is killed after the first round: the server stays up and finishes the run with the others,
and the global model beats its round-0 start on the sites' validation rows.

Why that last check is reliable: features (seeded random-init backbone, eval crops), splits and every
seed are fixed, so the outcome depends only on which sites reply in which round. Round 1 waits for all
three (``start_clients``) and the killed site is PH2 (3 validation rows). Measured with the in-process
simulation for every such pattern at this lr / epochs, the count-weighted validation cross-entropy drops
by 0.142-0.143 nats (threshold 0.05); larger steps (lr 3e-3, 2 epochs) overshoot on the sites whose classes
the others lack and can end above the start. A site missing round 1 (ISIC 2017, the only site with its
label) is the one pattern that does not beat the start, so round 1 must have all three. That is what
made this check flaky before: flwr sized round 1's sample from the sites connected *before* waiting for
``start_clients`` and then sampled 2 of the 3 at random; the strategy now waits first (strategies.py)
and the server seeds the sampler.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _net import free_ports

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def make_certificates(folder: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1/localhost signed by it (cryptography package)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dermino test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    files = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in files.items()}


def wait_for(path: Path, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not path.exists():
        assert proc.poll() is None, f"server exited early with {proc.returncode}"
        time.sleep(0.5)
    assert path.exists(), f"{path} did not appear within {timeout}s"


def test_superlink_and_supernodes_with_tls_survive_a_killed_client(tmp_path):
    from dermino.data.sample import sample_manifests
    from dermino.federated.config import load_federated_config
    from dermino.federated.deployment import TLS, flower_env, supernode_command
    from dermino.federated.partitions import class_names, client_data, client_names, load_manifests
    from dermino.federated.server_app import load_global
    from dermino.federated.task import evaluate_head
    from dermino.federated.trainable import site_inputs

    manifests = sample_manifests(tmp_path / "manifests", seed=0)
    config = tmp_path / "federated.yaml"
    config.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "run"), "progress": False,
        "backbone": {"overrides": {"depth": 2}},
        "embed": {"image_size": 56, "pool": "mean", "cache_dir": str(tmp_path / "cache")},
        "data": {"manifests": [str(p) for p in manifests.values()]},
        "train": {"lr": 5e-4, "local_epochs": 2, "seed": 0},
        "strategy": {"rounds": 2, "min_clients": 2, "start_clients": 3, "round_timeout": 300, "fraction_evaluate": 0.0},
    }))
    cfg = load_federated_config(str(config))
    df = load_manifests(cfg.data, tmp_path)
    clients = client_names(df, cfg.data)
    classes = class_names(df, cfg.data, clients)
    sites = {c: client_data(df, cfg.data, c, classes) for c in clients}
    feats = {c: site_inputs(cfg, d) for c, d in sites.items()}  # warm the cache the sites share

    certs = make_certificates(tmp_path / "certs")
    link, *appio = free_ports(4)
    env = flower_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
                     HF_HUB_OFFLINE="1")
    logs = tmp_path / "logs"
    logs.mkdir()
    nodes: list[subprocess.Popen] = []
    server = None
    try:
        for i, c in enumerate(clients):
            cmd = supernode_command(f"127.0.0.1:{link}", str(config), c, f"127.0.0.1:{appio[i]}",
                                    TLS(ca_cert=certs["ca"]))
            with open(logs / f"supernode_{c}.log", "wb") as fh:
                nodes.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                              start_new_session=True))
        out = tmp_path / "run"
        with open(logs / "server.log", "wb") as fh:
            server = subprocess.Popen(
                [sys.executable, "-m", "dermino.cli", "federate", "server", "--config", str(config),
                 "--out", str(out), "--address", f"127.0.0.1:{link}", "--ca-cert", certs["ca"], "--cert", certs["cert"],
                 "--key", certs["key"], "--timeout", "400"],
                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_for(out / "global" / "round_001.pt", 300, server)
        os.killpg(nodes[-1].pid, signal.SIGKILL)  # a site dies mid-run, without saying goodbye
        nodes[-1].wait()
        assert server.wait(400) == 0, (logs / "server.log").read_text()[-3000:]
    finally:
        for p in [*nodes, *([server] if server else [])]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)

    link_log = (out / "logs" / "superlink.log").read_text()
    assert "--insecure" not in link_log and "TLS disabled" not in link_log
    history = json.loads((out / "history.json").read_text())
    assert set(history["train"]) == {"1", "2"}
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    good = {(r["round"], r["stage"]): 0 for r in rows}
    for r in rows:
        good[(r["round"], r["stage"])] += "error" not in r
    # round 1 waits for all three sites; round 2 runs after one site was killed: the run finishes with the two left
    assert good[(1, "train")] == 3, f"a site missed round 1 (timeout {cfg.strategy.round_timeout}s): {rows}"
    assert good[(2, "train")] == 2
    head, got_classes, rnd = load_global(out / "global" / "latest.pt")
    assert rnd == 2 and got_classes == classes
    assert torch.load(out / "global" / "round_002.pt", weights_only=True)["round"] == 2
    # the global model beats its random initialisation (the round-0 model, same head init) on the
    # clients' validation rows: count-weighted cross-entropy
    start, _, _ = load_global(out / "global" / "round_000.pt")
    gain, total = 0.0, 0
    for c, d in sites.items():
        va = d.rows("val")
        before, after = (evaluate_head(m, feats[c][va], d.y[va])["loss"] for m in (start, head))
        assert np.isfinite(after)
        gain, total = gain + (before - after) * len(va), total + len(va)
    assert gain / total > 0.05, f"validation cross-entropy fell by only {gain / total:.4f} nats"
    assert np.isfinite(history["seconds_per_round"]["2"])
