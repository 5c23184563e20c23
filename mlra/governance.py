"""What the audit trail says about a registered model: the one source of truth for decisions.

The MLflow registry is editable by anyone with write access (its UI edits tags and aliases), so
nothing mlra decides is read back from it. Instead the verified audit trail is *replayed*
(:func:`replay`) into a :class:`ModelState`: which versions were registered (with the adapter
sha256, metrics hash and validation verdict of their registration record), each version's last
gate decision, approvals, rejections and rollbacks, and where ``champion`` and ``challenger``
must point. Promotion decides from that state; the registry's tags and model card are only its
projection for the UI (:func:`project_tags`), and :func:`reconcile` lists every place where the
live registry disagrees with it — an alias moved by hand, a version copied or registered outside
mlra, a tag edited or deleted, a version deleted, the trail switched or emptied.

Modules (docs/modules.md) are registered models of their own, replayed the same way; the
``bundle`` records say which module champions and which router served from when
(:class:`BundleRecord`, :func:`bundle_at`), and :func:`bundle_findings` lists a bundle record that
no longer matches the module champions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mlra.audit import AuditRecord

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GATES",
    "Approval",
    "BundleRecord",
    "Finding",
    "GateResult",
    "LiveVersion",
    "ModelState",
    "VersionState",
    "bundle_at",
    "bundle_findings",
    "bundle_history",
    "key_identity",
    "project_tags",
    "reconcile",
    "replay",
    "version_label",
]


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict on a version (or a bundle) and why."""

    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{'pass' if self.passed else 'FAIL'} {self.name}: {self.detail}"


CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
# the promotion gates, in the order they are checked (mlra.promotion)
GATES: Final = (
    "registered",
    "validation",
    "artifact",
    "champion",
    "overall_gain",
    "slice_regression",
)
# The lineage a registration record carries, projected onto tags of the same name (``mlra.<key>``).
LINEAGE_KEYS: Final = (
    "git_commit",
    "data_hash",
    "params_hash",
    "base_model",
    "base_fingerprint",
    "adapter_sha256",
    "metrics_sha256",
    "validation",
    "parent_version",
    "mlra_version",
    "run_id",
    "training_run_id",
)


@dataclass(frozen=True)
class Approval:
    """A person's (or the policy's) decision about one version, from its audit record."""

    by: str
    reason: str
    seq: int
    time: str
    approved: bool
    signature: Mapping[str, Any] | None = None


@dataclass
class VersionState:
    """One registered version as the trail tells it."""

    version: str
    registration: AuditRecord
    gate: str | None = None  # the last gate outcome: "passed" or "refused:<gate>"
    gate_record: AuditRecord | None = None
    approval: Approval | None = None  # the newest approval
    rejection: Approval | None = None  # the newest rejection
    rolled_back: AuditRecord | None = None  # the newest rollback away from this version
    promoted: AuditRecord | None = None  # the newest promotion to champion
    latest: dict[str, AuditRecord] = field(default_factory=dict)  # newest record per action

    @property
    def details(self) -> Mapping[str, Any]:
        return self.registration.details

    @property
    def adapter_sha256(self) -> str:
        return str(self.details.get("adapter_sha256", ""))

    @property
    def registered_by(self) -> str:
        return self.registration.actor

    @property
    def trained_by(self) -> str:
        return str(self.details.get("trained_by") or self.registration.actor)

    @property
    def validation(self) -> str:
        return str(self.details.get("validation", "missing"))

    @property
    def parent(self) -> str | None:
        parent = str(self.details.get("parent_version", "none"))
        return None if parent == "none" else parent

    @property
    def approved(self) -> bool:
        """Approved, and not rejected or rolled back since."""
        if self.approval is None:
            return False
        later = [self.rejection.seq if self.rejection else -1]
        later.append(self.rolled_back.seq if self.rolled_back else -1)
        return self.approval.seq > max(later)

    @property
    def status(self) -> str:
        """One phrase for people: where the version stands."""
        if self.rolled_back is not None and (
            self.promoted is None or self.rolled_back.seq > self.promoted.seq
        ):
            return "rolled back (was champion)"
        if self.promoted is not None:
            return "promoted (served as champion)"
        if self.rejection is not None and not self.approved:
            return "rejected"
        if self.gate is None:
            return "registered (gates not run yet)"
        if self.gate != "passed":
            return f"refused ({self.gate})"
        return "approved, not promoted" if self.approved else "awaiting approval"


