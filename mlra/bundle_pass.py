"""Several bundles (:mod:`mlra.bundle`) over the same texts in one pass.

A bundle's encoder layers below its lowest adapter compute the same function whatever is routed
where; bundles on the same base compute the same function there. :func:`predict_together` runs
those layers once per batch for every bundle (and every naming of the rows: the base alone is a
bundle whose rows all name the source domain), then each bundle's own upper layers. Each result
is bit-identical to the bundle's own :meth:`~mlra.bundle.Bundle.predict` — which is this with one
job — because the batches are the ones that predict forms and the layers run on the same tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from mlra.bundle import BundlePrediction
from mlra.errors import ConfigError

if TYPE_CHECKING:
    from mlra.bundle import Bundle

__all__ = ["predict_together"]


@torch.no_grad()
def predict_together(
    jobs: Sequence[tuple[Bundle, Sequence[str | None] | None]],
    texts: Sequence[str],
    batch_size: int = 64,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[BundlePrediction]:
    """Per job ``(bundle, domains)``: ``bundle.predict(texts, domains, batch_size)``, exactly
    (the same tensors, bit for bit), from one pass over ``texts``.

    Jobs whose bundles share a base (the same base fingerprint, device and ``max_length``, and the
    same tokens for ``texts``) share the batches and the encoder layers below every adapter of
    theirs: those run once per batch, and each job runs only the layers above. Scoring the base,
    a candidate bundle and the serving one thus costs little more than their upper layers. Jobs
    on another base get a pass of their own, batch by batch beside the first. ``progress(n)``:
    ``n`` more rows done by every job."""
    n = len(texts)
    if isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    wanted: list[list[str | None]] = []
    for _, domains in jobs:
        named: list[str | None] = list(domains) if domains is not None else [None] * n
        if len(named) != n:
            raise ConfigError(f"predict() got {n} texts but {len(named)} domains")
        wanted.append(named)
    groups = _sharing_groups([bundle for bundle, _ in jobs], texts)
    passes = [_Pass([jobs[j][0] for j in g], [wanted[j] for j in g], texts, batch_size)
              for g in groups]  # fmt: skip
    for start in range(0, n, batch_size):
        for one in passes:
            one.step(start)
        if progress is not None:
            progress(min(batch_size, n - start))
    out: dict[int, BundlePrediction] = {}
    for g, one in zip(groups, passes, strict=True):
        out |= dict(zip(g, one.predictions(), strict=True))
    return [out[j] for j in range(len(jobs))]


class _Pass:
    """One pass over ``texts`` for bundles on one base: the batches each bundle's own predict
    forms (shortest texts first), the shared layers once per batch, the rest per bundle."""

    def __init__(self, bundles: list[Bundle], wanted: list[list[str | None]],
                 texts: Sequence[str], batch_size: int) -> None:  # fmt: skip
        from mlra.classifier import _length_order

        lead = bundles[0]
        self.bundles, self.batch_size = bundles, batch_size
        self.order = _length_order(lead.tokenizer, texts, lead.max_length) if texts else []
        self.texts = [texts[i] for i in self.order]
        self.wanted = [[named[i] for i in self.order] for named in wanted]
        self.shared = min(b._shared for b in bundles)  # layers without an adapter in any bundle
        self.rows = [_Rows(len(lead.labels)) for _ in bundles]
        for bundle in bundles:
            bundle.model.eval()

    def step(self, start: int) -> None:
        """The batch of rows ``start … start + batch_size - 1`` (in length order), every bundle."""
        from mlra.classifier import batches

        lead, stop = self.bundles[0], start + self.batch_size
        batch = next(batches(lead.tokenizer, self.texts[start:stop], self.batch_size,
                             lead.max_length))  # fmt: skip
        ids, mask = batch["input_ids"].to(lead.device), batch["attention_mask"].to(lead.device)
        k = self.shared
        prefix = (lead.model.hidden_after(ids, mask, k), k) if k else None
        for bundle, named, rows in zip(self.bundles, self.wanted, self.rows, strict=True):
            rows.add(*bundle._batch(ids, mask, named[start:stop], prefix))

    def predictions(self) -> list[BundlePrediction]:
        """Each bundle's prediction, rows back in input order."""
        back = sorted(range(len(self.order)), key=self.order.__getitem__)
        return [rows.prediction(b.labels, back) for b, rows in zip(self.bundles, self.rows,
                                                                    strict=True)]  # fmt: skip


class _Rows:
    """A bundle's outputs, batch after batch, in pass order."""

    def __init__(self, classes: int) -> None:
        self.probs, self.conf = [torch.empty(0, classes)], [torch.empty(0)]
        self.modules: list[str | None] = []
        self.domains: list[str | None] = []
        self.how: list[str] = []

    def add(self, probs: torch.Tensor, conf: torch.Tensor, modules: list[str | None],
            domains: list[str | None], how: list[str]) -> None:  # fmt: skip
        self.probs.append(probs)
        self.conf.append(conf)
        self.modules += modules
        self.domains += domains
        self.how += how

    def prediction(self, labels: tuple[str, ...], back: list[int]) -> BundlePrediction:
        """``back[i]``: the pass position of input row ``i``."""
        probabilities = torch.cat(self.probs)[back]
        return BundlePrediction(
            labels=labels,
            label=probabilities.argmax(-1),
            probabilities=probabilities,
            modules=[self.modules[k] for k in back],
            domains=[self.domains[k] for k in back],
            confidence=torch.cat(self.conf)[back],
            how=[self.how[k] for k in back],
        )


def _sharing_groups(bundles: Sequence[Bundle], texts: Sequence[str]) -> list[list[int]]:
    """The bundles' indices, grouped by whether they can share a pass (first-come order)."""
    groups: list[list[int]] = []
    for j, bundle in enumerate(bundles):
        home = next((g for g in groups if _same_base(bundles[g[0]], bundle, texts)), None)
        if home is None:
            groups.append([j])
        else:
            home.append(j)
    return groups


def _same_base(a: Bundle, b: Bundle, texts: Sequence[str]) -> bool:
    """Whether ``b``'s layers below its adapters compute what ``a``'s do, on the same batches:
    the same base weights (each router's fingerprint was checked against its model at load),
    encoder configuration, device and ``max_length``, and the same tokens for every text."""
    if a is b:
        return True
    if (a.router.base_fingerprint, a.device, a.max_length, _encoder_config(a)) != (
        b.router.base_fingerprint, b.device, b.max_length, _encoder_config(b)
    ):  # fmt: skip
        return False
    ta, tb = a.tokenizer, b.tokenizer
    if ta is tb:
        return True
    if (type(ta), ta.pad_token_id, ta.padding_side) != (type(tb), tb.pad_token_id,
                                                         tb.padding_side):  # fmt: skip
        return False
    return bool(_token_ids(ta, texts, a.max_length) == _token_ids(tb, texts, b.max_length))


def _encoder_config(bundle: Bundle) -> tuple[Any, ...]:
    """What else decides the encoder's arithmetic: its class, config and attention kernel."""
    encoder = bundle.model.encoder
    config = getattr(encoder, "config", None)
    if config is None:
        return (type(encoder),)
    settings = repr(sorted(config.to_dict().items()))
    return type(encoder), settings, getattr(config, "_attn_implementation", None)


def _token_ids(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    if not texts:
        return []
    return list(tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"])
