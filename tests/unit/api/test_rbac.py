"""RBAC decision tables: (subject, verb, resource, herd, name) -> allowed, as Kubernetes' rbac_test.go."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from runink.api import _rbac
from runink.api._rbac import RequestAttributes as A, Subject


def role(herd: str, name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Role", "metadata": {"name": name, "herd": herd}, "rules": list(rules)}


def crole(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ClusterRole", "metadata": {"name": name}, "rules": list(rules)}


def rb(herd: str, name: str, ref: tuple[str, str], *subjects: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "RoleBinding",
        "metadata": {"name": name, "herd": herd},
        "roleRef": {"kind": ref[0], "name": ref[1]},
        "subjects": list(subjects),
    }


def crb(name: str, ref: str, *subjects: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"kind": "ClusterRole", "name": ref},
        "subjects": list(subjects),
    }


def user(n: str) -> dict[str, str]:
    return {"kind": "User", "name": n}


def group(n: str) -> dict[str, str]:
    return {"kind": "Group", "name": n}


def sa(herd: str, n: str) -> dict[str, str]:
    return {"kind": "ServiceAccount", "name": n, "herd": herd}


ROLES = [
    role(
        "finance",
        "runner",
        {"verbs": ["get", "list"], "resources": ["pipelines"]},
        {"verbs": ["create"], "resources": ["pipelineruns"]},
        {"verbs": ["get", "reveal"], "resources": ["secrets"], "resourceNames": ["db-creds"]},
    ),
    role("finance", "status-writer", {"verbs": ["update"], "resources": ["pipelineruns/status"]}),
    role(
        "finance",
        "release",
        {"verbs": ["get", "update"], "resources": ["pipelines"], "resourceNames": ["nightly"]},
    ),
    role(
        "finance",
        "binder",
        {"verbs": ["create", "update"], "resources": ["rolebindings"]},
        {"verbs": ["bind"], "resources": ["clusterroles"], "resourceNames": ["admin"]},
    ),
    role(
        "finance",
        "role-maker",
        {"verbs": ["create", "update"], "resources": ["roles"]},
        {"verbs": ["escalate"], "resources": ["roles"]},
    ),
    role("finance", "sub-star", {"verbs": ["get"], "resources": ["*/status"]}),
]
CLUSTER_ROLES = [crole("node-reader", {"verbs": ["get", "list"], "resources": ["nodes"]})]
ROLE_BINDINGS = [
    rb("finance", "alice-admin", ("ClusterRole", "admin"), user("alice")),
    rb("finance", "bob-edit", ("ClusterRole", "edit"), user("bob")),
    rb("finance", "carol-view", ("ClusterRole", "view"), user("carol")),
    rb("marketing", "carol-edit", ("ClusterRole", "edit"), user("carol")),
    rb("marketing", "team-view", ("ClusterRole", "view"), group("data-team")),
    rb("finance", "etl", ("Role", "runner"), sa("finance", "etl")),
    # No herd on the subject: a RoleBinding's ServiceAccount defaults to the binding's herd.
    rb(
        "finance",
        "reporter",
        ("ClusterRole", "view"),
        {"kind": "ServiceAccount", "name": "reporter"},
    ),
    rb("finance", "dave", ("Role", "status-writer"), user("dave")),
    rb("finance", "erin", ("Role", "release"), user("erin")),
    rb("finance", "henry", ("Role", "binder"), user("henry")),
    rb("finance", "ivan", ("Role", "role-maker"), user("ivan")),
    rb("finance", "grace-nodes", ("ClusterRole", "node-reader"), user("grace")),
    rb("finance", "judy", ("Role", "sub-star"), user("judy")),
    # Refers to a Role that exists only in another herd: grants nothing.
    rb("marketing", "dangling", ("Role", "runner"), user("oscar")),
]
CLUSTER_ROLE_BINDINGS = [
    crb("ops-view", "view", group("ops")),
    crb("frank-nodes", "node-reader", user("frank")),
]

POLICY = _rbac.PolicySnapshot.from_objects(
    ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS
)

ALICE = Subject("alice")
BOB = Subject("bob")
CAROL = Subject("carol")
MALLORY = Subject("mallory")
ROOT = Subject("root", frozenset({"system:masters"}))
TEAM = Subject("zoe", frozenset({"data-team"}))
OPS = Subject("olga", frozenset({"ops"}))
ETL = Subject.for_service_account("finance", "etl")
ETL_MKT = Subject.for_service_account("marketing", "etl")
REPORTER = Subject.for_service_account("finance", "reporter")
# A user who merely *claims* the service account's name gets nothing: identity is the user string.
FAKE_SA = Subject("etl")

CASES: list[tuple[str, Subject, A, bool]] = [
    # cluster-admin via system:masters
    ("masters get", ROOT, A("get", "pipelines", herd="finance", name="x"), True),
    ("masters delete node", ROOT, A("delete", "nodes", name="n1"), True),
    ("masters reveal", ROOT, A("reveal", "secrets", herd="hr", name="s"), True),
    ("masters escalate", ROOT, A("escalate", "clusterroles", name="cluster-admin"), True),
    # admin in finance
    ("admin get", ALICE, A("get", "pipelines", herd="finance", name="p"), True),
    ("admin create run", ALICE, A("create", "pipelineruns", herd="finance"), True),
    ("admin delete pipeline", ALICE, A("delete", "pipelines", herd="finance", name="p"), True),
    ("admin reveal secret", ALICE, A("reveal", "secrets", herd="finance", name="s"), True),
    ("admin create rolebinding", ALICE, A("create", "rolebindings", herd="finance"), True),
    ("admin create role", ALICE, A("create", "roles", herd="finance"), True),
    (
        "admin read slice status",
        ALICE,
        A("get", "slices", "status", herd="finance", name="s"),
        True,
    ),
    (
        "admin cannot write run status",
        ALICE,
        A("update", "pipelineruns", "status", herd="finance", name="r"),
        False,
    ),
    ("admin cross-herd", ALICE, A("get", "pipelines", herd="marketing", name="p"), False),
    ("admin all herds list", ALICE, A("list", "pipelines"), False),
    ("admin no nodes", ALICE, A("get", "nodes", name="n1"), False),
    ("admin no herds", ALICE, A("delete", "herds", name="finance"), False),
    ("admin no escalate", ALICE, A("escalate", "roles", herd="finance", name="x"), False),
    (
        "admin no bind",
        ALICE,
        A("bind", "clusterroles", herd="finance", name="cluster-admin"),
        False,
    ),
    ("admin no clusterroles", ALICE, A("create", "clusterroles"), False),
    # edit in finance
    ("edit update", BOB, A("update", "pipelines", herd="finance", name="p"), True),
    ("edit patch", BOB, A("patch", "datasets", herd="finance", name="d"), True),
    ("edit create secret", BOB, A("create", "secrets", herd="finance"), True),
    ("edit get secret summary", BOB, A("get", "secrets", herd="finance", name="s"), True),
    ("edit no reveal", BOB, A("reveal", "secrets", herd="finance", name="s"), False),
    ("edit no rolebindings", BOB, A("create", "rolebindings", herd="finance"), False),
    ("edit no roles read", BOB, A("get", "roles", herd="finance", name="r"), False),
    ("edit cross-herd", BOB, A("update", "pipelines", herd="marketing", name="p"), False),
    # view in finance, edit in marketing
    ("view get", CAROL, A("get", "pipelines", herd="finance", name="p"), True),
    ("view watch runs", CAROL, A("watch", "pipelineruns", herd="finance"), True),
    ("view no write", CAROL, A("update", "pipelines", herd="finance", name="p"), False),
    ("view no secrets", CAROL, A("get", "secrets", herd="finance", name="s"), False),
    ("view no secret list", CAROL, A("list", "secrets", herd="finance"), False),
    ("carol edit elsewhere", CAROL, A("delete", "pipelines", herd="marketing", name="p"), True),
    ("carol no reveal elsewhere", CAROL, A("reveal", "secrets", herd="marketing", name="s"), False),
    (
        "view no status write",
        CAROL,
        A("update", "pipelineruns", "status", herd="finance", name="r"),
        False,
    ),
    # groups
    ("group view", TEAM, A("list", "datasets", herd="marketing"), True),
    ("group other herd", TEAM, A("list", "datasets", herd="finance"), False),
    ("group no write", TEAM, A("create", "datasets", herd="marketing"), False),
    ("crb group any herd", OPS, A("get", "pipelines", herd="hr", name="p"), True),
    ("crb group list all herds", OPS, A("list", "pipelines"), True),
    ("crb view no secrets", OPS, A("get", "secrets", herd="hr", name="s"), False),
    # service accounts
    ("sa get pipelines", ETL, A("get", "pipelines", herd="finance", name="p"), True),
    ("sa create run", ETL, A("create", "pipelineruns", herd="finance"), True),
    ("sa named secret", ETL, A("reveal", "secrets", herd="finance", name="db-creds"), True),
    ("sa other secret", ETL, A("reveal", "secrets", herd="finance", name="other"), False),
    ("sa list secrets", ETL, A("list", "secrets", herd="finance"), False),
    ("sa delete", ETL, A("delete", "pipelines", herd="finance", name="p"), False),
    ("sa same name other herd", ETL_MKT, A("get", "pipelines", herd="finance", name="p"), False),
    ("sa cross-herd", ETL, A("get", "pipelines", herd="marketing", name="p"), False),
    ("user named like sa", FAKE_SA, A("get", "pipelines", herd="finance", name="p"), False),
    ("sa default herd", REPORTER, A("get", "pipelines", herd="finance", name="p"), True),
    ("sa default herd no write", REPORTER, A("create", "pipelines", herd="finance"), False),
    # subresources
    (
        "status writer",
        Subject("dave"),
        A("update", "pipelineruns", "status", herd="finance", name="r"),
        True,
    ),
    (
        "status writer not main",
        Subject("dave"),
        A("update", "pipelineruns", herd="finance", name="r"),
        False,
    ),
    (
        "status writer other sub",
        Subject("dave"),
        A("update", "pipelineruns", "log", herd="finance", name="r"),
        False,
    ),
    ("*/status get", Subject("judy"), A("get", "slices", "status", herd="finance", name="s"), True),
    ("*/status not main", Subject("judy"), A("get", "slices", herd="finance", name="s"), False),
    # resourceNames
    (
        "named update",
        Subject("erin"),
        A("update", "pipelines", herd="finance", name="nightly"),
        True,
    ),
    (
        "named other",
        Subject("erin"),
        A("update", "pipelines", herd="finance", name="hourly"),
        False,
    ),
    ("named cannot list", Subject("erin"), A("list", "pipelines", herd="finance"), False),
    ("named cannot create", Subject("erin"), A("create", "pipelines", herd="finance"), False),
    # cluster-scoped resources
    ("crb nodes", Subject("frank"), A("list", "nodes"), True),
    ("rb to clusterrole no cluster scope", Subject("grace"), A("list", "nodes"), False),
    (
        "dangling role ref",
        Subject("oscar"),
        A("get", "pipelines", herd="marketing", name="p"),
        False,
    ),
    # deny by default
    ("nobody", MALLORY, A("get", "pipelines", herd="finance", name="p"), False),
    ("nobody list", MALLORY, A("list", "herds"), False),
    ("unknown verb", ROOT, A("frobnicate", "pipelines", herd="finance"), False),
]


@pytest.mark.parametrize(("case", "subject", "attrs", "allowed"), CASES, ids=[c[0] for c in CASES])
def test_authorize_table(case: str, subject: Subject, attrs: A, allowed: bool) -> None:
    d = _rbac.authorize(subject, attrs, POLICY)
    assert d.allowed is allowed, d.reason


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 60


def test_reasons_name_the_binding_or_the_refusal() -> None:
    ok = _rbac.authorize(ALICE, A("get", "pipelines", herd="finance", name="p"), POLICY)
    assert 'RoleBinding "alice-admin" in herd "finance" of ClusterRole "admin"' in ok.reason
    no = _rbac.authorize(BOB, A("reveal", "secrets", herd="finance", name="s"), POLICY)
    assert no.reason == ('user "bob" (groups: none) cannot reveal "secrets" "s" in herd "finance"')


ESCALATION_CASES: list[tuple[str, Subject, dict[str, Any], bool]] = [
    ("admin binds edit", ALICE, rb("finance", "x", ("ClusterRole", "edit"), user("m")), True),
    ("admin binds view", ALICE, rb("finance", "x", ("ClusterRole", "view"), user("m")), True),
    ("admin binds admin", ALICE, rb("finance", "x", ("ClusterRole", "admin"), user("m")), True),
    (
        "admin binds cluster-admin",
        ALICE,
        rb("finance", "x", ("ClusterRole", "cluster-admin"), user("m")),
        False,
    ),
    (
        "admin binds admin elsewhere",
        ALICE,
        rb("marketing", "x", ("ClusterRole", "admin"), user("m")),
        False,
    ),
    ("admin crb view", ALICE, crb("x", "view", user("alice")), False),
    (
        "admin role subset",
        ALICE,
        role("finance", "r", {"verbs": ["get"], "resources": ["pipelines"]}),
        True,
    ),
    (
        "admin role reveal",
        ALICE,
        role("finance", "r", {"verbs": ["reveal"], "resources": ["secrets"]}),
        True,
    ),
    (
        "admin role wildcard",
        ALICE,
        role("finance", "r", {"verbs": ["*"], "resources": ["pipelines"]}),
        False,
    ),
    (
        "admin role nodes",
        ALICE,
        role("finance", "r", {"verbs": ["get"], "resources": ["*"]}),
        False,
    ),
    (
        "admin role elsewhere",
        ALICE,
        role("marketing", "r", {"verbs": ["get"], "resources": ["pipelines"]}),
        False,
    ),
    ("admin clusterrole", ALICE, crole("r", {"verbs": ["get"], "resources": ["pipelines"]}), False),
    ("edit binds view", BOB, rb("finance", "x", ("ClusterRole", "view"), user("m")), True),
    ("edit binds admin", BOB, rb("finance", "x", ("ClusterRole", "admin"), user("m")), False),
    (
        "binder binds admin",
        Subject("henry"),
        rb("finance", "x", ("ClusterRole", "admin"), user("m")),
        True,
    ),
    (
        "binder binds cluster-admin",
        Subject("henry"),
        rb("finance", "x", ("ClusterRole", "cluster-admin"), user("m")),
        False,
    ),
    (
        "binder binds admin elsewhere",
        Subject("henry"),
        rb("marketing", "x", ("ClusterRole", "admin"), user("m")),
        False,
    ),
    (
        "escalator role",
        Subject("ivan"),
        role("finance", "r", {"verbs": ["*"], "resources": ["*"]}),
        True,
    ),
    (
        "escalator elsewhere",
        Subject("ivan"),
        role("marketing", "r", {"verbs": ["*"], "resources": ["*"]}),
        False,
    ),
    ("sa binds own role", ETL, rb("finance", "x", ("Role", "runner"), user("m")), True),
    (
        "sa named to unnamed",
        ETL,
        role("finance", "r", {"verbs": ["reveal"], "resources": ["secrets"]}),
        False,
    ),
    (
        "sa named to named",
        ETL,
        role(
            "finance",
            "r",
            {"verbs": ["reveal"], "resources": ["secrets"], "resourceNames": ["db-creds"]},
        ),
        True,
    ),
    (
        "status via x/*",
        Subject("judy"),
        role("finance", "r", {"verbs": ["get"], "resources": ["slices/status"]}),
        True,
    ),
    ("masters anything", ROOT, crb("x", "cluster-admin", user("m")), True),
    (
        "nobody binds view",
        MALLORY,
        rb("finance", "x", ("ClusterRole", "view"), user("mallory")),
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "subject", "obj", "allowed"), ESCALATION_CASES, ids=[c[0] for c in ESCALATION_CASES]
)
def test_escalation_table(case: str, subject: Subject, obj: dict[str, Any], allowed: bool) -> None:
    d = _rbac.check_rbac_write(subject, obj, POLICY)
    assert d.allowed is allowed, d.reason


def test_escalation_reason_lists_missing_permissions() -> None:
    obj = rb("finance", "x", ("ClusterRole", "cluster-admin"), user("m"))
    d = _rbac.check_rbac_write(ALICE, obj, POLICY)
    assert "escalation refused" in d.reason and "* *" in d.reason and "finance" in d.reason


def test_check_escalation_with_raw_rules() -> None:
    rules = [{"verbs": ["get", "list"], "resources": ["pipelines"]}]
    assert _rbac.check_escalation(CAROL, rules, "finance", POLICY)
    assert not _rbac.check_escalation(CAROL, rules, "hr", POLICY)


NODE = "n1"
# What the server computes from the Barn for each node: its bound Slices and their Secrets.
BOUND = {"n1": {("finance", "s1")}, "n2": {("finance", "s9")}}
REFS = {"n1": {("finance", "db-creds")}, "n2": {("finance", "other")}}
NODE_CASES: list[tuple[str, str, A, bool]] = [
    ("own node get", NODE, A("get", "nodes", name="n1"), True),
    ("own node register", NODE, A("create", "nodes", name="n1"), True),
    ("own node status", NODE, A("update", "nodes", "status", name="n1"), True),
    ("own node delete", NODE, A("delete", "nodes", name="n1"), False),
    ("other node", NODE, A("get", "nodes", name="n2"), False),
    ("other node status", NODE, A("update", "nodes", "status", name="n2"), False),
    ("list all nodes", NODE, A("list", "nodes"), False),
    ("watch own slices", NODE, A("watch", "slices", node_selector="n1"), True),
    ("watch others' slices", NODE, A("watch", "slices", node_selector="n2"), False),
    ("watch all slices", NODE, A("watch", "slices"), False),
    ("get bound slice", NODE, A("get", "slices", herd="finance", name="s1"), True),
    ("status bound slice", NODE, A("update", "slices", "status", herd="finance", name="s1"), True),
    ("spec bound slice", NODE, A("update", "slices", herd="finance", name="s1"), False),
    ("delete bound slice", NODE, A("delete", "slices", herd="finance", name="s1"), False),
    ("unbound slice", NODE, A("get", "slices", herd="finance", name="s2"), False),
    ("same name other herd", NODE, A("get", "slices", herd="marketing", name="s1"), False),
    (
        "n2 status of n1's slice",
        "n2",
        A("update", "slices", "status", herd="finance", name="s1"),
        False,
    ),
    ("n2 reads n1's secret", "n2", A("reveal", "secrets", herd="finance", name="db-creds"), False),
    ("n2 own secret", "n2", A("reveal", "secrets", herd="finance", name="other"), True),
    ("referenced secret", NODE, A("reveal", "secrets", herd="finance", name="db-creds"), True),
    ("unreferenced secret", NODE, A("reveal", "secrets", herd="finance", name="other"), False),
    ("secret other herd", NODE, A("get", "secrets", herd="marketing", name="db-creds"), False),
    ("list secrets", NODE, A("list", "secrets", herd="finance"), False),
    ("write secret", NODE, A("update", "secrets", herd="finance", name="db-creds"), False),
    ("create event", NODE, A("create", "events", herd="finance"), True),
    ("pipelines", NODE, A("get", "pipelines", herd="finance", name="p"), False),
]


@pytest.mark.parametrize(
    ("case", "node", "attrs", "allowed"), NODE_CASES, ids=[c[0] for c in NODE_CASES]
)
def test_node_authorizer_table(case: str, node: str, attrs: A, allowed: bool) -> None:
    d = _rbac.authorize_node(node, attrs, slices_bound=BOUND[node], secrets_referenced=REFS[node])
    assert d.allowed is allowed, d.reason


def test_node_gets_no_rbac_by_default() -> None:
    agent = Subject.for_node("n1")
    assert not _rbac.authorize(agent, A("get", "secrets", herd="finance", name="db-creds"), POLICY)


def test_invalid_objects_are_skipped_and_reported() -> None:
    bad = [
        {
            "kind": "RoleBinding",
            "metadata": {"name": "nohherd"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
        },
        rb("finance", "badsubj", ("ClusterRole", "view"), {"kind": "Robot", "name": "r2"}),
    ]
    p = _rbac.PolicySnapshot.from_objects(
        [], [], bad, [crb("sa-nohherd", "view", {"kind": "ServiceAccount", "name": "x"})]
    )
    assert [s[2] for s in p.skipped] == ["nohherd", "badsubj", "sa-nohherd"]
    assert "Robot" in p.skipped[1][3]


def test_stored_clusterrole_replaces_default() -> None:
    narrowed = crole("view", {"verbs": ["get"], "resources": ["pipelines"]})
    p = _rbac.PolicySnapshot.from_objects(
        [], [narrowed], [], [crb("ops-view", "view", group("ops"))]
    )
    assert _rbac.authorize(OPS, A("get", "pipelines", herd="x", name="p"), p)
    assert not _rbac.authorize(OPS, A("list", "pipelines", herd="x"), p)


def test_without_defaults_masters_still_bypass_but_builtins_absent() -> None:
    p = _rbac.PolicySnapshot.from_objects(
        [], [], [rb("f", "b", ("ClusterRole", "view"), user("u"))], [], include_defaults=False
    )
    assert not _rbac.authorize(Subject("u"), A("get", "pipelines", herd="f", name="p"), p)
    assert _rbac.authorize(ROOT, A("get", "pipelines", herd="f", name="p"), p)


def test_default_roles_nest() -> None:
    """view within edit within admin, so an admin may hand out edit and view in its herd."""
    crs = {o["metadata"]["name"]: o for o in _rbac.DEFAULT_CLUSTER_ROLES}
    p = _rbac.PolicySnapshot.from_objects([], [], [], [])
    for inner, outer in (("view", "edit"), ("edit", "admin"), ("admin", "cluster-admin")):
        held = _rbac.Rule
        rules = [held.from_dict(r) for r in crs[outer]["rules"]]
        holder = _rbac.PolicySnapshot.from_objects(
            [], [], [rb("h", "b", ("ClusterRole", outer), user("u"))], []
        )
        assert _rbac.check_escalation(Subject("u"), crs[inner]["rules"], "h", holder), (
            inner,
            outer,
        )
        assert rules  # the outer role is non-empty
    assert p.cluster_roles.keys() >= {"cluster-admin", "admin", "edit", "view"}


_verbs = st.sampled_from([*sorted(_rbac.VERBS), "*"])
_res = st.sampled_from(["pipelines", "secrets", "pipelineruns/status", "*", "*/status", "slices/*"])
_rules = st.lists(
    st.builds(
        lambda v, r, n: {"verbs": v, "resources": r, "resourceNames": n},
        st.lists(_verbs, min_size=1, max_size=3),
        st.lists(_res, min_size=1, max_size=2),
        st.lists(st.sampled_from(["a", "b"]), max_size=1),
    ),
    min_size=1,
    max_size=4,
)
_attrs = st.builds(
    A,
    st.sampled_from(sorted(_rbac.VERBS)),
    st.sampled_from(["pipelines", "secrets", "pipelineruns", "slices"]),
    st.sampled_from([None, "status"]),
    st.just("h"),
    st.sampled_from([None, "a", "b"]),
)


@given(rules=_rules, attrs=_attrs, drop=st.integers(min_value=0, max_value=3))
def test_removing_a_rule_never_allows_more(
    rules: list[dict[str, Any]], attrs: A, drop: int
) -> None:
    def decide(rs: list[dict[str, Any]]) -> bool:
        p = _rbac.PolicySnapshot.from_objects(
            [role("h", "r", *rs)],
            [],
            [rb("h", "b", ("Role", "r"), user("u"))],
            [],
            include_defaults=False,
        )
        return _rbac.authorize(Subject("u"), attrs, p).allowed

    fewer = [r for i, r in enumerate(rules) if i != drop % len(rules)]
    assert decide(rules) or not decide(fewer)


@given(rules=_rules, attrs=_attrs)
def test_a_role_one_holds_is_grantable_and_grants_nothing_more(
    rules: list[dict[str, Any]], attrs: A
) -> None:
    """Escalation soundness: if u may grant R, whatever R allows, u's own rules allow."""
    holder = _rbac.PolicySnapshot.from_objects(
        [role("h", "mine", *rules)],
        [],
        [rb("h", "b", ("Role", "mine"), user("u"))],
        [],
        include_defaults=False,
    )
    assert _rbac.check_escalation(Subject("u"), rules, "h", holder)
    other = _rbac.Rule.from_dict(rules[0])
    if _rbac.check_escalation(Subject("u"), [rules[0]], "h", holder) and other.matches(attrs):
        assert _rbac.authorize(Subject("u"), attrs, holder)
