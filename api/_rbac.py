"""RBAC decisions as pure functions, Kubernetes-style, scoped per Herd.

The API server authenticates a request into a :class:`Subject`, describes it as
:class:`RequestAttributes`, and asks :func:`authorize` against a frozen :class:`PolicySnapshot` built
from the Role/ClusterRole/RoleBinding/ClusterRoleBinding objects in the Barn. Nothing here does I/O
or reads the clock, so decisions are tested by the table (tests/unit/api/test_rbac*.py).
Writes of RBAC objects additionally pass :func:`check_rbac_write` (escalation prevention), and
agents pass :func:`authorize_node` (they read only their Node, their Slices and those Slices'
Secrets). Rules are additive: there is no deny rule, and everything not granted is denied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from runink.schemas import errors

Verb = Literal[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "reveal",
    "escalate",
    "bind",
    "impersonate",
]
VERBS: Final[frozenset[str]] = frozenset(
    (
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "reveal",
        "escalate",
        "bind",
        "impersonate",
    )
)

#: The group whose members bypass RBAC entirely (Kubernetes' privileged-group authorizer).
MASTERS_GROUP: Final = "system:masters"
AUTHENTICATED_GROUP: Final = "system:authenticated"
NODES_GROUP: Final = "system:nodes"
SA_PREFIX: Final = "system:serviceaccount:"
SA_GROUP: Final = "system:serviceaccounts"


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is asking, as established by authentication.

    ``service_account`` is ``(herd, name)`` for a Slice's token and ``node`` the Node name for an
    agent's certificate; ``user`` is then the derived ``system:serviceaccount:<herd>:<name>`` /
    ``system:node:<name>`` (use the constructors below so both stay consistent).
    """

    user: str
    groups: frozenset[str] = frozenset()
    service_account: tuple[str, str] | None = None
    node: str | None = None

    @classmethod
    def for_service_account(cls, herd: str, name: str) -> Subject:
        return cls(
            user=f"{SA_PREFIX}{herd}:{name}",
            groups=frozenset((SA_GROUP, f"{SA_GROUP}:{herd}", AUTHENTICATED_GROUP)),
            service_account=(herd, name),
        )

    @classmethod
    def for_node(cls, name: str) -> Subject:
        return cls(
            user=f"system:node:{name}",
            groups=frozenset((NODES_GROUP, AUTHENTICATED_GROUP)),
            node=name,
        )

    def describe(self) -> str:
        groups = ", ".join(sorted(self.groups)) or "none"
        return f'user "{self.user}" (groups: {groups})'


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """What is asked: ``verb`` on ``resource`` (plural, e.g. ``"pipelineruns"``) / ``subresource``.

    ``herd`` is None for cluster-scoped kinds and for requests across all herds; ``name`` is None
    for ``list``/``watch`` of a collection and for ``create`` without a name. ``node_selector`` is
    set by the server when it restricts a list/watch to objects with ``spec.nodeName`` equal to it
    (the only collection reads the node authorizer allows).
    """

    verb: str
    resource: str
    subresource: str | None = None
    herd: str | None = None
    name: str | None = None
    node_selector: str | None = None

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def describe(self) -> str:
        target = f'"{self.full_resource}"' + (f' "{self.name}"' if self.name else "")
        where = f'in herd "{self.herd}"' if self.herd else "cluster-wide"
        return f"{self.verb} {target} {where}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True, slots=True)
class Rule:
    """One PolicyRule: ``verbs`` x ``resources`` (``"*"``, ``"x/sub"``, ``"x/*"``, ``"*/sub"``)
    restricted to ``resource_names`` when non-empty (which never matches an unnamed request, so it
    cannot restrict ``create`` or ``list``)."""

    verbs: frozenset[str]
    resources: frozenset[str]
    resource_names: frozenset[str] = frozenset()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
        return cls(
            verbs=frozenset(_str_list(d.get("verbs"), "verbs")),
            resources=frozenset(_str_list(d.get("resources"), "resources")),
            resource_names=frozenset(_str_list(d.get("resourceNames", []), "resourceNames")),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"verbs": sorted(self.verbs), "resources": sorted(self.resources)}
        if self.resource_names:
            d["resourceNames"] = sorted(self.resource_names)
        return d

    def matches(self, attrs: RequestAttributes) -> bool:
        if "*" not in self.verbs and attrs.verb not in self.verbs:
            return False
        if not _resource_matches(self.resources, attrs.resource, attrs.subresource):
            return False
        if self.resource_names:
            return attrs.name is not None and attrs.name in self.resource_names
        return True


