"""Fine-tune a Matryoshka encoder on your own Italian data (the ``train`` extra).

Example:
    >>> from bertino_rag.training import TrainConfig, train  # doctest: +SKIP
    >>> out = train(TrainConfig(base_model="nickprock/multi-sentence-BERTino",
    ...                         train_data="my_beir_folder", sts_data="sts.csv"))  # doctest: +SKIP
    >>> Retriever(model=out, dim=128)  # doctest: +SKIP
"""

from __future__ import annotations

from ..errors import BaseModelError, MiniBatchMemoryError, TrainingDataError
from .config import TrainConfig, load_config, scale_dims
from .export import export_e5
from .train import pick_mini_batch_size, train

__all__ = ["BaseModelError", "MiniBatchMemoryError", "TrainConfig", "TrainingDataError",
           "export_e5", "load_config", "pick_mini_batch_size", "scale_dims", "train"]
