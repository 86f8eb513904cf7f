"""Pipeline, PipelineRun and Slice: the DAG a user declares, one execution of it, one step instance.

The run controller turns a PipelineRun into Slices (one per step attempt and matrix entry), the
scheduler sets ``Slice.spec.nodeName`` and the agent launches it and writes ``Slice.status``.
Pipeline validation (duplicate steps, unknown or cyclic dependsOn, python XOR command) reports every
problem with its field path, e.g. ``spec.steps[2].dependsOn[0]``: see ``PathErrors``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic

from runink.schemas import _base

_PYTHON_REF_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_CRON_FIELD_RE = re.compile(r"^[\d*/,\-A-Za-z?LW#]+$")

Loc = tuple[str | int, ...]


class PathErrors(ValueError):
    """Several problems at paths relative to the model being validated.

    Raised from model validators; the codec expands it into one FieldError per entry, so a user
    sees ``spec.steps[2].dependsOn[0]`` rather than just ``spec``.
    """

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_fmt(loc)}: {msg}" for loc, msg in problems))


def _fmt(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _python_ref(v: str) -> str:
    if not _PYTHON_REF_RE.match(v):
        raise ValueError(f"{v!r} is not 'module:function' (e.g. 'etl.extract:main')")
    return v


PythonRef = Annotated[str, pydantic.AfterValidator(_python_ref)]
ParamType = Literal["string", "int", "float", "bool", "json"]
StepCondition = Literal["success", "failure", "always"]
Network = Literal["none", "host", "isolated"]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def check_param_value(type_: ParamType, value: Any) -> str | None:
    """Why ``value`` does not fit ``type_`` (None when it does). json accepts anything."""
    if type_ == "json" or value is None:
        return None
    ok = isinstance(value, _PY_TYPES[type_])
    # bool is an int in Python, but a param of type int/float must not accept true/false.
    if type_ in ("int", "float") and isinstance(value, bool):
        ok = False
    return None if ok else f"{value!r} is not of type {type_}"


class ParamSpec(_base.Model):
    """A typed parameter, resolved when a run starts (run params override defaults)."""

    name: _base.ParamName
    """Parameter name, referenced by steps and set with `runink run -p name=value`."""
    type: ParamType = "string"
    """Value type: string, int, float, bool or json (any JSON value)."""
    default: Any = None
    """Value used when the run does not set one; a param without default is required."""
    description: str | None = None
    """What the parameter means, shown by `runink describe`."""

    @pydantic.model_validator(mode="after")
    def _default_fits_type(self) -> ParamSpec:
        why = check_param_value(self.type, self.default)
        if why is not None:
            raise PathErrors([(("default",), why)])
        return self


class Dependency(_base.Model):
    """An edge of the DAG: run after `step` has finished with `condition`."""

    step: str
    """Name of the step this one waits for (in the same list: steps or finally)."""
    condition: StepCondition = "success"
    """Run when the dependency succeeded (default), failed, or always once it finished."""


class DatasetRef(_base.Model):
    """A dataset a step reads or writes; lineage is recorded from these."""

    name: str | None = None
    """Name of a Dataset object in the same Herd."""
    uri: str | None = None
    """Location of the data, e.g. file:///shared/finance/ledger.parquet; defaults to the Dataset's uri."""

    @pydantic.model_validator(mode="after")
    def _name_or_uri(self) -> DatasetRef:
        if self.name is None and self.uri is None:
            raise ValueError("set name (a Dataset) or uri (or both)")
        return self


class Resources(_base.Model):
    """Resources requested for one slice; the scheduler reserves them on a node and cgroups enforce them."""

    cpu: _base.CpuQuantity = "100m"
    """CPU in cores or millicores ('500m', '2', 1.5); also the cgroup cpu.max limit."""
    memory: _base.MemoryQuantity = "128Mi"
    """Memory in bytes with optional suffix ('512Mi', '1Gi'); also the cgroup memory.max (OOM-kill above)."""
    gpu: _base.NonNegInt = 0
    """Number of whole GPUs."""


