"""Multi-model serving: every sub-directory of the model directory is a model named after it."""

from __future__ import annotations

import os

from kserve.model_repository import MODEL_MOUNT_DIRS, ModelRepository  # type: ignore[import-not-found]

from .model import SKLearnModel


class SKLearnModelRepository(ModelRepository):  # type: ignore[misc]
    def __init__(self, model_dir: str = MODEL_MOUNT_DIRS) -> None:
        super().__init__(model_dir)
        self.load_models()

    async def load(self, name: str) -> bool:
        return self.load_model(name)

    def load_model(self, name: str) -> bool:
        model = SKLearnModel(name, os.path.join(self.models_dir, name))
        if model.load():
            self.update(model)
        return bool(model.ready)
