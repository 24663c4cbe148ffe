"""One-command simulation: the real ServerApp and ClientApp, clients called in this process.

Flower's own simulation runtime needs Ray (``flwr[simulation]``), which is heavy for a laptop
or CI and slow to start on two cores. The strategy only talks to a :class:`Grid`, so a small
grid that hands each message to the ``ClientApp`` in-process runs the very same server and
client code paths (messages, records, strategies, error replies) without a SuperLink.
A client that raises is answered with an error reply, as a crashed SuperNode's would be.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from dermino.config import save_config
from dermino.federated.config import FederatedConfig
from dermino.federated.partitions import client_names, load_manifests

log = logging.getLogger(__name__)


class LocalGrid(Grid):
    """Delivers each message to a node's ``ClientApp`` call; keeps every reply (for inspection).

    In flwr 1.42 (not yet in 1.32) a ``Message`` takes its run and sender from ``TaskIdentity``, which the
    SuperLink's ``flwr-serverapp`` process sets; in-process we set it as the ServerApp's
    (``SUPERLINK_NODE_ID``), as Flower's own compat runner does. Client nodes are numbered
    from ``FIRST_NODE`` so none collides with the SuperLink's id.
    """

    FIRST_NODE = SUPERLINK_NODE_ID + 1

    def __init__(self, client_app: ClientApp, node_configs: list[dict], run_config: dict | None = None):
        self._run = Run.create_empty(run_id=1)
        self.client_app = client_app
        self.contexts = {
            self.FIRST_NODE + i: Context(run_id=1, node_id=self.FIRST_NODE + i, node_config=dict(nc),
                                         state=RecordDict(), run_config=dict(run_config or {}))
            for i, nc in enumerate(node_configs)
        }
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, self._run.run_id, SUPERLINK_NODE_ID
        self.down: set[int] = set()  # nodes that no longer answer (tests, failure drills)
        self._replies: dict[str, Message] = {}
        self.sent: list[Message] = []  # every reply a client produced, as the server received it
        self.instructions: list[Message] = []  # every message the server sent (what the clients were asked)

    def set_run(self, run: Run) -> None:
        self._run = run
        TaskIdentity.run_id = run.run_id

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            msg.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
            msg.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex
            node = msg.metadata.dst_node_id
            self.instructions.append(msg)
            received = Message(copy.deepcopy(msg.content), node, msg.metadata.message_type,
                               group_id=msg.metadata.group_id)  # the client gets a copy, never our object
            received.metadata.__dict__.update({k: v for k, v in msg.metadata.__dict__.items()
                                               if k in ("_run_id", "_src_node_id", "_message_id")})
            if node in self.down:
                reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, "node unavailable"), reply_to=msg)
            else:
                try:
                    reply = self.client_app(received, self.contexts[node])
                except Exception as exc:  # a crashing client must not stop the server
                    log.warning("client on node %d failed: %s", node, exc)
                    reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"),
                                    reply_to=msg)
            reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            self.sent.append(reply)
            self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


def simulate(cfg: FederatedConfig, grid_hook=None) -> dict:
    """Run the federation in this process; writes the run folder and returns the history.

    ``grid_hook(grid)`` may adjust the grid before the run (e.g. mark a node as down).
    """
    from dermino.federated.client_app import app as client_app
    from dermino.federated.server_app import run_federation

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "federated.yaml"
    save_config(cfg, cfg_path)
    clients = client_names(load_manifests(cfg.data, out), cfg.data)
    log.info("simulating %d clients (%s = %s)", len(clients), cfg.data.column, ", ".join(clients))
    grid = LocalGrid(client_app, [{"config": str(cfg_path), "partition": c} for c in clients],
                     {"config": str(cfg_path), "out-dir": str(out)})
    if grid_hook:
        grid_hook(grid)
    t = time.perf_counter()
    history = run_federation(grid, cfg, out)
    history["clients"] = {str(node): c for node, c in zip(grid.contexts, clients, strict=True)}
    history["seconds"] = time.perf_counter() - t
    import json

    (out / "history.json").write_text(json.dumps(history, indent=2, default=float))
    return history