class SecretUse(_base.Model):
    """A Secret made available to a step, as environment variables or files."""

    secret: _base.DnsLabel
    """Name of the Secret in the same Herd."""
    key: _base.SecretKey | None = None
    """One key of the Secret; all keys when absent."""
    as_: Literal["env", "file"] = pydantic.Field(default="env", alias="as")
    """Expose as environment variables (env) or as files in a private tmpfs (file)."""
    env: str | None = None
    """With as: env and a key: the variable name (default: the key upper-cased, '-' and '.' as '_')."""
    path: str | None = None
    """With as: file: an absolute directory or file path (default /run/secrets/<secret>/<key>)."""

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> SecretUse:
        problems: list[tuple[Loc, str]] = []
        if self.as_ == "file" and self.env is not None:
            problems.append((("env",), "only allowed with as: env"))
        if self.as_ == "env" and self.path is not None:
            problems.append((("path",), "only allowed with as: file"))
        if self.env is not None and self.key is None:
            problems.append((("env",), "needs a key (without one every key becomes a variable)"))
        if self.env is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.env):
            problems.append((("env",), f"{self.env!r} is not a valid environment variable name"))
        if self.path is not None and not self.path.startswith("/"):
            problems.append((("path",), "must be an absolute path"))
        if problems:
            raise PathErrors(problems)
        return self


class Backoff(_base.Model):
    """Exponential backoff between attempts: min(max, initial * factor**n), +/- jitter."""

    initial_seconds: float = pydantic.Field(default=1.0, ge=0)
    """Delay before the first retry."""
    max_seconds: float = pydantic.Field(default=300.0, ge=0)
    """Upper bound of the delay."""
    factor: float = pydantic.Field(default=2.0, ge=1)
    """Multiplier applied after each attempt."""
    jitter: float = pydantic.Field(default=0.1, ge=0, le=1)
    """Random fraction (0-1) added or removed, so retries of many slices spread out."""


class Retry(_base.Model):
    """How often a failed step is attempted again (each attempt is a new Slice)."""

    limit: _base.NonNegInt = 0
    """Retries after the first attempt (0 = no retry)."""
    backoff: Backoff = Backoff()
    """Delay between attempts."""


class Matrix(_base.Model):
    """Fan a step out: one slice per combination of the listed param values."""

    params: dict[str, list[Any]]
    """Param name -> values; the step runs once per element of the cross product."""
    max_parallel: _base.PosInt | None = None
    """At most this many slices of the step run at once (unlimited when absent)."""

    @pydantic.field_validator("params")
    @classmethod
    def _non_empty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not v:
            raise ValueError("list at least one param")
        problems: list[tuple[Loc, str]] = [
            ((k,), "needs at least one value") for k, vals in v.items() if not vals
        ]
        if problems:
            raise PathErrors(problems)
        return v


class Toleration(_base.Model):
    """Lets a step run on nodes with a matching taint."""

    key: str | None = None
    """Taint key to match; with operator Exists and no key, tolerates every taint."""
    operator: Literal["Equal", "Exists"] = "Equal"
    """Equal compares value; Exists only needs the key."""
    value: str | None = None
    """Taint value to match with operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; all effects when absent."""


class LabelExpression(_base.Model):
    """A node-label requirement: ``key`` with operator In, NotIn, Exists or DoesNotExist."""

    key: str
    """The node label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the label's value is compared with ``values``."""
    values: list[str] = []
    """Values for In and NotIn (at least one); empty for Exists and DoesNotExist."""


class PreferredAffinity(_base.Model):
    """A soft preference: nodes matching every expression score ``weight`` more."""

    weight: int = pydantic.Field(default=1, ge=1, le=100)
    """Relative weight (1-100) against other preferences."""
    match_expressions: list[LabelExpression] = []
    """Expressions a node must match to earn the weight."""


class Affinity(_base.Model):
    """Node affinity: hard requirements and soft preferences on node labels."""

    required: list[LabelExpression] = []
    """Every expression must match for a node to be eligible."""
    preferred: list[PreferredAffinity] = []
    """Preferences that rank eligible nodes."""


