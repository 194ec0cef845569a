"""A scikit-learn model server on KServe 0.11.2's Python SDK, behaving as KServe's own sklearnserver.

KServe publishes its sklearnserver only as an image (kserve/sklearnserver:v0.11.2), never on PyPI, and the
local node has no registry to pull it from. This package rebuilds it from the public behaviour: the same
arguments, model discovery in the model directory, v1 and v2 (open inference protocol) prediction through
``kserve.ModelServer``, and the ``PREDICT_PROBA`` switch. It runs inside the sklearnserver image only, where
kserve, joblib and scikit-learn are installed.
"""

from .model import SKLearnModel
from .repository import SKLearnModelRepository

__all__ = ["SKLearnModel", "SKLearnModelRepository"]