@dataclass
class ModelState:
    """The registered model as the trail tells it."""

    model: str
    versions: dict[str, VersionState] = field(default_factory=dict)
    champion: str | None = None
    champion_record: AuditRecord | None = None  # the promotion/rollback that set ``champion``
    challenger: str | None = None
    previous: dict[str, str | None] = field(default_factory=dict)  # version -> champion it replaced
    duplicates: list[str] = field(default_factory=list)  # versions registered twice (a reset store)
    records: int = 0  # how many records are about this model

    def version(self, version: str) -> VersionState | None:
        return self.versions.get(str(version))


@dataclass(frozen=True)
class Finding:
    """One way the live registry disagrees with the trail."""

    kind: str  # "trail", "alias", "version", "tag"
    subject: str  # e.g. "champion", "v3", "v3 mlra.gate"
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


def replay(records: Iterable[AuditRecord], model: str) -> ModelState:
    """The state of ``model`` after every record about it, in trail order. ``records`` must come
    from a verified trail: replay trusts their order and content."""
    state = ModelState(model)
    for r in records:
        if r.subject.get("model") != model:
            continue
        state.records += 1
        raw = r.subject.get("version")
        if raw is None:
            continue
        v = str(raw)
        if r.action == "registration":
            if v in state.versions:
                state.duplicates.append(v)
            state.versions[v] = VersionState(v, r)
        vs = state.versions.get(v)
        if vs is None:
            continue
        vs.latest[r.action] = r
        outcome = str(r.details.get("outcome", ""))
        if r.action == "gate":
            vs.gate, vs.gate_record = outcome, r
            if r.details.get("requested") == CHALLENGER:
                if outcome == "passed":
                    state.challenger = v
                elif state.challenger == v:
                    state.challenger = None
        elif r.action in ("approval", "rejection"):
            decision = Approval(
                r.actor,
                str(r.details.get("reason", "")),
                r.seq,
                r.time,
                r.action == "approval",
                r.details.get("signature"),
            )
            if r.action == "approval":
                vs.approval = decision
            else:
                vs.rejection = decision
                if state.challenger == v:
                    state.challenger = None
        elif r.action == "promotion" and outcome == "done":
            previous = str(r.details.get("previous", "none"))
            state.previous[v] = None if previous == "none" else previous
            state.champion, state.champion_record = v, r
            vs.promoted = r
            if state.challenger == v:
                state.challenger = None
        elif r.action == "rollback" and outcome == "done":
            away = str(r.details.get("from", ""))
            if away in state.versions:
                state.versions[away].rolled_back = r
            state.champion, state.champion_record = v, r
    return state