def _resource_matches(rule_resources: frozenset[str], resource: str, sub: str | None) -> bool:
    # As Kubernetes' ResourceMatches: "*" matches everything including subresources, a bare
    # resource does NOT match its subresources, "x/*" and "*/sub" match subresources.
    if "*" in rule_resources:
        return True
    if sub is None:
        return resource in rule_resources
    return (
        f"{resource}/{sub}" in rule_resources
        or f"{resource}/*" in rule_resources
        or f"*/{sub}" in rule_resources
    )


def _str_list(v: object, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise errors.Invalid(f"{what} must be a list of non-empty strings")
    return list(v)


@dataclass(frozen=True, slots=True)
class _Grant:
    """The rules one binding gives its subjects; ``herd`` None = everywhere (ClusterRoleBinding)."""

    binding_kind: str
    binding_name: str
    role_kind: str
    role_name: str
    herd: str | None
    rules: tuple[Rule, ...]

    def describe(self) -> str:
        where = f' in herd "{self.herd}"' if self.herd else ""
        return f'{self.binding_kind} "{self.binding_name}"{where} of {self.role_kind} "{self.role_name}"'


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """An immutable, indexed view of every RBAC object at one Barn revision.

    Objects that fail validation are skipped (rules are additive, so skipping can only deny more)
    and listed in ``skipped`` as ``(kind, herd, name, reason)`` so the server can log them.
    """

    by_user: Mapping[str, tuple[_Grant, ...]]
    by_group: Mapping[str, tuple[_Grant, ...]]
    skipped: tuple[tuple[str, str | None, str, str], ...] = ()
    roles: Mapping[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict)
    cluster_roles: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)

    @classmethod
    def from_objects(
        cls,
        roles: Iterable[Mapping[str, Any]],
        cluster_roles: Iterable[Mapping[str, Any]],
        role_bindings: Iterable[Mapping[str, Any]],
        cluster_role_bindings: Iterable[Mapping[str, Any]],
        *,
        include_defaults: bool = True,
    ) -> PolicySnapshot:
        """Index the objects; the default ClusterRoles/bindings are added unless a stored object
        of the same name replaces them (``include_defaults=False`` leaves them out)."""
        skipped: list[tuple[str, str | None, str, str]] = []
        role_map: dict[tuple[str, str], tuple[Rule, ...]] = {}
        crole_map: dict[str, tuple[Rule, ...]] = {}
        if include_defaults:
            for default in DEFAULT_CLUSTER_ROLES:
                crole_map[default["metadata"]["name"]] = _rules_of(default)
        for obj in roles:
            try:
                herd, name = _herd_name(obj, namespaced=True)
                role_map[(herd, name)] = _rules_of(obj)
            except errors.Invalid as e:
                skipped.append(_skip(obj, "Role", e))
        for obj in cluster_roles:
            try:
                _, name = _herd_name(obj, namespaced=False)
                crole_map[name] = _rules_of(obj)
            except errors.Invalid as e:
                skipped.append(_skip(obj, "ClusterRole", e))

        by_user: dict[str, list[_Grant]] = {}
        by_group: dict[str, list[_Grant]] = {}

        def add(obj: Mapping[str, Any], kind: str, herd: str | None, name: str) -> None:
            ref = obj.get("roleRef")
            if not isinstance(ref, Mapping):
                raise errors.Invalid("roleRef is required")
            rkind, rname = ref.get("kind"), ref.get("name")
            if rkind == "ClusterRole" and isinstance(rname, str):
                rules = crole_map.get(rname, ())
            elif rkind == "Role" and herd is not None and isinstance(rname, str):
                rules = role_map.get((herd, rname), ())
            else:
                raise errors.Invalid(f"roleRef must name a Role or ClusterRole, not {rkind!r}")
            grant = _Grant(kind, name, rkind, rname, herd, rules)
            for subj in _subjects(obj, herd):
                target = by_group if subj[0] == "Group" else by_user
                target.setdefault(subj[1], []).append(grant)

        for obj in role_bindings:
            try:
                herd, name = _herd_name(obj, namespaced=True)
                add(obj, "RoleBinding", herd, name)
            except errors.Invalid as e:
                skipped.append(_skip(obj, "RoleBinding", e))
        crbs = list(cluster_role_bindings)
        if include_defaults:
            stored = {_meta_name(o) for o in crbs}
            crbs.extend(b for b in DEFAULT_CLUSTER_ROLE_BINDINGS if _meta_name(b) not in stored)
        for obj in crbs:
            try:
                _, name = _herd_name(obj, namespaced=False)
                add(obj, "ClusterRoleBinding", None, name)
            except errors.Invalid as e:
                skipped.append(_skip(obj, "ClusterRoleBinding", e))
        return cls(
            by_user={k: tuple(v) for k, v in by_user.items()},
            by_group={k: tuple(v) for k, v in by_group.items()},
            skipped=tuple(skipped),
            roles=role_map,
            cluster_roles=crole_map,
        )

    def grants_for(self, subject: Subject) -> tuple[_Grant, ...]:
        out = list(self.by_user.get(subject.user, ()))
        for g in sorted(subject.groups):
            out.extend(self.by_group.get(g, ()))
        return tuple(out)

    def rules_for(self, subject: Subject, herd: str | None) -> tuple[Rule, ...]:
        """Every rule the subject holds in ``herd`` (cluster-wide rules only when None)."""
        return tuple(
            r for g in self.grants_for(subject) if g.herd is None or g.herd == herd for r in g.rules
        )


