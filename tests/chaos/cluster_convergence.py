"""Whether a nats-server cluster is whole again, from every node's monitoring endpoint.

Whole (converged): every node is healthy (`/healthz`: its streams and consumers are
current), and the nodes agree on every raft group `/jsz` reports (the meta group, each
stream, each consumer): one leader, and in its view every other node a current replica.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from chaos_bus import wait_for
from loopback_cluster import Cluster

JSZ = "/jsz?accounts=true&streams=true&consumers=true"
"""What `Convergence` asks each node: the meta group, every stream and every consumer."""


@dataclass(frozen=True)
class GroupView:
    """One raft group as one node sees it: its leader, the other peers, which are current."""

    leader: str
    peers: frozenset[str]
    current: frozenset[str]

    @classmethod
    def of(cls, cluster: dict[str, Any]) -> GroupView:
        """From the `cluster` (or `meta_cluster`) object of a `/jsz` answer."""
        replicas = cluster.get("replicas") or []
        return cls(
            leader=cluster.get("leader") or "",
            peers=frozenset(r["name"] for r in replicas),
            current=frozenset(r["name"] for r in replicas if r.get("current")),
        )


def raft_groups(jsz: dict[str, Any]) -> dict[str, GroupView]:
    """Every raft group a node's `/jsz` answer reports: meta, each stream, each consumer."""
    found = {"meta": GroupView.of(jsz.get("meta_cluster") or {})}
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            found[f"stream {stream['name']}"] = GroupView.of(stream.get("cluster") or {})
            for consumer in stream.get("consumer_detail") or []:
                name = f"consumer {stream['name']} > {consumer['name']}"
                found[name] = GroupView.of(consumer.get("cluster") or {})
    return found


def _get_json(url: str, timeout_s: float) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET on loopback (an error status has a JSON body too)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:  # noqa: S310 - http on loopback
            return int(answer.status), json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def disagreement(views: dict[str, dict[str, GroupView]], nodes: Iterable[str]) -> str | None:
    """What keeps these nodes' views from agreeing, or None when they agree.

    Agreeing: each node knows every replicated group, all name the same leader (one of
    `nodes`), and in that leader's view every other node is a current replica. A group that
    only one node reports and that has no peers is R1 (an ordered consumer, say): skipped.
    """
    nodes = set(nodes)
    for name in sorted(set().union(*views.values())):
        seen = {node: view[name] for node, view in views.items() if name in view}
        if len(seen) == 1 and not next(iter(seen.values())).peers:
            continue
        if nodes - seen.keys():
            return f"{name}: unknown to {sorted(nodes - seen.keys())}"
        leaders = {view.leader for view in seen.values()}
        leader = leaders.pop()
        if leaders or leader not in nodes:
            return f"{name}: leaders {sorted({leader, *leaders})}"
        behind = nodes - {leader} - seen[leader].current
        if behind:
            return f"{name}: {sorted(behind)} not current (leader {leader})"
    return None


class Convergence:
    """Reads the cluster's nodes' monitoring endpoints: `/healthz` and `/jsz`."""

    def __init__(self, cluster: Cluster, timeout_s: float = 1.0) -> None:
        """Give a node `timeout_s` to answer each request."""
        self.cluster = cluster
        self.timeout_s = timeout_s

    async def views(self, nodes: Iterable[str]) -> dict[str, dict[str, GroupView]]:
        """The raft groups each of `nodes` reports; raises OSError when one does not answer."""
        names = list(nodes)
        urls = [self.cluster.monitor_url(name) + JSZ for name in names]
        answers = await asyncio.gather(
            *(asyncio.to_thread(_get_json, url, self.timeout_s) for url in urls)
        )
        return {name: raft_groups(body) for name, (_, body) in zip(names, answers, strict=True)}

    async def problem(
        self, nodes: Iterable[str] | None = None, groups: set[str] | None = None
    ) -> str | None:
        """Why the cluster (or these of its nodes) has not converged, or None when it has.

        Converged: every node is healthy (`/healthz`: its streams and consumers are current)
        and the nodes agree on every group (see `disagreement`). With `groups`, only that
        the nodes agree on these groups (names as in `raft_groups`).
        """
        names = list(nodes or self.cluster.NAMES)
        try:
            for name in names if groups is None else []:
                status, body = await asyncio.to_thread(
                    _get_json, self.cluster.monitor_url(name) + "/healthz", self.timeout_s
                )
                if status != HTTPStatus.OK:
                    return f"{name}: {body.get('error', status)}"
            views = await self.views(names)
        except (OSError, ValueError) as exc:  # not listening yet, or an answer cut short
            return f"no answer: {exc!r}"
        if groups is not None:
            views = {n: {g: v for g, v in view.items() if g in groups} for n, view in views.items()}
        return disagreement(views, names)

    async def wait(
        self,
        timeout_s: float,
        what: str,
        nodes: Iterable[str] | None = None,
        groups: set[str] | None = None,
    ) -> None:
        """Wait until `problem(nodes, groups)` is None; the TimeoutError names the last one."""
        last: list[str | None] = [None]

        async def converged() -> bool:
            last[0] = await self.problem(nodes, groups)
            return last[0] is None

        try:
            await wait_for(converged, timeout_s, f"converged {what}", every_s=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {last[0]}") from None