def project_tags(state: ModelState, version: str) -> dict[str, str]:
    """The ``mlra.*`` tags a version shows in the registry UI: a projection of the trail (the
    lineage of its registration record, its last decisions and the anchors of its records)."""
    vs = state.versions[version]
    tags = {f"mlra.{k}": str(vs.details[k]) for k in LINEAGE_KEYS if k in vs.details}
    for action, record in vs.latest.items():
        tags[f"mlra.audit.{action}"] = f"{record.seq}:{record.hash}"
    if vs.gate is not None:
        tags["mlra.gate"] = vs.gate
    for prefix, decision in (("approv", vs.approval), ("reject", vs.rejection)):
        if decision is not None:
            tags[f"mlra.{prefix}ed_by"] = decision.by
            tags[f"mlra.{'approval' if prefix == 'approv' else 'rejection'}_reason"] = (
                decision.reason
            )
            tags[f"mlra.{prefix}ed_at"] = decision.time
    if vs.promoted is not None:
        tags["mlra.promoted_at"] = vs.promoted.time
        tags["mlra.previous_champion"] = str(vs.promoted.details.get("previous", "none"))
    if vs.rolled_back is not None:
        tags["mlra.rolled_back_at"] = vs.rolled_back.time
        tags["mlra.rolled_back_by"] = vs.rolled_back.actor
        tags["mlra.rollback_reason"] = str(vs.rolled_back.details.get("reason", ""))
    return {k: _tag_value(v) for k, v in tags.items()}


@dataclass(frozen=True)
class LiveVersion:
    """What the registry shows of one version right now."""

    tags: Mapping[str, str]
    source: str  # redacted


def reconcile(
    state: ModelState, aliases: Mapping[str, str | None], live: Mapping[str, LiveVersion]
) -> list[Finding]:
    """Every way the live registry (``aliases``, ``live`` versions) disagrees with the trail's
    ``state``: each alias against the latest promotion or rollback, each version against its own
    registration record (adapter sha256, source), versions the trail registered that are gone or
    registered twice, and every ``mlra.*`` tag that differs from the projection."""
    findings: list[Finding] = []
    for alias, want in ((CHAMPION, state.champion), (CHALLENGER, state.challenger)):
        have = aliases.get(alias)
        if have != want:
            why = (
                f"record {state.champion_record.seq}"
                if alias == CHAMPION and state.champion_record is not None
                else "its records"
            )
            message = (
                f"points at {version_label(have)}, but the trail ({why}) says {version_label(want)}"
            )
            findings.append(Finding("alias", alias, message))
    for v, version in live.items():
        vs = state.version(v)
        if vs is None:
            anchor = version.tags.get("mlra.audit.registration", "")
            seq = anchor.partition(":")[0]
            copied = (
                f"; its registration anchor is record {seq}, about another version"
                if seq.isdigit()
                else ""
            )
            findings.append(
                Finding("version", f"v{v}", f"has no registration record of its own{copied}")
            )
            continue
        have_sha = str(version.tags.get("mlra.adapter_sha256"))
        if have_sha != vs.adapter_sha256:
            findings.append(
                Finding(
                    "version",
                    f"v{v}",
                    f"adapter sha256 {have_sha[:12]}… differs from its registration record "
                    f"({vs.adapter_sha256[:12]}…)",
                )
            )
        recorded = vs.details.get("source")
        if recorded is not None and version.source != recorded:
            message = f"source {version.source} differs from its registration record ({recorded})"
            findings.append(Finding("version", f"v{v}", message))
        findings += tag_findings(state, v, version.tags)
    for v in state.versions:
        if v not in live:
            message = "registered in the trail but gone from the registry"
            findings.append(Finding("version", f"v{v}", message))
    for v in state.duplicates:
        message = "registered twice in the trail (was the store reset?)"
        findings.append(Finding("version", f"v{v}", message))
    return findings


def version_label(version: str | None) -> str:
    """``v3`` for a version, ``none`` for no version (how messages name an alias's target)."""
    return f"v{version}" if version else "none"


def tag_findings(state: ModelState, version: str, live: Mapping[str, str]) -> list[Finding]:
    """Each ``mlra.*`` tag of ``version`` that differs from the projection, is missing, or should
    not be there (named, with both values)."""
    expected = project_tags(state, version)
    found: list[Finding] = []
    for key in sorted(set(expected) | {k for k in live if k.startswith("mlra.")}):
        want, have = expected.get(key), live.get(key)
        if want == have:
            continue
        if want is None:
            message = f"set to {_short(have)} in the registry, but the trail records no such value"
        elif have is None:
            message = f"missing in the registry; the trail says {_short(want)}"
        else:
            message = f"is {_short(have)} in the registry; the trail says {_short(want)}"
        found.append(Finding("tag", f"v{version} {key}", message))
    return found