def _meta_name(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    return meta.get("name") if isinstance(meta, Mapping) else None


def _herd_name(obj: Mapping[str, Any], *, namespaced: bool) -> tuple[str, str]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        raise errors.Invalid("metadata.name is required")
    herd = meta.get("herd")
    if namespaced and not (isinstance(herd, str) and herd):
        raise errors.Invalid("metadata.herd is required")
    return (str(herd) if namespaced else ""), str(meta["name"])


def _rules_of(obj: Mapping[str, Any]) -> tuple[Rule, ...]:
    rules = obj.get("rules", [])
    if not isinstance(rules, list):
        raise errors.Invalid("rules must be a list")
    return tuple(Rule.from_dict(r) for r in rules if isinstance(r, Mapping))


def _subjects(obj: Mapping[str, Any], herd: str | None) -> list[tuple[str, str]]:
    """Binding subjects as ("User"|"Group", name); a ServiceAccount becomes its user name."""
    out: list[tuple[str, str]] = []
    for s in obj.get("subjects") or []:
        if not isinstance(s, Mapping):
            raise errors.Invalid("subjects[] must be objects")
        kind, name = s.get("kind"), s.get("name")
        if not isinstance(name, str) or not name:
            raise errors.Invalid("subjects[].name is required")
        if kind in ("User", "Group"):
            out.append((kind, name))
        elif kind == "ServiceAccount":
            sa_herd = s.get("herd") or herd  # a RoleBinding's SA defaults to its own herd
            if not sa_herd:
                raise errors.Invalid(
                    "a ServiceAccount subject of a ClusterRoleBinding needs a herd"
                )
            out.append(("User", f"{SA_PREFIX}{sa_herd}:{name}"))
        else:
            raise errors.Invalid(
                f"subjects[].kind must be User, Group or ServiceAccount, not {kind!r}"
            )
    return out


def _skip(obj: Mapping[str, Any], kind: str, e: errors.Invalid) -> tuple[str, str | None, str, str]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    return (kind, meta.get("herd"), str(meta.get("name")), e.message)


# --- decisions -------------------------------------------------------------------------------


def authorize(subject: Subject, attrs: RequestAttributes, policy: PolicySnapshot) -> Decision:
    """Allow when ``system:masters`` or when any rule bound to the subject in scope matches.

    RoleBindings grant only inside their herd; ClusterRoleBindings grant in every herd and on
    cluster-scoped resources. The reason names the granting binding, or what was refused.
    """
    if attrs.verb not in VERBS and attrs.verb != "*":
        return Decision(False, f'unknown verb "{attrs.verb}"')
    if MASTERS_GROUP in subject.groups:
        return Decision(True, f'allowed: member of group "{MASTERS_GROUP}"')
    for grant in policy.grants_for(subject):
        if grant.herd is not None and grant.herd != attrs.herd:
            continue
        if any(r.matches(attrs) for r in grant.rules):
            return Decision(True, f"allowed by {grant.describe()}")
    return Decision(False, f"{subject.describe()} cannot {attrs.describe()}")


def _atoms(rule: Rule) -> Iterable[tuple[str, str, str | None]]:
    names: Iterable[str | None] = sorted(rule.resource_names) or [None]
    for verb in sorted(rule.verbs):
        for res in sorted(rule.resources):
            for n in names:
                yield verb, res, n


def _covers(owner: Sequence[Rule], verb: str, resource: str, name: str | None) -> bool:
    # As Kubernetes' validation.Covers: a wildcard in the granted rule must be held as a literal
    # wildcard ("pipelines" does not cover "*"), and an unrestricted grant needs an unrestricted rule.
    for r in owner:
        if "*" not in r.verbs and verb not in r.verbs:
            continue
        if "*" not in r.resources and resource not in r.resources:
            base, _, sub = resource.partition("/")
            literal_sub = sub and sub != "*" and base != "*"
            if not (literal_sub and (f"{base}/*" in r.resources or f"*/{sub}" in r.resources)):
                continue
        if r.resource_names and (name is None or name not in r.resource_names):
            continue
        return True
    return False


def check_escalation(
    subject: Subject,
    role_rules_being_granted: Iterable[Rule | Mapping[str, Any]],
    herd: str | None,
    policy: PolicySnapshot,
    *,
    via: Literal["role", "binding"] = "role",
    role_kind: Literal["Role", "ClusterRole"] = "Role",
    role_name: str | None = None,
) -> Decision:
    """May ``subject`` grant these rules in ``herd`` (None = cluster-wide)?

    Yes when it already holds every permission they grant there; otherwise only when it holds
    ``escalate`` (``via="role"``: creating/updating the role) or ``bind`` (``via="binding"``) on
    the role ``role_kind``/``role_name``. This check comes in addition to ``authorize`` for the
    write itself.
    """
    if MASTERS_GROUP in subject.groups:
        return Decision(True, f'allowed: member of group "{MASTERS_GROUP}"')
    special = "escalate" if via == "role" else "bind"
    if role_name is not None:
        resource = "roles" if role_kind == "Role" else "clusterroles"
        attrs = RequestAttributes(special, resource, herd=herd, name=role_name)
        d = authorize(subject, attrs, policy)
        if d.allowed:
            return Decision(True, f"{special} permitted: {d.reason}")
    held = policy.rules_for(subject, herd)
    rules = [r if isinstance(r, Rule) else Rule.from_dict(r) for r in role_rules_being_granted]
    missing = [
        f"{v} {res}" + (f"/{n}" if n else "")
        for rule in rules
        for v, res, n in _atoms(rule)
        if not _covers(held, v, res, n)
    ]
    if not missing:
        return Decision(True, "allowed: the subject holds every permission granted")
    where = f'in herd "{herd}"' if herd else "cluster-wide"
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return Decision(
        False,
        f"escalation refused: {subject.describe()} does not hold [{shown}] {where} and may not "
        f"{special} {role_kind} {role_name!r}",
    )


def check_rbac_write(subject: Subject, obj: Mapping[str, Any], policy: PolicySnapshot) -> Decision:
    """Escalation check for a create/update of any RBAC object (other kinds are allowed).

    For a binding, the rules granted are those of its ``roleRef`` in ``policy``; a RoleBinding to
    a ClusterRole grants them in the binding's herd only.
    """
    kind = obj.get("kind")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    herd = meta.get("herd") if kind in ("Role", "RoleBinding") else None
    name = meta.get("name")
    if kind in ("Role", "ClusterRole"):
        rules = _rules_of(obj)
        return check_escalation(
            subject, rules, herd, policy, via="role", role_kind=kind, role_name=name
        )
    if kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = obj.get("roleRef") or {}
        rkind, rname = ref.get("kind"), str(ref.get("name"))
        if rkind == "ClusterRole":
            rules = policy.cluster_roles.get(rname, ())
        elif rkind == "Role" and herd:
            rules = policy.roles.get((str(herd), rname), ())
        else:
            return Decision(False, f"roleRef must name a Role or ClusterRole, not {rkind!r}")
        return check_escalation(
            subject, rules, herd, policy, via="binding", role_kind=rkind, role_name=rname
        )
    return Decision(True, "not an RBAC object")


def authorize_node(
    node_name: str,
    attrs: RequestAttributes,
    *,
    slices_bound: set[tuple[str, str]] | frozenset[tuple[str, str]],
    secrets_referenced: set[tuple[str, str]] | frozenset[tuple[str, str]],
) -> Decision:
    """The node authorizer: what an agent's certificate may do, from the Barn's current binding.

    ``slices_bound`` are the (herd, name) of Slices whose ``spec.nodeName`` is this node and
    ``secrets_referenced`` the Secrets those Slices reference. An agent may register, read and
    update its own Node (and its status); list/watch Slices only through a ``node_selector`` equal
    to its name, get them and update their status when bound to it; get and reveal only the
    referenced Secrets; and create Events. Everything else is denied here (the server may still
    consult RBAC for the ``system:nodes`` group).
    """
    v, res, sub, herd, name = attrs.verb, attrs.resource, attrs.subresource, attrs.herd, attrs.name
    who = f'node "{node_name}"'
    if res == "nodes":
        if name != node_name:
            return Decision(False, f"{who} may only access its own Node, not {name!r}")
        if sub is None and v in ("get", "watch", "create", "update", "patch"):
            return Decision(True, f"{who} accesses its own Node")
        if sub == "status" and v in ("get", "update", "patch"):
            return Decision(True, f"{who} updates its own Node status")
        return Decision(False, f"{who} cannot {attrs.describe()}")
    if res == "slices":
        if v in ("list", "watch") and name is None:
            if attrs.node_selector == node_name and sub is None:
                return Decision(True, f"{who} lists the Slices bound to it")
            return Decision(
                False, f"{who} may list/watch Slices only with spec.nodeName={node_name}"
            )
        key = (herd or "", name or "")
        if key not in slices_bound:
            return Decision(False, f'Slice "{key[1]}" in herd "{key[0]}" is not bound to {who}')
        if sub is None and v in ("get", "watch"):
            return Decision(True, f"{who} reads a Slice bound to it")
        if sub == "status" and v in ("get", "update", "patch"):
            return Decision(True, f"{who} updates the status of a Slice bound to it")
        return Decision(False, f"{who} cannot {attrs.describe()}")
    if res == "secrets":
        key = (herd or "", name or "")
        if sub is None and v in ("get", "reveal") and key in secrets_referenced:
            return Decision(True, f"{who} reads a Secret referenced by one of its Slices")
        return Decision(
            False, f'Secret "{key[1]}" in herd "{key[0]}" is not referenced by a Slice on {who}'
        )
    if res == "events" and v == "create" and sub is None:
        return Decision(True, f"{who} records an Event")
    return Decision(False, f"{who} cannot {attrs.describe()}")


# --- default roles ---------------------------------------------------------------------------

_READ: Final = ["get", "list", "watch"]
_WRITE: Final = ["create", "update", "patch", "delete"]
#: Herd-scoped kinds users manage (Secrets and RBAC kinds are handled separately below).
_WORKLOAD: Final = [
    "pipelines",
    "pipelineruns",
    "datasets",
    "qualityrules",
    "annotations",
    "gitsources",
    "serviceaccounts",
]
_STATUS_READ: Final = [
    "pipelines/status",
    "pipelineruns/status",
    "slices",
    "slices/status",
    "datasets/status",
    "qualityrules/status",
    "gitsources/status",
    "events",
]


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"runink.io/bootstrapping": "rbac-defaults"}},
        "rules": rules,
    }


