"""``dermino federate simulate|server|client|compare``: federated fine-tuning from the command line."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("federate", help="federated fine-tuning with Flower (simulation or real processes)")
    sub = p.add_subparsers(dest="federate_command", metavar="MODE")
    sub.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", default=None, help="federated YAML (see configs/federated/)")
        q.add_argument("--set", dest="overrides", nargs="*", default=[],
                       help="overrides, e.g. strategy.name=fedprox strategy.rounds=5 data.column=dx_type")

    s = sub.add_parser("simulate", help="run server and clients in this process, then the comparison")
    common(s)
    s.add_argument("--no-compare", action="store_true", help="skip federated vs local vs pooled")
    s.set_defaults(func=_simulate)

    c = sub.add_parser("compare", help="federated vs each client alone vs pooled, from a finished run")
    common(c)
    c.add_argument("--run", default=None, help="run folder (default: out_dir of the config)")
    c.set_defaults(func=_compare)

    def tls(q: argparse.ArgumentParser, server: bool) -> None:
        q.add_argument("--insecure", action="store_true", help="no TLS (plain text; a trusted network only)")
        q.add_argument("--ca-cert", help="CA certificate that signed the SuperLink's certificate")
        if server:
            q.add_argument("--cert", help="SuperLink TLS certificate")
            q.add_argument("--key", help="SuperLink TLS private key")

    v = sub.add_parser("server", help="start a SuperLink, run the federation on the SuperNodes that connect")
    common(v)
    v.add_argument("--out", default=None, help="run folder (default: out_dir of the config)")
    v.add_argument("--address", "--fleet", dest="address", default="0.0.0.0:9092",
                   help="host:port of the SuperLink (flwr 1.4x: one HTTP port for the SuperNodes, flwr run and "
                        "the ServerApp)")
    v.add_argument("--timeout", type=float, default=24 * 3600, help="give up after this many seconds")
    tls(v, server=True)
    v.set_defaults(func=_server)

    n = sub.add_parser("client", help="start a SuperNode serving this site's partition")
    common(n)
    n.add_argument("--partition", required=True, help="this site's value of data.column")
    n.add_argument("--superlink", default="127.0.0.1:9092", help="SuperLink address (host:port)")
    n.add_argument("--runtime", "--clientappio", dest="runtime", default="127.0.0.1:9094",
                   help="this SuperNode's local Runtime API (host:port; one per SuperNode on a machine)")
    tls(n, server=False)
    n.set_defaults(func=_client)


def _cfg(args: argparse.Namespace):
    from dermino.federated.config import load_federated_config

    return load_federated_config(args.config, args.overrides)


def _tls(args: argparse.Namespace, server: bool):
    from pathlib import Path

    from dermino.federated.deployment import TLS

    if args.insecure:
        return TLS()
    files = {"--ca-cert": args.ca_cert}
    if server:
        files.update({"--cert": args.cert, "--key": args.key})
    missing = [k for k, v in files.items() if not v]
    if missing:
        raise ValueError(f"TLS needs {', '.join(missing)} (or --insecure on a trusted network)")
    for k, v in files.items():
        if not Path(v).is_file():
            raise FileNotFoundError(f"{k} {v}: file not found")
    return TLS(ca_cert=args.ca_cert, server_cert=getattr(args, "cert", None), server_key=getattr(args, "key", None))


def _simulate(args: argparse.Namespace) -> int:
    from dermino.federated.compare import compare
    from dermino.federated.simulation import simulate

    cfg = _cfg(args)
    history = simulate(cfg)
    print(json.dumps({"evaluate": history["evaluate"], "seconds_per_round": history["seconds_per_round"],
                      "clients": history["clients"]}, indent=2))
    if not args.no_compare:
        out = compare(cfg)
        print((out / "comparison.md").read_text())
    return 0


def _compare(args: argparse.Namespace) -> int:
    from dermino.federated.compare import compare

    out = compare(_cfg(args), args.run)
    print((out / "comparison.md").read_text())
    return 0


def _server(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dermino.config import save_config
    from dermino.federated.deployment import run_server

    cfg = _cfg(args)
    out = Path(args.out or cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = out / "federated.yaml"  # the server's settings, overrides applied
    save_config(cfg, resolved)
    return run_server(str(resolved), out, address=args.address, tls=_tls(args, server=True), timeout=args.timeout)


def _client(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dermino.config import save_config
    from dermino.federated.deployment import run_client

    cfg = _cfg(args)
    site_dir = Path(cfg.out_dir) / "site" / args.partition
    site_dir.mkdir(parents=True, exist_ok=True)
    resolved = site_dir / "federated.yaml"
    save_config(cfg, resolved)
    return run_client(str(resolved), args.partition, args.superlink, args.runtime, _tls(args, server=False))