def key_identity(name: str) -> str:
    """The keyring identity (a file-safe name) of a person or actor: ``Ada Lovelace`` ->
    ``Ada-Lovelace-<8 hex>``; a name that is already file-safe is kept as it is."""
    import hashlib
    import re

    slug = re.sub(r"[^A-Za-z0-9._@+-]+", "-", name).strip("-.")[:48] or "actor"
    if slug == name and slug[0].isalnum():
        return slug
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _tag_value(value: str) -> str:
    from mlra.audit import redact

    return str(redact(value))[:5000]  # MLflow's tag value limit is 5000 (8000 on newer stores)


def _short(value: str | None) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…'"


# -- bundles (docs/modules.md) ---------------------------------------------------------------


@dataclass(frozen=True)
class BundleRecord:
    """One ``bundle`` record: the module champions and the router that served from its time on."""

    number: int
    time: str
    actor: str
    reason: str
    modules: dict[str, dict[str, Any]]  # module -> {model, version (None: base), adapter_sha256}
    router: dict[str, Any] | None  # {sha256, run_id, artifact_uri}; None: no router yet
    seq: int

    @classmethod
    def from_record(cls, r: AuditRecord) -> BundleRecord:
        return cls(
            number=int(r.subject["bundle"]),
            time=r.time,
            actor=r.actor,
            reason=str(r.details.get("reason", "")),
            modules=dict(r.details.get("modules", {})),
            router=r.details.get("router"),
            seq=r.seq,
        )

    def versions(self) -> dict[str, str | None]:
        """module -> champion version (None: the module has none, its rows go to the base)."""
        return {m: (None if e.get("version") is None else str(e["version"]))
                for m, e in self.modules.items()}  # fmt: skip

    def __str__(self) -> str:
        parts = [f"{m} {version_label(v)}" for m, v in self.versions().items()]
        router = self.router["sha256"][:12] if self.router else "none"
        return f"bundle {self.number} ({self.time[:19]}): {', '.join(parts)}; router {router}"


def bundle_history(records: Iterable[AuditRecord], name: str) -> list[BundleRecord]:
    """Every bundle record of the model family ``name`` (``registry.model_name``), in order."""
    return [
        BundleRecord.from_record(r)
        for r in records
        if r.action == "bundle" and r.subject.get("name") == name
    ]


def bundle_at(
    records: Iterable[AuditRecord], name: str, when: dt.datetime | None = None
) -> BundleRecord | None:
    """The bundle that served at ``when`` (default: now): the last record at or before it."""
    found = None
    for b in bundle_history(records, name):
        if when is not None and dt.datetime.fromisoformat(b.time) > when:
            break
        found = b
    return found


def bundle_findings(records: Sequence[AuditRecord]) -> list[Finding]:
    """Where the newest bundle record of each model family disagrees with the module champions
    that the trail gives (a champion moved and no bundle was recorded after it): one finding per
    module. ``records`` must come from a verified trail."""
    newest: dict[str, BundleRecord] = {}
    for r in records:
        if r.action == "bundle":
            newest[str(r.subject.get("name"))] = BundleRecord.from_record(r)
    found = []
    for last in newest.values():
        for module, entry in last.modules.items():
            recorded = None if entry.get("version") is None else str(entry["version"])
            champion = replay(records, str(entry.get("model"))).champion
            if champion != recorded:
                found.append(
                    Finding(
                        "bundle",
                        f"bundle {last.number} {module}",
                        f"records {version_label(recorded)}, but the trail's champion of "
                        f"{entry.get('model')} is {version_label(champion)}: run "
                        "`mlra bundle record --by NAME --reason TEXT`",
                    )
                )
    return found
