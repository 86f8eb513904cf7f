"""Fixtures for the controller runtime's unit tests: objects and a recording reconciler."""

from __future__ import annotations

from typing import Any

from runink.controllers import Request, Result


def obj(kind: str, name: str, herd: str | None = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "runink.io/v1",
        "kind": kind,
        "metadata": {"name": name, "herd": herd, "labels": {}},
        "spec": dict(spec),
    }


class Recorder:
    """A reconciler that records each request (and can be told to fail or to read the object)."""

    def __init__(self, client: Any = None) -> None:
        self.client = client
        self.calls: list[Request] = []
        self.seen: list[dict[str, Any]] = []
        self.fail: BaseException | None = None

    async def reconcile(self, request: Request) -> Result:
        self.calls.append(request)
        if self.client is not None:
            self.seen.append(await self.client.get(request.kind, request.name, request.herd))
        if self.fail is not None:
            raise self.fail
        return Result()
