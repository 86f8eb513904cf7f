"""An example Runink plugin: a ``Greeting`` kind and the controller that answers it.

Importing this module registers the kind with ``runink.schemas`` (so ``runink apply/get/describe/
explain`` serve it with no change to the core); the entry point ``controllers`` hands the manager
the controller. The reconciler is level-triggered and idempotent: it computes the reply from the
spec and writes status only when it differs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Literal

from runink import schemas
from runink.controllers import (
    Client,
    Controller,
    PluginContext,
    Request,
    Result,
    TerminalError,
    set_condition,
)
from runink.schemas import errors


class GreetingSpec(schemas.Model):
    """Who to greet, and how."""

    name: str
    """Who is greeted."""
    excited: bool = False
    """End the reply with an exclamation mark."""


class GreetingStatus(schemas.Model):
    """What the controller answered."""

    reply: str | None = None
    """The greeting, written by the controller."""
    observed_generation: int | None = None
    """The spec generation the reply is for."""
    conditions: list[schemas.Condition] = []
    """Ready when the reply matches the spec."""


class Greeting(schemas.Model):
    """A friendly object that the example plugin answers."""

    api_version: Literal["example.runink.io/v1"] = "example.runink.io/v1"
    """Always example.runink.io/v1."""
    kind: Literal["Greeting"] = "Greeting"
    """Always Greeting."""
    metadata: schemas.ObjectMeta
    """Name, herd, labels."""
    spec: GreetingSpec
    """The request."""
    status: GreetingStatus | None = None
    """The answer."""


KIND = schemas.KindInfo(
    api_version="example.runink.io/v1",
    kind="Greeting",
    plural="greetings",
    singular="greeting",
    short_names=("gr",),
    namespaced=True,
    model=Greeting,
    columns=(
        schemas.Column("REPLY", ".status.reply"),
        schemas.Column("AGE", ".metadata.creationTimestamp", format="age"),
    ),
)

# Imported twice (tests, reloads): the kind is already there.
with contextlib.suppress(errors.AlreadyExists):
    schemas.register(KIND)


class GreetingReconciler:
    def __init__(self, client: Client) -> None:
        self.client = client

    async def reconcile(self, request: Request) -> Result:
        try:
            obj = await self.client.get(request.kind, request.name, request.herd)
        except errors.NotFound:
            return Result()  # deleted: nothing to clean up
        who = str((obj.get("spec") or {}).get("name", "")).strip()
        if not who:
            raise TerminalError("spec.name is empty: there is nobody to greet")
        reply = f"Hello, {who}{'!' if obj['spec'].get('excited') else '.'}"
        status = dict(obj.get("status") or {})
        changed = status.get("reply") != reply
        status["reply"] = reply
        candidate = {**obj, "status": status}
        changed |= set_condition(candidate, "Ready", "True", "Replied", reply)
        if changed:
            await self.client.update_status(candidate)
        return Result()


def controllers(ctx: PluginContext) -> Iterable[Controller]:
    """The entry point: the manager calls this with its client."""
    return [
        Controller.builder("greetings").for_kind("Greeting").build(GreetingReconciler(ctx.client))
    ]
