"""Herd, Node, Secret, ServiceAccount, RBAC kinds, GitSource and Event.

The tenancy, machine, identity and bookkeeping kinds around pipelines. Herd and Node are
cluster-scoped; RBAC follows Kubernetes (Role/RoleBinding in a Herd, ClusterRole/ClusterRoleBinding
cluster-wide). Secrets are stored encrypted by the server (``spec.encrypted``); clients never see
clear values by default.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from runink.schemas import _base, _pipelines


class Quota(_base.Model):
    """Resource limits for a Herd, summed over its unfinished Slices; absent means unlimited."""

    cpu: _base.CpuQuantity | None = None
    """Total CPU ('16', '4500m')."""
    memory: _base.MemoryQuantity | None = None
    """Total memory ('64Gi')."""
    gpu: _base.NonNegInt | None = None
    """Total GPUs."""
    slices: _base.NonNegInt | None = None
    """Maximum number of Slices not yet finished."""


class HerdSpec(_base.Model):
    """A team's namespace: quotas and defaults."""

    quota: Quota = Quota()
    """Resource limits enforced at admission and by the scheduler."""
    default_service_account: _base.DnsLabel = "default"
    """Service account for slices that do not name one."""
    labels: _base.Labels = {}
    """Labels added to every object created in the Herd (the object's own labels win)."""


class HerdStatus(_base.Model):
    """Written by the herd controller."""

    usage: Quota = Quota()
    """Resources currently reserved by the Herd's unfinished Slices."""
    conditions: list[_base.Condition] = []
    """Ready and QuotaExceeded-like observations."""
    observed_generation: _base.NonNegInt | None = None
    """The metadata.generation the controller last acted on."""


class Herd(_base.Model):
    """A team's namespace (cluster-scoped): quotas, default service account, labels."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Herd"] = "Herd"
    """Always Herd."""
    metadata: _base.ObjectMeta
    """Name and labels; a Herd has no herd."""
    spec: HerdSpec = HerdSpec()
    """Quotas and defaults."""
    status: HerdStatus | None = None
    """Usage, written by the controller."""


class Taint(_base.Model):
    """Repels slices that do not tolerate it."""

    key: str
    """Taint key, e.g. gpu or maintenance."""
    value: str | None = None
    """Optional value compared by Equal tolerations."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    """NoSchedule: never place; PreferNoSchedule: avoid; NoExecute: also stop running slices."""


class NodeSpec(_base.Model):
    """Scheduling controls of a node (its labels are metadata.labels)."""

    unschedulable: bool = False
    """Cordon: place no new slices here (`runink cordon`)."""
    taints: list[Taint] = []
    """Taints repelling slices without a matching toleration."""


class NodeResources(_base.Model):
    """Amounts of each resource on a node."""

    cpu: _base.CpuQuantity = 0
    """CPU ('8', '7500m')."""
    memory: _base.MemoryQuantity = 0
    """Memory ('32Gi')."""
    gpu: _base.NonNegInt = 0
    """Whole GPUs."""
    slices: _base.NonNegInt = 0
    """Maximum number of concurrent slices."""


class NodeAddress(_base.Model):
    """One way to reach the node's agent."""

    type: Literal["InternalIP", "ExternalIP", "Hostname"]
    """Kind of address."""
    address: str
    """The address itself."""


class DaemonEndpoint(_base.Model):
    """A port the agent serves on, at the node's address (``status.addresses``)."""

    port: int = pydantic.Field(ge=1, le=65535)
    """TCP port."""


class NodeDaemonEndpoints(_base.Model):
    """Endpoints the agent serves for the control plane (as the kubelet's daemonEndpoints)."""

    logs: DaemonEndpoint | None = None
    """Slice logs, gRPC over mutual TLS: only the API server's agent-client certificate is
    accepted, and the agent's serving certificate names ``<node>.nodes.runink.internal``."""


class Gpu(_base.Model):
    """One GPU device on the node."""

    index: _base.NonNegInt
    """Device index (as in CUDA_VISIBLE_DEVICES)."""
    uuid: str | None = None
    """Vendor UUID of the device."""
    model: str | None = None
    """Product name, e.g. NVIDIA A100-SXM4-40GB."""
    memory: _base.MemoryQuantity | None = None
    """Device memory."""