DEFAULT_CLUSTER_ROLES: Final[tuple[dict[str, Any], ...]] = (
    _cluster_role("cluster-admin", [{"verbs": ["*"], "resources": ["*"]}]),
    _cluster_role(
        "admin",
        [
            {
                "verbs": [*_READ, *_WRITE],
                "resources": [*_WORKLOAD, "secrets", "roles", "rolebindings"],
            },
            {"verbs": ["reveal"], "resources": ["secrets"]},
            {"verbs": _READ, "resources": _STATUS_READ},
            {"verbs": ["delete"], "resources": ["events"]},
        ],
    ),
    _cluster_role(
        "edit",
        [
            {"verbs": [*_READ, *_WRITE], "resources": _WORKLOAD},
            # Write-only for values: get/list return keys and sizes, never values (no "reveal").
            {"verbs": [*_READ, *_WRITE], "resources": ["secrets"]},
            {"verbs": _READ, "resources": _STATUS_READ},
        ],
    ),
    _cluster_role(
        "view",
        [{"verbs": _READ, "resources": [*_WORKLOAD, *_STATUS_READ]}],
    ),
)

DEFAULT_CLUSTER_ROLE_BINDINGS: Final[tuple[dict[str, Any], ...]] = (
    {
        "apiVersion": "runink.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": "cluster-admin",
            "labels": {"runink.io/bootstrapping": "rbac-defaults"},
        },
        "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": MASTERS_GROUP}],
    },
)

__all__ = [
    "AUTHENTICATED_GROUP",
    "DEFAULT_CLUSTER_ROLES",
    "DEFAULT_CLUSTER_ROLE_BINDINGS",
    "MASTERS_GROUP",
    "NODES_GROUP",
    "VERBS",
    "Decision",
    "PolicySnapshot",
    "RequestAttributes",
    "Rule",
    "Subject",
    "Verb",
    "authorize",
    "authorize_node",
    "check_escalation",
    "check_rbac_write",
]
