"""One scikit-learn model: found in its model directory, loaded with joblib, served through kserve.Model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-not-found]
from kserve import Model  # type: ignore[import-not-found]
from kserve.errors import InferenceError, ModelMissingError  # type: ignore[import-not-found]
from kserve.storage import Storage  # type: ignore[import-not-found]
from kserve.utils.utils import get_predict_input, get_predict_response  # type: ignore[import-not-found]

# Files KServe's sklearnserver accepts as the model; exactly one must be in the model directory.
MODEL_EXTENSIONS = (".joblib", ".pkl", ".pickle")
# "true" makes predictions class probabilities (predict_proba) when the estimator has them.
ENV_PREDICT_PROBA = "PREDICT_PROBA"


class SKLearnModel(Model):  # type: ignore[misc]
    """The model named ``name`` whose file is in ``model_dir`` (a local path or a storage URI)."""

    def __init__(self, name: str, model_dir: str) -> None:
        super().__init__(name)
        self.name = name
        self.model_dir = model_dir
        self.ready = False
        self._estimator: Any = None

    def load(self) -> bool:
        directory = Path(Storage.download(self.model_dir))
        candidates = sorted(
            path for path in directory.iterdir() if path.is_file() and path.name.endswith(MODEL_EXTENSIONS)
        )
        if not candidates:
            raise ModelMissingError(directory)
        if len(candidates) > 1:
            raise RuntimeError(
                f"More than one model file is detected, Only one is allowed within model_dir: {candidates}"
            )
        self._estimator = joblib.load(candidates[0])
        self.ready = True
        return True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        try:
            instances = get_predict_input(payload)
            wants_proba = os.environ.get(ENV_PREDICT_PROBA, "false").lower() == "true"
            if wants_proba and hasattr(self._estimator, "predict_proba"):
                result = self._estimator.predict_proba(instances)
            else:
                result = self._estimator.predict(instances)
            return get_predict_response(payload, result, self.name)
        except Exception as exc:
            raise InferenceError(str(exc)) from exc