class NodeStatus(_base.Model):
    """Written by the agent (heartbeat) and the node controller (Ready)."""

    capacity: NodeResources = NodeResources()
    """Total resources of the machine."""
    allocatable: NodeResources = NodeResources()
    """Resources available to slices (capacity minus system reserve)."""
    conditions: list[_base.Condition] = []
    """Ready: True while heartbeats arrive within leaseDurationSeconds."""
    heartbeat_time: _base.Timestamp | None = None
    """Last heartbeat from the agent."""
    lease_duration_seconds: _base.PosInt = 40
    """The node is NotReady when no heartbeat arrived for this long."""
    addresses: list[NodeAddress] = []
    """How to reach the agent (the API server dials the first InternalIP, else ExternalIP, else
    Hostname)."""
    daemon_endpoints: NodeDaemonEndpoints = NodeDaemonEndpoints()
    """Ports the agent serves on, at those addresses (the slice log endpoint)."""
    agent_version: str | None = None
    """Runink version of the agent."""
    gpus: list[Gpu] = []
    """GPU devices found on the node."""


class Node(_base.Model):
    """A machine running a Runink agent (cluster-scoped)."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Node"] = "Node"
    """Always Node."""
    metadata: _base.ObjectMeta
    """Name (the hostname) and labels used by nodeSelector."""
    spec: NodeSpec = NodeSpec()
    """Scheduling controls."""
    status: NodeStatus | None = None
    """Capacity and health, written by the agent."""


class EncryptedData(_base.Model):
    """Envelope encryption of a Secret's data, set by the server; clients never write it."""

    key_id: str
    """Id of the key-encryption key that wrapped the data key."""
    wrapped_key: _base.Base64
    """The data key, encrypted with the key-encryption key (base64)."""
    nonce: _base.Base64
    """AEAD nonce (base64)."""
    ciphertext: _base.Base64
    """All key/value pairs, encrypted with the data key (base64)."""
    version: _base.PosInt = 1
    """Envelope format version."""


class SecretSpec(_base.Model):
    """Key/value data, stored encrypted. Reads return keys only unless the caller asks to reveal and RBAC allows it."""

    type: str = "Opaque"
    """Free-form type hint, e.g. Opaque, basic-auth, ssh-key."""
    data: dict[_base.SecretKey, _base.Base64] = {}
    """Key -> base64-encoded value. Emptied by the server, which stores it in encrypted."""
    string_data: dict[_base.SecretKey, str] = {}
    """Write-only convenience: key -> clear value, merged into data on write, never returned."""
    encrypted: EncryptedData | None = None
    """Set by the server: the data, envelope-encrypted. Clients see this (never clear values) by default."""


class Secret(_base.Model):
    """Encrypted key/value data (herd-scoped), exposed to steps as env or files."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Secret"] = "Secret"
    """Always Secret."""
    metadata: _base.ObjectMeta
    """Name, herd, labels."""
    spec: SecretSpec = SecretSpec()
    """The data."""


class ServiceAccountSpec(_base.Model):
    """An identity for slices."""

    description: str | None = None
    """What runs as this account."""
    secrets: list[_base.DnsLabel] = []
    """If not empty, the only Secrets slices running as this account may mount."""


class ServiceAccount(_base.Model):
    """Identity a Slice runs as (herd-scoped); mapped to an ephemeral UID on the node, bound to Roles."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["ServiceAccount"] = "ServiceAccount"
    """Always ServiceAccount."""
    metadata: _base.ObjectMeta
    """Name, herd, labels."""
    spec: ServiceAccountSpec = ServiceAccountSpec()
    """Options of the account."""


Verb = Literal[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "reveal",
    "escalate",
    "bind",
    "impersonate",
    "*",
]


class PolicyRule(_base.Model):
    """Verbs allowed on resources; a request is allowed if any rule of any bound role allows it."""

    api_groups: list[str] | None = None
    """API groups ('runink.io', '*'); absent means runink.io."""
    resources: list[str] = pydantic.Field(min_length=1)
    """Plural resource names, with subresources as 'pipelineruns/status', or '*'."""
    verbs: list[Verb] = pydantic.Field(min_length=1)
    """Allowed verbs; 'reveal' reads Secret values in clear, '*' allows all."""
    resource_names: list[str] = []
    """If not empty, only these object names."""


class RoleSpec(_base.Model):
    """A set of permissions."""

    rules: list[PolicyRule] = []
    """The permission rules."""


class Role(_base.Model):
    """Permissions within one Herd."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Role"] = "Role"
    """Always Role."""
    metadata: _base.ObjectMeta
    """Name, herd, labels."""
    spec: RoleSpec = RoleSpec()
    """The rules."""


class ClusterRole(_base.Model):
    """Permissions cluster-wide, or in a Herd when bound by a RoleBinding."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["ClusterRole"] = "ClusterRole"
    """Always ClusterRole."""
    metadata: _base.ObjectMeta
    """Name and labels."""
    spec: RoleSpec = RoleSpec()
    """The rules."""


