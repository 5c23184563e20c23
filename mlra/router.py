"""The learned router: which module serves a request that does not name its domain.

A linear classifier over the frozen base's hidden states after ``layer`` encoder layers,
mean-pooled (:func:`pooled_after`), with adapters off. Those are the layers below the adapters:
training caches them and serving computes them once per batch anyway, so routing costs one small
matrix product. Classes are domains: the source domain (served by the base: frozen encoder + base
head) and each module's domain (served by that module).

A router folder::

    router.safetensors    the linear layer (features -> domain classes)
    base_head.safetensors the base head (what rows routed to the base use)
    router.json           domains, modules, layer, pooling, labels, base fingerprint, the sha256
                          of both files, lineage metadata

:attr:`Router.sha256` is the sha256 of the ``router.json`` bytes; as it records the other files'
hashes, one hash names the whole folder. :meth:`Router.load` verifies every file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from mlra._hashing import sha256_hex
from mlra.classifier import SentenceClassifier
from mlra.errors import ConfigError, DataError, IntegrityError

__all__ = [
    "BASE_HEAD_FILE",
    "ROUTER_FILE",
    "ROUTER_JSON",
    "Router",
    "RouterChoice",
    "base_fingerprint",
    "check_layer",
    "fit_router",
    "pooled_after",
    "router_features",
]

ROUTER_FILE: Final = "router.safetensors"
BASE_HEAD_FILE: Final = "base_head.safetensors"
ROUTER_JSON: Final = "router.json"
FORMAT: Final = 1
BASE: Final = "base"  # the fallback name that means the base model (as params.yaml spells it)


@dataclasses.dataclass(frozen=True)
class RouterChoice:
    """Per row: the router's top domain, the module serving the row (None: the base), the top
    probability, and whether the row fell back (top probability below ``min_confidence``: the
    module is then the fallback, the domain still the router's guess)."""

    domains: list[str]
    modules: list[str | None]
    confidence: torch.Tensor  # [rows], float32
    fell_back: list[bool]


class Router:
    """A linear classifier from pooled features to domains, and the module of each domain."""

    def __init__(
        self,
        domains: Sequence[str],
        modules: Mapping[str, str | None],
        layer: int,
        linear: nn.Linear,
        labels: Sequence[str],
        *,
        base_fingerprint: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.domains = tuple(domains)
        if len(set(self.domains)) != len(self.domains) or len(self.domains) < 2:
            raise ConfigError(f"a router needs two or more distinct domains, got {list(domains)}")
        missing = [d for d in self.domains if d not in modules]
        if missing:
            raise ConfigError(f"router domains {missing} have no entry in modules {dict(modules)}")
        if linear.out_features != len(self.domains):
            raise ConfigError(
                f"the router's linear layer has {linear.out_features} outputs for "
                f"{len(self.domains)} domains {list(self.domains)}"
            )
        self.modules = {d: modules[d] for d in self.domains}
        self.layer, self.linear, self.labels = int(layer), linear, tuple(labels)
        self.base_fingerprint = base_fingerprint
        self.metadata = dict(metadata or {})
        self._sha256 = ""

    @property
    def sha256(self) -> str:
        """sha256 of the ``router.json`` this router was saved as or loaded from ('' before)."""
        return self._sha256

    @torch.no_grad()
    def probabilities(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[rows, hidden]`` pooled features (:func:`pooled_after`) -> ``[rows, domains]``."""
        weight = self.linear.weight
        logits = self.linear(pooled.to(device=weight.device, dtype=weight.dtype))
        return torch.softmax(logits.float(), dim=-1)

    def choose(
        self, pooled: torch.Tensor, min_confidence: float, fallback: str | None
    ) -> RouterChoice:
        """Each row's domain and module; a top probability below ``min_confidence`` sends the
        row to ``fallback`` (None or ``"base"``: the base; else one of this router's modules)."""
        known = {m for m in self.modules.values() if m is not None}
        if fallback == BASE:
            fallback = None
        if fallback is not None and fallback not in known:
            raise ConfigError(
                f"router fallback {fallback!r} is not one of its modules {sorted(known)} or 'base'"
            )
        probs = self.probabilities(pooled)
        confidence, top = probs.max(dim=-1)
        low = (confidence < min_confidence).tolist()
        domains = [self.domains[i] for i in top.tolist()]
        modules = [fallback if f else self.modules[d] for d, f in zip(domains, low, strict=True)]
        return RouterChoice(domains, modules, confidence.cpu(), low)

    # -- the folder -------------------------------------------------------------------------------

    def save(
        self,
        folder: str | Path,
        base_head: nn.Linear,
        *,
        base_fingerprint: str,
        metadata: Mapping[str, Any],
    ) -> str:
        """Write the router folder (files first, ``router.json`` last, each atomically); returns
        :attr:`sha256`."""
        import safetensors.torch

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        blobs = {
            name: bytes(safetensors.torch.save(_state(module), metadata={"format": "pt"}))
            for name, module in ((ROUTER_FILE, self.linear), (BASE_HEAD_FILE, base_head))
        }
        record = {
            "format": FORMAT,
            "domains": list(self.domains),
            "modules": self.modules,
            "layer": self.layer,
            "pooling": "mean",
            "labels": list(self.labels),
            "base_fingerprint": base_fingerprint,
            "files": {name: sha256_hex(blob) for name, blob in blobs.items()},
            "metadata": dict(metadata),
        }
        blobs[ROUTER_JSON] = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        for name, blob in blobs.items():  # router.json last: it vouches for the others
            tmp = out / (name + ".tmp")
            tmp.write_bytes(blob)
            os.replace(tmp, out / name)
        self.base_fingerprint, self.metadata = base_fingerprint, dict(metadata)
        self._sha256 = sha256_hex(blobs[ROUTER_JSON])
        return self._sha256

    @classmethod
    def load(
        cls, folder: str | Path, expected_sha256: str | None = None
    ) -> tuple[Router, nn.Linear]:
        """The router of ``folder`` and its base head, after checking ``router.json`` against
        ``expected_sha256`` (when given) and every file against the hash ``router.json``
        records: a mismatch is an :class:`IntegrityError` naming the file."""
        import safetensors.torch

        path = Path(folder)
        blob = _read(path / ROUTER_JSON)
        digest = sha256_hex(blob)
        if expected_sha256 is not None and digest != expected_sha256:
            raise IntegrityError(
                f"{path / ROUTER_JSON} has sha256 {digest[:12]}…, not the expected "
                f"{expected_sha256[:12]}…: the router folder was changed or is another router"
            )
        record = _record(blob, path / ROUTER_JSON)
        tensors = {}
        for name in (ROUTER_FILE, BASE_HEAD_FILE):
            data = _read(path / name)
            if sha256_hex(data) != record["files"].get(name):
                raise IntegrityError(
                    f"{path / name} does not match the sha256 {ROUTER_JSON} records for it"
                )
            tensors[name] = safetensors.torch.load(data)
        linear, base_head = (_linear(tensors[n], path / n) for n in (ROUTER_FILE, BASE_HEAD_FILE))
        router = cls(
            record["domains"], record["modules"], record["layer"], linear, record["labels"],
            base_fingerprint=record["base_fingerprint"], metadata=record["metadata"],
        )  # fmt: skip
        router._sha256 = digest
        return router, base_head


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IntegrityError(f"the router file {path} cannot be read: {exc}") from exc


def _record(blob: bytes, path: Path) -> dict[str, Any]:
    """``router.json``'s content, checked for the keys and types a router needs."""
    try:
        record = json.loads(blob)
    except ValueError as exc:
        raise IntegrityError(f"{path} is not valid JSON: {exc}") from exc
    expect = {"format": int, "domains": list, "modules": dict, "layer": int, "labels": list,
              "base_fingerprint": str, "files": dict, "metadata": dict}  # fmt: skip
    bad = [k for k, t in expect.items() if not isinstance(record.get(k), t)]
    if not isinstance(record, dict) or bad:
        raise IntegrityError(f"{path} lacks or mistypes {bad or 'everything'}: not a router")
    if record["format"] != FORMAT:
        raise IntegrityError(f"{path} has format {record['format']}; this mlra reads {FORMAT}")
    return record


def _linear(state: Mapping[str, torch.Tensor], path: Path) -> nn.Linear:
    weight = state.get("weight")
    if weight is None or weight.dim() != 2 or set(state) != {"weight", "bias"}:
        raise IntegrityError(f"{path} does not hold one linear layer (weight and bias)")
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    linear.load_state_dict(state)
    return linear.requires_grad_(False)


# -- features ---------------------------------------------------------------------------------


def _encoder_layers(model: SentenceClassifier) -> int:
    return len(model._layers())


def check_layer(model: SentenceClassifier, layer: int) -> None:
    """Refuse a router layer the encoder does not have (0: the embeddings' output)."""
    total = _encoder_layers(model)
    if not 0 <= layer <= total:
        raise ConfigError(
            f"modules.router.layer must be in [0, {total}] (the encoder's layers), got {layer}"
        )


def pooled_after(
    model: SentenceClassifier, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int
) -> torch.Tensor:
    """The router's features, ``[rows, hidden]``: the mean over valid tokens of the base's hidden
    states after ``layer`` encoder layers, adapters off (whatever the model's own pooling)."""
    import mlra

    check_layer(model, layer)
    with mlra.disabled(model):
        hidden = model.hidden_after(input_ids, attention_mask, layer)  # [rows, tokens, hidden]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@torch.no_grad()
def router_features(
    model: SentenceClassifier,
    tokenizer: Any,
    texts: Sequence[str],
    layer: int,
    *,
    embed: bool = False,
    batch_size: int = 64,
    max_length: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`pooled_after` of ``texts`` (float32, input order) and, with ``embed``, the model's
    own pooled embeddings (what a head sees) from the same pass: the layers below ``layer`` run
    once for both (eval mode, adapters off)."""
    import mlra
    from mlra.classifier import _in_input_order, _length_order, batches

    model.eval()
    hidden_size = int(model.head.in_features)
    if not texts:
        return torch.empty(0, hidden_size), torch.empty(0, hidden_size) if embed else None
    order = _length_order(tokenizer, texts, max_length)
    device = next(model.parameters()).device
    routed: list[torch.Tensor] = []
    embedded: list[torch.Tensor] = []
    for batch in batches(tokenizer, [texts[i] for i in order], batch_size, max_length):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        with mlra.disabled(model):
            hidden = model.hidden_after(ids, mask, layer)
            if embed:
                embedded.append(model.embed_from(hidden, mask, layer).float().cpu())
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        routed.append(((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)).float().cpu())
    out = _in_input_order(torch.cat(routed), order)
    return out, _in_input_order(torch.cat(embedded), order) if embed else None


def fit_router(
    features: torch.Tensor,
    domain_index: torch.Tensor,
    domains: Sequence[str],
    modules: Mapping[str, str | None],
    layer: int,
    labels: Sequence[str],
) -> Router:
    """A router fitted on ``features`` (:func:`pooled_after`) whose row ``i`` comes from domain
    ``domains[domain_index[i]]`` (L2-regularised logistic regression, L-BFGS: deterministic)."""
    from mlra.classifier import fit_head

    counts = torch.bincount(domain_index, minlength=len(domains)).tolist()
    empty = [d for d, n in zip(domains, counts, strict=False) if n == 0]
    if empty or len(counts) != len(domains):
        raise DataError(
            f"the router needs training rows of every domain; none for {empty or counts}"
        )
    linear = nn.Linear(features.shape[1], len(domains))
    fit_head(linear, features.float(), domain_index)
    return Router(domains, modules, layer, linear.requires_grad_(False), labels)


def base_fingerprint(model: SentenceClassifier) -> str:
    """Hex sha256 over the frozen encoder's base weights and buffers (adapters excluded, an
    adapter-wrapped layer hashed as the layer it wraps): the base a router and base head were
    fitted on, the same with or without adapters on the model."""
    import mlra
    from mlra.adapters.base import AdapterLayer

    if mlra.is_merged(model):
        raise ConfigError("unmerge the adapters (mlra.unmerge) before fingerprinting the base")
    wrapped = {
        name: layer
        for name, layer in model.encoder.named_modules()
        if isinstance(layer, AdapterLayer)
    }
    skip = {id(t) for layer in wrapped.values() for t in [*layer.lora_A.parameters(),
                                                           *layer.lora_B.parameters()]}  # fmt: skip
    digest = hashlib.sha256()
    tensors = [*model.encoder.named_parameters(), *model.encoder.named_buffers()]
    named = sorted(((n.replace(".base_layer.", "."), t) for n, t in tensors), key=lambda nt: nt[0])
    for name, tensor in named:
        if id(tensor) in skip:
            continue
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()