class Locality(_base.Model):
    """Where a step's input data lives, so the scheduler prefers those nodes (a hint, not a rule)."""

    nodes: list[str] = []
    """Node names holding the data."""
    labels: _base.Labels = {}
    """Node labels that mark nodes near the data (e.g. a rack or zone)."""


class SecretKeyRef(_base.Model):
    """One key of a Secret in the step's Herd."""

    secret: _base.DnsLabel
    """The Secret's name."""
    key: _base.SecretKey
    """The key within the Secret."""


class LlmStep(_base.Model):
    """A built-in step that annotates a dataset with an OpenAI-compatible chat-completions model.

    Each record's ``field`` is sent with ``prompt``; every answer becomes an Annotation with full
    provenance (model, prompt and input hashes, review state ``suggested``), written as JSON Lines
    to the step's output dataset and loaded into the annotation store. Runs
    ``runink.sdk.llm:annotate_dataset`` in a slice.
    """

    model: str = pydantic.Field(min_length=1)
    """Model name sent to the endpoint, e.g. gpt-4o-mini or a local model's id."""
    endpoint: str = pydantic.Field(min_length=1)
    """Base URL of the OpenAI-compatible API, e.g. http://llm.internal:8000/v1."""
    api_key: SecretKeyRef | None = None
    """Where the API key is: a Secret key, delivered to the slice as a file (never an env var)."""
    prompt: str = pydantic.Field(min_length=1)
    """A str.format template over {value}, {field}, {key} and the record's columns."""
    input: str | None = None
    """Which input dataset to read (its name); default: the step's only input."""
    field: str = pydantic.Field(min_length=1)
    """The column or JSON field of each record to annotate."""
    key_field: str | None = None
    """The column identifying a record (default: id if present, else the line number)."""
    annotation_type: str = pydantic.Field(min_length=1)
    """The annotation_type written on every annotation, e.g. sentiment or pii."""
    output: str | None = None
    """Which output dataset receives the annotations (JSON Lines); default: the only output."""
    batch_size: _base.PosInt = 20
    """Records per batch (one output flush per batch)."""
    concurrency: _base.PosInt = 4
    """Requests in flight at once."""
    retries: _base.NonNegInt = 5
    """Retries per request on 429, 5xx, connection errors and timeouts (exponential backoff)."""
    timeout_seconds: float = pydantic.Field(default=30.0, gt=0)
    """Timeout of one request."""
    temperature: float | None = None
    """Sampling temperature passed to the model."""
    max_tokens: _base.PosInt | None = None
    """Maximum tokens per answer."""