class Subject(_base.Model):
    """Who a binding grants the role to."""

    kind: Literal["User", "Group", "ServiceAccount"]
    """User or Group (from authentication) or a ServiceAccount."""
    name: str
    """User name, group name or service account name."""
    herd: _base.DnsLabel | None = None
    """Herd of a ServiceAccount subject (defaults to the binding's Herd)."""


class RoleRef(_base.Model):
    """The role granted."""

    kind: Literal["Role", "ClusterRole"]
    """Role (same Herd) or ClusterRole."""
    name: _base.DnsLabel
    """Name of the role."""


class RoleBindingSpec(_base.Model):
    """Grants a role to subjects."""

    subjects: list[Subject] = pydantic.Field(min_length=1)
    """Users, groups and service accounts granted the role."""
    role_ref: RoleRef
    """The role granted (cannot change after creation)."""


class RoleBinding(_base.Model):
    """Grants a Role or ClusterRole within one Herd."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["RoleBinding"] = "RoleBinding"
    """Always RoleBinding."""
    metadata: _base.ObjectMeta
    """Name, herd, labels."""
    spec: RoleBindingSpec
    """Subjects and role."""


class ClusterRoleBinding(_base.Model):
    """Grants a ClusterRole in every Herd."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["ClusterRoleBinding"] = "ClusterRoleBinding"
    """Always ClusterRoleBinding."""
    metadata: _base.ObjectMeta
    """Name and labels."""
    spec: RoleBindingSpec
    """Subjects and role (roleRef.kind must be ClusterRole)."""

    @pydantic.model_validator(mode="after")
    def _cluster_role_only(self) -> ClusterRoleBinding:
        if self.spec.role_ref.kind != "ClusterRole":
            raise _pipelines.PathErrors([(("spec", "roleRef", "kind"), "must be ClusterRole")])
        return self


class GitRef(_base.Model):
    """Which revision to follow: at most one of branch, tag, commit (default: branch main)."""

    branch: str | None = None
    """Follow the head of this branch."""
    tag: str | None = None
    """Pin to this tag."""
    commit: str | None = None
    """Pin to this commit SHA."""

    @pydantic.model_validator(mode="after")
    def _at_most_one(self) -> GitRef:
        if sum(x is not None for x in (self.branch, self.tag, self.commit)) > 1:
            raise ValueError("set only one of branch, tag and commit")
        return self


class GitSourceSpec(_base.Model):
    """A path in a Git repository whose manifests are applied and kept in sync."""

    url: str
    """Repository URL (https://, ssh:// or file://)."""
    ref: GitRef = GitRef()
    """Branch, tag or commit to follow."""
    path: str = "."
    """Directory in the repository holding the manifests (recursively)."""
    interval_seconds: _base.PosInt = 120
    """How often to fetch and reconcile (with jitter)."""
    prune: bool = False
    """Delete objects that were applied earlier but are gone from the repository (off by default)."""
    allow_empty: bool = False
    """Allow a sync that finds no manifests (would prune everything)."""
    self_heal: bool = False
    """Revert live changes that drift from the repository; off: drift is only reported."""
    suspend: bool = False
    """Stop syncing."""
    depends_on: list[_base.DnsLabel] = []
    """GitSources that must be Ready before this one syncs."""
    target_herds: list[_base.DnsLabel] = []
    """Herds objects may be applied to (empty: this GitSource's Herd only; all Herds if cluster-scoped)."""
    service_account: _base.DnsLabel | None = None
    """Identity used to apply, so RBAC limits what the repository can change."""
    secret_ref: _base.DnsLabel | None = None
    """Secret with Git credentials (keys: username/password, or identity for SSH)."""
    watch: Literal["commits", "worktree"] = "commits"
    """commits: sync committed revisions; worktree: also uncommitted changes of a local checkout (development)."""
    cluster_wide: bool = False
    """A platform repository: may write cluster-scoped objects (Herds, ClusterRoles) and objects in
    any Herd (targetHerds, when set, still limits the Herds). Needs a cluster-admin identity."""


class InventoryEntry(_base.Model):
    """One object applied by a GitSource."""

    kind: str
    """Kind of the object."""
    herd: str | None = None
    """Herd of the object."""
    name: str
    """Name of the object."""


