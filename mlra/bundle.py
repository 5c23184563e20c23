"""The bundle: what serves in modular mode — the frozen base, one adapter and head per module, the
base head, and the router that picks a module for a request that does not name its domain.

A request row goes to

- the module of its domain, when it names a domain that has a module in the bundle;
- the base (frozen encoder, adapters off, with the base head), when it names the source domain;
- else (no domain, or one the bundle does not know) wherever the router sends it: the module of
  the domain it predicts, or — when its top probability is below ``min_confidence``, or it
  predicts a domain whose module is not in the bundle — the fallback (the base, or a module).

One pass per batch: the encoder layers below every adapter run once, the router reads its
features from them (when its layer is at or below them), and the upper layers run once for all
rows under :func:`mlra.route` (row ``i`` through its own module). So a row's output does not
depend on which other modules the bundle holds: replacing one module leaves the others' outputs
bit-identical. Several bundles on one base (the evaluation's base, candidate and serving bundle)
share that pass: :func:`mlra.bundle_pass.predict_together`, of which :meth:`Bundle.predict` is
the one-bundle case.

Each module folder is a candidate folder (:mod:`mlra.candidate`), verified strictly (file hashes
and base fingerprint); the router folder is verified by :meth:`mlra.router.Router.load` (and its
sha256 checked when given).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import torch
from torch import nn

from mlra._hashing import canonical_json, sha256_hex
from mlra.candidate import ADAPTER_DIR
from mlra.errors import BaseModelMismatchError, ConfigError

if TYPE_CHECKING:
    from mlra.classifier import SentenceClassifier
    from mlra.router import Router

__all__ = ["HOW", "Bundle", "BundlePrediction"]

HOW: Final = ("domain", "router", "fallback")  # how a row's module was chosen


@dataclass(frozen=True)
class BundlePrediction:
    """Per row, in input order: the class, the probabilities, where the row went and why.

    ``modules[i]`` is the module that served row ``i`` (None: the base); ``domains[i]`` the
    domain it was served as (the named one, or the router's top domain, also for a row that fell
    back); ``confidence[i]`` the router's top probability (1.0 for a row that named its domain);
    ``how[i]`` one of :data:`HOW`.
    """

    labels: tuple[str, ...]
    label: torch.Tensor  # [N] class index
    probabilities: torch.Tensor  # [N, C] float32
    modules: list[str | None]
    domains: list[str | None]
    confidence: torch.Tensor  # [N] float32
    how: list[str]

    def label_names(self) -> list[str]:
        """The predicted class names."""
        return [self.labels[k] for k in self.label.tolist()]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per row: label, module, domain, confidence, how."""
        return [
            {"label": self.labels[k], "module": m, "domain": d, "confidence": float(c), "how": h}
            for k, m, d, c, h in zip(self.label.tolist(), self.modules, self.domains,
                                     self.confidence.tolist(), self.how, strict=True)
        ]  # fmt: skip


