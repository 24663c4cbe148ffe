"""FedAvg / FedProx from Flower, plus what a run must leave behind: per-client logs and the global model.

Flower's strategies already weight the aggregated parameters and metrics by each client's
``num-examples``. These subclasses only add bookkeeping: every reply's metrics are appended to
``rounds.jsonl`` keyed by node id (the per-client view), and the strategy tolerates lost clients
through ``min_*_nodes``: a round goes ahead with the replies that came within the timeout, and
with fewer than ``min_clients`` good replies the global model is left as it was.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg, FedProx

from dermino.federated.config import StrategySection

log = logging.getLogger(__name__)


class _Logged:
    """Mixin: log each client's reply (metrics only: that is all a client sends back)."""

    log_path: Path
    start_nodes: int = 0

    def _wait_for_nodes(self, server_round: int, grid) -> None:
        """Wait until the round's quota of sites is connected *before* Flower sizes its sample.

        flwr's ``FedAvg.configure_train`` computes the sample size from the nodes connected at that
        instant and only then waits for ``min_available_nodes``: with 2 of 3 sites up, it waits for
        the third and then samples 2 of the 3 at random, silently leaving one site out of the
        round. Round 1 waits for ``start_nodes`` sites, later rounds for ``min_available_nodes``
        (a site that died must not block the rest of the run).
        """
        wanted = max(self.start_nodes, self.min_available_nodes) if server_round == 1 else self.min_available_nodes  # type: ignore[attr-defined]
        waited = 0.0
        while len(list(grid.get_node_ids())) < wanted:
            if waited % 30 == 0:
                log.info("round %d: waiting for sites: %d of %d connected", server_round,
                         len(list(grid.get_node_ids())), wanted)
            time.sleep(1.0)
            waited += 1.0

    def configure_train(self, server_round: int, arrays, config, grid):
        self._wait_for_nodes(server_round, grid)
        return super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]

    def configure_evaluate(self, server_round: int, arrays, config, grid):
        self._wait_for_nodes(server_round, grid)
        return super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]

    def _log(self, server_round: int, stage: str, replies: list[Message]) -> None:
        rows = []
        for msg in replies:
            row = {"round": server_round, "stage": stage, "node": int(msg.metadata.src_node_id),
                   "time": time.time()}
            if msg.has_error():
                row["error"] = str(msg.error.reason)
            else:
                metrics = msg.content.metric_records.get("metrics")
                row.update({k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)})
            rows.append(row)
        with self.log_path.open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        self._log(server_round, "train", replies)
        good = sum(not m.has_error() for m in replies)
        if good < self.min_train_nodes:  # type: ignore[attr-defined]
            # too few sites to trust an average: keep the last good global model
            log.warning("round %d: %d good replies < min_clients %d; global model unchanged",
                        server_round, good, self.min_train_nodes)  # type: ignore[attr-defined]
            return None, None
        return super().aggregate_train(server_round, replies)  # type: ignore[misc]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        self._log(server_round, "evaluate", replies)
        return super().aggregate_evaluate(server_round, replies)  # type: ignore[misc]


class LoggedFedAvg(_Logged, FedAvg):
    pass


class LoggedFedProx(_Logged, FedProx):
    pass


def build_strategy(cfg: StrategySection, log_path: str | Path) -> FedAvg:
    """The configured strategy; ``min_clients`` is the fewest replies a round accepts."""
    common = dict(
        fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_clients, min_evaluate_nodes=cfg.min_clients if cfg.fraction_evaluate else 0,
        min_available_nodes=cfg.min_clients,
    )
    if cfg.name == "fedprox":
        strategy: FedAvg = LoggedFedProx(proximal_mu=cfg.proximal_mu, **common)
    else:
        strategy = LoggedFedAvg(**common)
    strategy.start_nodes = cfg.start_clients  # type: ignore[attr-defined]
    strategy.log_path = Path(log_path)  # type: ignore[attr-defined]
    strategy.log_path.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[attr-defined]
    return strategy


def arrays_to_numpy(arrays: ArrayRecord) -> dict:
    return {k: v.numpy() for k, v in arrays.items()}


__all__ = ["LoggedFedAvg", "LoggedFedProx", "MetricRecord", "arrays_to_numpy", "build_strategy"]