class DiffSummary(_base.Model):
    """What the last sync changed."""

    created: _base.NonNegInt = 0
    """Objects created."""
    updated: _base.NonNegInt = 0
    """Objects updated."""
    deleted: _base.NonNegInt = 0
    """Objects pruned."""
    unchanged: _base.NonNegInt = 0
    """Objects already in sync."""


class GitSourceStatus(_base.Model):
    """Written by the GitOps controller."""

    synced_revision: str | None = None
    """Commit SHA last applied."""
    last_sync_time: _base.Timestamp | None = None
    """When the last sync finished."""
    conditions: list[_base.Condition] = []
    """Ready, Stalled, Reconciling."""
    last_error: str | None = None
    """The last sync error, with file and line when a manifest was wrong."""
    inventory: list[InventoryEntry] = []
    """Objects applied by this source (used for pruning)."""
    diff_summary: DiffSummary | None = None
    """What the last sync changed."""
    observed_generation: _base.NonNegInt | None = None
    """The metadata.generation the controller last acted on."""
    last_attempted_revision: str | None = None
    """Commit SHA of the last sync attempt (differs from syncedRevision after a failed sync)."""
    applied_as: str | None = None
    """Identity the objects were applied as (service account, or the controller's own)."""
    objects: list[ObjectSync] = []
    """Per-object result of the last sync or drift check (drift appears here with its fields)."""


class ObjectSync(_base.Model):
    """What the last sync or drift check did to one object."""

    kind: str
    """Kind of the object."""
    herd: str | None = None
    """Herd of the object."""
    name: str
    """Name of the object."""
    action: Literal["created", "configured", "unchanged", "pruned", "drifted", "healed"]
    """created/configured/unchanged/pruned by a sync; drifted: live differs from Git (reported
    only, selfHeal off); healed: drift reverted by re-applying Git."""
    fields: list[str] = []
    """Field paths that differed from Git (drifted, healed, configured)."""


class GitSource(_base.Model):
    """A Git repository path synced by the GitOps controller (in a Herd, or cluster-wide without herd)."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["GitSource"] = "GitSource"
    """Always GitSource."""
    metadata: _base.ObjectMeta
    """Name, herd (absent for a cluster-wide source), labels."""
    spec: GitSourceSpec
    """What to sync."""
    status: GitSourceStatus | None = None
    """Sync state."""


class ObjectReference(_base.Model):
    """Points at one object."""

    kind: str
    """Kind of the object."""
    herd: str | None = None
    """Herd of the object (absent for cluster-scoped)."""
    name: str
    """Name of the object."""
    uid: str | None = None
    """uid of the object."""


class EventSpec(_base.Model):
    """What happened to an object, shown by `runink describe`."""

    involved_object: ObjectReference
    """The object the event is about."""
    type: Literal["Normal", "Warning"] = "Normal"
    """Normal, or Warning for something a user should look at."""
    reason: str
    """CamelCase reason, e.g. Scheduled, FailedScheduling, OOMKilled."""
    message: str = ""
    """Human-readable detail."""
    source: str | None = None
    """Component that reported it, e.g. scheduler or agent/node-1."""
    count: _base.PosInt = 1
    """How many times it happened (repeats are aggregated)."""
    first_timestamp: _base.Timestamp | None = None
    """First occurrence."""
    last_timestamp: _base.Timestamp | None = None
    """Latest occurrence."""
    ttl_seconds: _base.PosInt = 3600
    """The event is deleted this long after lastTimestamp."""


class Event(_base.Model):
    """A record of something that happened (herd-scoped, or cluster events without herd)."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Event"] = "Event"
    """Always Event."""
    metadata: _base.ObjectMeta
    """Name and herd (absent for events about cluster-scoped objects)."""
    spec: EventSpec
    """The event."""


__all__ = [
    "ClusterRole",
    "ClusterRoleBinding",
    "EncryptedData",
    "Event",
    "EventSpec",
    "GitRef",
    "GitSource",
    "GitSourceSpec",
    "GitSourceStatus",
    "Herd",
    "HerdSpec",
    "HerdStatus",
    "Node",
    "NodeResources",
    "NodeSpec",
    "NodeStatus",
    "ObjectReference",
    "PolicyRule",
    "Quota",
    "Role",
    "RoleBinding",
    "RoleBindingSpec",
    "RoleRef",
    "RoleSpec",
    "Secret",
    "SecretSpec",
    "ServiceAccount",
    "ServiceAccountSpec",
    "Subject",
    "Taint",
    "Verb",
]