class Bundle:
    """Base + module adapters + heads + router on one model (see the module docstring)."""

    def __init__(
        self,
        model: SentenceClassifier,
        tokenizer: Any,
        router: Router,
        base_head: nn.Linear,
        heads: Mapping[str, nn.Linear],
        adapter_sha256: Mapping[str, str],
        *,
        min_confidence: float,
        fallback: str | None,
        max_length: int,
    ) -> None:
        """Use :meth:`load`: it verifies every file and loads the adapters into ``model``."""
        self.model = model
        self.tokenizer = tokenizer
        self.router = router
        self.base_head = base_head
        self.heads = dict(heads)
        self.adapter_sha256 = dict(adapter_sha256)
        self.min_confidence = min_confidence
        self.fallback = fallback
        self.max_length = max_length
        self.labels: tuple[str, ...] = tuple(router.labels)
        self.source_domain = _source_domain(router)
        from mlra.classifier import adapter_free_layers

        self._shared = adapter_free_layers(model)  # layers below every adapter: run once

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules this bundle serves, sorted."""
        return tuple(sorted(self.heads))

    @property
    def router_sha256(self) -> str:
        return self.router.sha256

    @property
    def sha256(self) -> str:
        """One identity for what serves: each module's adapter sha256 and the router's."""
        return sha256_hex(canonical_json(self.describe(with_sha256=False)))

    def describe(self, *, with_sha256: bool = True) -> dict[str, Any]:
        """What this bundle is, as plain data (for records and reports)."""
        out: dict[str, Any] = {
            "modules": {m: {"adapter_sha256": self.adapter_sha256[m]} for m in self.modules},
            "router_sha256": self.router_sha256,
            "min_confidence": self.min_confidence,
            "fallback": self.fallback,
        }
        return {**out, "sha256": self.sha256} if with_sha256 else out

    # -- loading --------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        modules: Mapping[str, str | Path],
        router_dir: str | Path,
        *,
        router_sha256: str | None = None,
        min_confidence: float = 0.5,
        fallback: str | None = None,
        model: SentenceClassifier | None = None,
        tokenizer: Any = None,
        max_length: int | None = None,
    ) -> Bundle:
        """Verify and load a bundle. ``modules``: module name -> candidate folder holding
        ``adapter/`` (loaded with ``strict=True``: file hashes and base fingerprint).
        ``fallback``: None or ``"base"`` (the base) or a module of ``modules``. ``model`` and
        ``tokenizer`` default to the packaged MiniLM; a given model must carry no adapter named
        like a module. ``max_length`` defaults to what the modules were trained with (else 64)."""
        import mlra
        from mlra.classifier import SentenceClassifier
        from mlra.config import FALLBACKS_BASE
        from mlra.router import Router

        if not 0.0 <= min_confidence <= 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        fallback = None if fallback in (None, FALLBACKS_BASE) else fallback
        if fallback is not None and fallback not in modules:
            raise ConfigError(
                f"the fallback {fallback!r} is neither 'base' nor a module of this bundle "
                f"({', '.join(sorted(modules)) or 'none'})"
            )
        router, base_head = Router.load(Path(router_dir), expected_sha256=router_sha256)
        labels = tuple(router.labels)
        manifests = {m: mlra.inspect_adapter(Path(modules[m]) / ADAPTER_DIR) for m in modules}
        lengths = {_check_module(m, man.metadata, labels) for m, man in manifests.items()}
        poolings = {str(man.metadata.get("pooling", "mean")) for man in manifests.values()}
        if len(poolings) > 1:
            raise ConfigError(f"the modules were trained with different poolings: {poolings}")
        if model is None:
            from mlra.base_model import load_base_model

            encoder, tokenizer = load_base_model()
            model = SentenceClassifier(encoder, len(labels), pooling=min(poolings, default="mean"))
        elif tokenizer is None:
            raise ConfigError("Bundle.load was given a model but no tokenizer; pass both")
        if poolings and model.pooling not in poolings:
            raise ConfigError(
                f"the model pools by {model.pooling!r} but the modules were trained with "
                f"{poolings.pop()!r}"
            )
        if int(model.head.out_features) != len(labels):
            raise ConfigError(
                f"the model's head has {model.head.out_features} classes but the router's labels "
                f"are {list(labels)}"
            )
        _check_base(router, model, Path(router_dir))
        heads: dict[str, nn.Linear] = {}
        for m in sorted(modules):  # a fixed order: the same layout whatever was loaded before
            mlra.load_adapter(model, Path(modules[m]) / ADAPTER_DIR, name=m, strict=True)
            heads[m] = copy.deepcopy(model.head)  # the artifact's head (modules_to_save)
        known = {x for x in lengths if x}
        if max_length is None and len(known) > 1:
            raise ConfigError(f"the modules were trained with different max_length {known}: pass "
                              "max_length=")  # fmt: skip
        length = max_length or (known.pop() if known else 64)
        model.eval()
        sha = {m: man.sha256 for m, man in manifests.items()}
        base_head = base_head.to(next(model.parameters()).device).eval()
        return cls(model, tokenizer, router, base_head, heads, sha, min_confidence=min_confidence,
                   fallback=fallback, max_length=int(length))  # fmt: skip

    # -- serving --------------------------------------------------------------------------------

    def destination(self, domain: str | None) -> tuple[bool, str | None]:
        """Where a row naming ``domain`` goes: ``(False, module)`` for a domain with a module in
        this bundle, ``(False, None)`` (the base) for the source domain, ``(True, None)`` (the
        router decides) for None and any other name."""
        if domain is None:
            return True, None
        if domain == self.source_domain:
            return False, None
        module = self.router.modules.get(domain, domain)
        return (False, module) if module in self.heads else (True, None)

    def predict(
        self,
        texts: Sequence[str],
        domains: Sequence[str | None] | None = None,
        batch_size: int = 64,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> BundlePrediction:
        """Classify ``texts`` (shortest first in batches of ``batch_size``, results in input
        order). ``domains[i]`` names row ``i``'s domain, or None to let the router choose.
        ``progress(n)``: ``n`` more rows done."""
        from mlra.bundle_pass import predict_together

        return predict_together([(self, domains)], texts, batch_size, progress=progress)[0]

    @property
    def device(self) -> torch.device:
        """Where the model's weights lie (batches go there)."""
        return next(self.model.parameters()).device

    def _batch(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        named: Sequence[str | None],
        prefix: tuple[torch.Tensor, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[str | None], list[str | None], list[str]]:
        """One batch: (probabilities, confidence, module, domain, how) per row. ``prefix``:
        the hidden states after the first ``k`` encoder layers (``k`` at most the layers below
        every adapter of this bundle), computed by a model with this base; else computed here."""
        import mlra
        from mlra.router import pooled_after

        model, shared = self.model, self._shared
        if prefix is None:
            hidden = model.hidden_after(ids, mask, shared) if shared else None
        else:
            hidden, done = prefix
            assert 0 < done <= shared, (done, shared)  # internal: predict_together's choice
            hidden = model.hidden_between(hidden, mask, done, shared) if done < shared else hidden
        goes = [self.destination(d) for d in named]
        routed = [r for r, _ in goes]
        modules: list[str | None] = [m for _, m in goes]
        domains: list[str | None] = [None if r else d for d, r in zip(named, routed, strict=True)]
        how = ["router" if r else "domain" for r in routed]
        confidence = torch.ones(len(named))
        if any(routed):
            if hidden is not None and self.router.layer == shared:
                pooled = _mean_pool(hidden, mask)  # the router's features from the shared prefix
            else:  # the frozen base's features (adapters off), computed apart
                pooled = pooled_after(model, ids, mask, self.router.layer)
            choice = self.router.choose(pooled, self.min_confidence, self.fallback)
            for i in (i for i, r in enumerate(routed) if r):
                module, fell = choice.modules[i], bool(choice.fell_back[i])
                if not fell and module is not None and module not in self.heads:
                    module, fell = self.fallback, True  # predicted a module this bundle lacks
                modules[i], domains[i] = module, choice.domains[i]
                how[i] = "fallback" if fell else "router"
                confidence[i] = float(choice.confidence[i])
        if all(m is None for m in modules):
            with mlra.disabled(model):
                pooled_out = self._upper(ids, mask, hidden)
        else:
            with mlra.route(model, modules):
                pooled_out = self._upper(ids, mask, hidden)
        logits = torch.empty(len(named), len(self.labels), device=pooled_out.device)
        for key in {m for m in modules}:
            rows = torch.tensor([m == key for m in modules], device=pooled_out.device)
            head = self.base_head if key is None else self.heads[key]
            logits[rows] = head(pooled_out)[rows].to(logits.dtype)  # the full batch: same shapes
        probabilities = torch.softmax(logits.float(), dim=-1).cpu()
        return probabilities, confidence, modules, domains, how

    def _upper(
        self, ids: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None
    ) -> torch.Tensor:
        """The pooled embedding: from the shared prefix's output, or the whole encoder."""
        if hidden is None:
            return self.model.embed(ids, mask)
        return self.model.embed_from(hidden, mask, self._shared)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, ``[batch, tokens, hidden]`` -> ``[batch, hidden]``."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def _check_base(router: Router, model: SentenceClassifier, folder: Path) -> None:
    """The router and base head were fitted on this base model (its whole frozen encoder)."""
    from mlra.router import base_fingerprint

    found = base_fingerprint(model)
    if router.base_fingerprint != found:
        raise BaseModelMismatchError(
            f"the router in {folder} was fitted on base model "
            f"{router.base_fingerprint[:12] or '?'}…, but this model's base is {found[:12]}…: "
            "use the base model it was trained with"
        )


def _source_domain(router: Router) -> str:
    """The router's class that goes to the base (the source domain)."""
    base = [d for d in router.domains if router.modules.get(d) is None]
    if len(base) != 1:
        raise ConfigError(
            f"the router must send exactly one domain (the source) to the base, got {base}"
        )
    return base[0]


def _check_module(module: str, meta: Mapping[str, Any], labels: tuple[str, ...]) -> int | None:
    """A module's manifest metadata agrees with the bundle; returns its training max_length."""
    named = meta.get("module")
    if named is not None and named != module:
        raise ConfigError(f"the folder given for module {module!r} holds module {named!r}")
    if tuple(meta.get("labels") or ()) != labels:
        raise ConfigError(
            f"module {module!r} predicts {meta.get('labels')} but the router's labels are "
            f"{list(labels)}"
        )
    length = meta.get("params", {}).get("train", {}).get("max_length")
    return int(length) if length else None
