"""``python -m sklearnserver --model_dir DIR [--model_name NAME] [kserve server args]``: the entrypoint.

A missing model file is not fatal, as in KServe: the server still starts with the model repository, so
models can be loaded later through the repository extension.
"""

from __future__ import annotations

import argparse
import logging

import kserve  # type: ignore[import-not-found]
from kserve.errors import ModelMissingError  # type: ignore[import-not-found]

from .model import SKLearnModel
from .repository import SKLearnModelRepository

DEFAULT_MODEL_NAME = "model"


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_dir", required=True, help="A URI pointer to the model binary")
    parser.add_argument(
        "--model_name", default=DEFAULT_MODEL_NAME, help="The name that the model is served under."
    )
    args, _ = parser.parse_known_args()

    model = SKLearnModel(args.model_name, args.model_dir)
    try:
        model.load()
    except ModelMissingError:
        logging.error(
            "fail to locate model file for model %s under dir %s, trying loading from model repository.",
            args.model_name,
            args.model_dir,
        )
    server = kserve.ModelServer(registered_models=SKLearnModelRepository(args.model_dir))
    server.start([model] if model.ready else [])


if __name__ == "__main__":
    main()