class Step(_base.Model):
    """One node of the pipeline DAG: what to run, with what, and when."""

    name: _base.DnsLabel
    """Step name, unique in the pipeline (steps and finally together); a DNS-1123 label."""
    python: PythonRef | None = None
    """A Python callable 'module:function' run in the slice (exactly one of python, command, llm)."""
    llm: LlmStep | None = None
    """The built-in LLM annotation step (instead of python or command)."""
    command: list[str] | None = pydantic.Field(default=None, min_length=1)
    """An executable and its arguments (exactly one of python and command)."""
    args: list[str] = []
    """Extra arguments passed to the command or function."""
    depends_on: list[str | Dependency] = []
    """Steps that must finish first: a name (on success) or {step, condition: success|failure|always}. Normalized to objects."""
    params: list[ParamSpec] = []
    """Typed parameters of this step; values come from run params, matrix and defaults."""
    results: list[_base.ParamName] = []
    """Names of small results (<= 4 KiB each) the step reports, readable by later steps."""
    inputs: list[DatasetRef] = []
    """Datasets the step reads (lineage)."""
    outputs: list[DatasetRef] = []
    """Datasets the step writes (lineage)."""
    resources: Resources = Resources()
    """CPU, memory and GPUs reserved for each slice of the step."""
    env: _base.EnvMap = {}
    """Environment variables set for the step."""
    secrets: list[SecretUse] = []
    """Secrets exposed to the step as env or files."""
    service_account: _base.DnsLabel | None = None
    """Identity the step runs as; defaults to the run's, then the Herd's default service account."""
    retry: Retry = Retry()
    """Retries on failure."""
    timeout_seconds: _base.PosInt | None = None
    """Kill an attempt after this many seconds (counts as a failure)."""
    when: str | None = None
    """Run only if this expression is true, e.g. "params.env == 'prod'"; otherwise the step is Skipped."""
    matrix: Matrix | None = None
    """Fan-out over param values."""
    node_selector: _base.Labels = {}
    """Node labels the slice requires."""
    affinity: Affinity | None = None
    """Node affinity for this step's slices: required and preferred node-label expressions."""
    locality: Locality | None = None
    """A data-locality hint: nodes (or node labels) near this step's inputs are preferred."""
    tolerations: list[Toleration] = []
    """Node taints the slice accepts."""
    network: Network = "isolated"
    """none: loopback only; isolated: own network namespace with outbound access; host: the node's network."""

    @pydantic.field_validator("depends_on", mode="after")
    @classmethod
    def _normalize_deps(cls, v: list[str | Dependency]) -> list[str | Dependency]:
        return [Dependency(step=d) if isinstance(d, str) else d for d in v]

    @pydantic.model_validator(mode="after")
    def _python_xor_command(self) -> Step:
        chosen = [k for k in ("python", "command", "llm") if getattr(self, k) is not None]
        if len(chosen) != 1:
            which = " and ".join(chosen) if chosen else "none"
            raise PathErrors([((), f"set exactly one of python, command and llm ({which} set)")])
        return self

    def dependencies(self) -> list[Dependency]:
        """The dependsOn entries as Dependency objects."""
        return [Dependency(step=d) if isinstance(d, str) else d for d in self.depends_on]


class Schedule(_base.Model):
    """Create PipelineRuns on a cron schedule."""

    cron: str
    """Five-field cron expression in UTC (minute hour day-of-month month day-of-week), or @hourly, @daily..."""
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    """If a previous run is still going: Allow another, Forbid (skip this one) or Replace (cancel it)."""
    suspend: bool = False
    """Stop creating runs (running ones continue)."""
    starting_deadline_seconds: _base.PosInt | None = None
    """Skip a run missed by more than this many seconds (e.g. after downtime)."""

    @pydantic.field_validator("cron")
    @classmethod
    def _cron_shape(cls, v: str) -> str:
        if v.startswith("@"):
            if v not in (
                "@yearly",
                "@annually",
                "@monthly",
                "@weekly",
                "@daily",
                "@midnight",
                "@hourly",
            ):
                raise ValueError(f"unknown cron macro {v!r}")
            return v
        fields = v.split()
        if len(fields) != 5 or not all(_CRON_FIELD_RE.match(f) for f in fields):
            raise ValueError(f"{v!r} is not a five-field cron expression such as '0 2 * * *'")
        return v


class HistoryLimit(_base.Model):
    """How many finished PipelineRuns of this pipeline are kept."""

    successful: _base.NonNegInt = 3
    """Succeeded runs kept."""
    failed: _base.NonNegInt = 1
    """Failed or cancelled runs kept."""


