"""Property: any valid pipeline survives validate -> YAML -> parse unchanged."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from runink import schemas

names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
cpu = st.one_of(st.integers(0, 64), st.integers(1, 64000).map(lambda m: f"{m}m"))
memory = st.integers(1, 1 << 20).map(lambda n: f"{n}Mi")
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)


@st.composite
def pipelines(draw: st.DrawFn) -> dict[str, Any]:
    step_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    steps = []
    for i, n in enumerate(step_names):
        # Depending only on earlier steps keeps the DAG acyclic.
        deps = draw(st.lists(st.sampled_from(step_names[:i]), unique=True)) if i else []
        step: dict[str, Any] = {"name": n, "dependsOn": deps}
        if draw(st.booleans()):
            step["python"] = f"mod_{n}:run"
        else:
            step["command"] = draw(st.lists(text, min_size=1, max_size=3))
        step["resources"] = {"cpu": draw(cpu), "memory": draw(memory)}
        step["env"] = draw(
            st.dictionaries(
                st.from_regex(r"[A-Z_][A-Z0-9_]{0,5}", fullmatch=True), text, max_size=3
            )
        )
        steps.append(step)
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Pipeline",
        "metadata": {
            "name": draw(names),
            "herd": "h",
            "labels": draw(st.dictionaries(names, names, max_size=3)),
        },
        "spec": {"steps": steps, "description": draw(st.none() | text)},
    }


@settings(max_examples=25, deadline=None)
@given(pipelines())
def test_validate_yaml_round_trip(obj: dict[str, Any]) -> None:
    normalized = schemas.validate(obj)
    assert schemas.validate(normalized) == normalized
    [m] = schemas.parse_manifests(schemas.dump_yaml(normalized), "gen.yaml")
    assert m.obj == normalized