def _check_dag(steps: list[Step], field: str, known_elsewhere: set[str]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    names = {s.name for s in steps}
    for i, step in enumerate(steps):
        for j, dep in enumerate(step.dependencies()):
            if dep.step == step.name:
                problems.append(
                    ((field, i, "dependsOn", j), f"step {step.name!r} depends on itself")
                )
            elif dep.step not in names:
                hint = (
                    " (finally steps run after all steps and may only depend on other finally steps)"
                    if dep.step in known_elsewhere
                    else ""
                )
                problems.append(((field, i, "dependsOn", j), f"unknown step {dep.step!r}{hint}"))
    # Kahn's algorithm: whatever cannot be ordered is on (or behind) a cycle.
    edges = {
        s.name: [d.step for d in s.dependencies() if d.step in names and d.step != s.name]
        for s in steps
    }
    indegree = {n: len(deps) for n, deps in edges.items()}
    dependents: dict[str, list[str]] = {n: [] for n in edges}
    for n, deps in edges.items():
        for d in deps:
            dependents[d].append(n)
    ready = [n for n, k in indegree.items() if k == 0]
    while ready:
        n = ready.pop()
        for m in dependents[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                ready.append(m)
    stuck = {n for n, k in indegree.items() if k > 0}
    for i, step in enumerate(steps):
        if step.name not in stuck:
            continue
        for j, dep in enumerate(step.dependencies()):
            if dep.step in stuck and dep.step != step.name:
                cycle = " -> ".join(_cycle_through(edges, step.name, stuck))
                problems.append(((field, i, "dependsOn", j), f"dependency cycle: {cycle}"))
                break
    return problems


def _cycle_through(edges: dict[str, list[str]], start: str, stuck: set[str]) -> list[str]:
    # Walk dependencies inside the stuck set until a name repeats; print that loop.
    path = [start]
    seen = {start: 0}
    cur = start
    while True:
        nxt = next(d for d in sorted(edges[cur]) if d in stuck)
        if nxt in seen:
            return [*path[seen[nxt] :], nxt]
        seen[nxt] = len(path)
        path.append(nxt)
        cur = nxt


class PipelineSpec(_base.Model):
    """A DAG of steps with params, a schedule and retention."""

    description: str | None = None
    """What the pipeline does, shown by `runink describe`."""
    steps: list[Step] = pydantic.Field(min_length=1)
    """The steps; order does not matter, dependsOn defines the DAG."""
    finally_: list[Step] = pydantic.Field(default=[], alias="finally")
    """Steps run after all steps finished, whatever their outcome (cleanup, notifications)."""
    params: list[ParamSpec] = []
    """Pipeline-level typed params, set per run."""
    schedule: Schedule | None = None
    """Cron schedule creating runs automatically."""
    timeout_seconds: _base.PosInt | None = None
    """Fail (and cancel) a run that takes longer than this."""
    history_limit: HistoryLimit = HistoryLimit()
    """How many finished runs are kept."""
    ttl_seconds_after_finished: _base.NonNegInt | None = None
    """Delete a finished run after this many seconds, whatever the history limit."""

    @pydantic.model_validator(mode="after")
    def _valid_dag(self) -> PipelineSpec:
        problems: list[tuple[Loc, str]] = []
        first: dict[str, Loc] = {}
        for field, steps in (("steps", self.steps), ("finally", self.finally_)):
            for i, step in enumerate(steps):
                if step.name in first:
                    where = _fmt(("spec", *first[step.name]))
                    problems.append(
                        ((field, i, "name"), f"duplicate step name {step.name!r} (also {where})")
                    )
                else:
                    first[step.name] = (field, i, "name")
        main = {s.name for s in self.steps}
        fin = {s.name for s in self.finally_}
        problems += _check_dag(self.steps, "steps", fin)
        problems += _check_dag(self.finally_, "finally", main)
        seen: set[str] = set()
        for i, p in enumerate(self.params):
            if p.name in seen:
                problems.append((("params", i, "name"), f"duplicate param {p.name!r}"))
            seen.add(p.name)
        if problems:
            raise PathErrors(problems)
        return self


class PipelineStatus(_base.Model):
    """Written by the pipeline controller."""

    conditions: list[_base.Condition] = []
    """Ready (spec accepted) and similar observations."""
    last_schedule_time: _base.Timestamp | None = None
    """When the schedule last created a run."""
    observed_generation: _base.NonNegInt | None = None
    """The metadata.generation the controller last acted on."""


class Pipeline(_base.Model):
    """A reusable DAG of steps (herd-scoped)."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Pipeline"] = "Pipeline"
    """Always Pipeline."""
    metadata: _base.ObjectMeta
    """Name, herd, labels and server-set bookkeeping."""
    spec: PipelineSpec
    """The desired pipeline."""
    status: PipelineStatus | None = None
    """Observed state, written by the controller."""


RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
StepPhase = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed", "Skipped", "Cancelled"]
SlicePhase = Literal["Pending", "Starting", "Running", "Succeeded", "Failed"]


class PipelineRef(_base.Model):
    """Names the Pipeline a run executes."""

    name: _base.DnsLabel
    """Name of the Pipeline in the run's Herd."""


class PipelineRunSpec(_base.Model):
    """One execution request of a Pipeline."""

    pipeline_ref: PipelineRef
    """The Pipeline to run."""
    params: dict[str, Any] = {}
    """Values for the pipeline params (name -> value), checked against their types when the run starts."""
    service_account: _base.DnsLabel | None = None
    """Identity for steps that do not name one (default: the Herd's default service account)."""
    timeout_seconds: _base.PosInt | None = None
    """Overrides the pipeline's timeoutSeconds for this run."""
    cancelled: bool = False
    """Set to true to cancel the run: running slices are stopped, pending ones never start."""


class StepStatus(_base.Model):
    """Progress of one step within a run."""

    phase: StepPhase = "Pending"
    """Pending, Waiting (for dependencies or retry backoff), Running, Succeeded, Failed, Skipped or Cancelled."""
    attempts: _base.NonNegInt = 0
    """Attempts started so far."""
    slices: list[str] = []
    """Names of the Slices created for this step (all attempts and matrix entries)."""
    results: dict[str, str] = {}
    """Results reported by the step (merged over matrix entries by the controller)."""
    message: str | None = None
    """Why the step is in this phase, e.g. the last failure."""
    start_time: _base.Timestamp | None = None
    """When the first slice of the step started."""
    completion_time: _base.Timestamp | None = None
    """When the step reached a final phase."""


class PipelineRunStatus(_base.Model):
    """Written by the run controller."""

    phase: RunPhase = "Pending"
    """Pending, Running, Succeeded, Failed or Cancelled."""
    start_time: _base.Timestamp | None = None
    """When the run started."""
    completion_time: _base.Timestamp | None = None
    """When the run reached a final phase."""
    steps: dict[str, StepStatus] = {}
    """Step name -> progress of that step."""
    params: dict[str, Any] = {}
    """The resolved params (run values over defaults) the slices received."""
    pipeline_spec: PipelineSpec | None = None
    """Snapshot of the Pipeline spec taken at start, so edits to the Pipeline do not change a running run."""
    conditions: list[_base.Condition] = []
    """Succeeded (True/False/Unknown) and similar observations."""
    observed_generation: _base.NonNegInt | None = None
    """The metadata.generation the controller last acted on."""


class PipelineRun(_base.Model):
    """One execution of a Pipeline (herd-scoped); created by `runink run` or the schedule."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["PipelineRun"] = "PipelineRun"
    """Always PipelineRun."""
    metadata: _base.ObjectMeta
    """Name, herd, labels and server-set bookkeeping."""
    spec: PipelineRunSpec
    """What to run."""
    status: PipelineRunStatus | None = None
    """Progress, written by the run controller."""


class SliceSpec(_base.Model):
    """Everything the agent needs to launch one attempt of one step, resolved by the run controller."""

    pipeline: _base.DnsLabel
    """The Pipeline this slice belongs to."""
    run: _base.DnsLabel
    """The PipelineRun this slice belongs to."""
    step: _base.DnsLabel
    """The step this slice executes."""
    attempt: _base.PosInt = 1
    """Attempt number, from 1."""
    matrix_index: _base.NonNegInt | None = None
    """Index in the step's matrix cross product, when fanned out."""
    python: PythonRef | None = None
    """A Python callable 'module:function' (exactly one of python and command)."""
    command: list[str] | None = pydantic.Field(default=None, min_length=1)
    """An executable and its arguments (exactly one of python and command)."""
    args: list[str] = []
    """Extra arguments."""
    params: dict[str, Any] = {}
    """Resolved param values (run, matrix and defaults)."""
    results: list[_base.ParamName] = []
    """Names of the results the step is expected to report."""
    env: _base.EnvMap = {}
    """Environment variables."""
    secrets: list[SecretUse] = []
    """Secrets to expose."""
    service_account: _base.DnsLabel | None = None
    """Identity the process runs as (mapped to an ephemeral UID on the node)."""
    resources: Resources = Resources()
    """Reserved and enforced resources."""
    node_selector: _base.Labels = {}
    """Node labels required."""
    affinity: Affinity | None = None
    """Node affinity for this step's slices: required and preferred node-label expressions."""
    locality: Locality | None = None
    """A data-locality hint: nodes (or node labels) near this step's inputs are preferred."""
    tolerations: list[Toleration] = []
    """Node taints accepted."""
    network: Network = "isolated"
    """Network mode: none, isolated or host."""
    timeout_seconds: _base.PosInt | None = None
    """Kill the process after this many seconds."""
    inputs: list[DatasetRef] = []
    """Datasets read."""
    outputs: list[DatasetRef] = []
    """Datasets written."""
    node_name: _base.DnsLabel | None = None
    """Set by the scheduler: the Node that runs this slice; empty while unscheduled."""
    priority: int = 0
    """Higher priority slices are scheduled first."""
    cancelled: bool = False
    """Set by the run controller to stop this slice (run cancelled, timeout, a sibling failed); the
    agent stops it with a grace period and reports Failed with the reason from the annotation
    runink.io/cancel-reason."""

    @pydantic.model_validator(mode="after")
    def _python_xor_command(self) -> SliceSpec:
        if (self.python is None) == (self.command is None):
            which = "both" if self.python is not None else "neither"
            raise PathErrors([((), f"set exactly one of python and command ({which} set)")])
        return self


class SliceStatus(_base.Model):
    """Written by the agent (and the scheduler's Scheduled condition)."""

    phase: SlicePhase = "Pending"
    """Pending (not placed or not started), Starting, Running, Succeeded or Failed."""
    reason: str | None = None
    """CamelCase reason for the phase, e.g. OOMKilled, DeadlineExceeded, Unschedulable."""
    message: str | None = None
    """Human-readable detail."""
    exit_code: int | None = None
    """Process exit code once it ended."""
    signal: int | None = None
    """Signal that killed the process, if any."""
    oom_killed: bool = False
    """True when the cgroup memory limit killed the process."""
    start_time: _base.Timestamp | None = None
    """When the process started."""
    completion_time: _base.Timestamp | None = None
    """When the process ended."""
    results: dict[str, str] = {}
    """Results the step reported."""
    attempt: _base.PosInt | None = None
    """The spec.attempt this status describes."""
    conditions: list[_base.Condition] = []
    """Scheduled (False with reason Unschedulable and why), Ready and similar."""


class Slice(_base.Model):
    """One instance of one step: the unit that is scheduled and launched (herd-scoped)."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Slice"] = "Slice"
    """Always Slice."""
    metadata: _base.ObjectMeta
    """Name, herd, labels (runink.io/run, runink.io/step) and owner (the PipelineRun)."""
    spec: SliceSpec
    """What to launch."""
    status: SliceStatus | None = None
    """Observed state, written by the agent."""


__all__ = [
    "Backoff",
    "DatasetRef",
    "Dependency",
    "HistoryLimit",
    "Matrix",
    "ParamSpec",
    "PathErrors",
    "Pipeline",
    "PipelineRef",
    "PipelineRun",
    "PipelineRunSpec",
    "PipelineRunStatus",
    "PipelineSpec",
    "PipelineStatus",
    "Resources",
    "Retry",
    "RunPhase",
    "Schedule",
    "SecretUse",
    "Slice",
    "SlicePhase",
    "SliceSpec",
    "SliceStatus",
    "Step",
    "StepPhase",
    "StepStatus",
    "Toleration",
    "check_param_value",
]
