"""Train the iris classifier the s3 image serves, at image build time (``train_iris.py OUTPUT``).

The model is made here rather than downloaded (nothing but package registries is reachable) from the iris
data scikit-learn ships, with the scikit-learn of the kserve-runtime image, so the sklearnserver image
loads it with exactly the version that pickled it. An RBF SVC, like KServe's sample iris model: training is
deterministic, so [6.8, 2.8, 4.8, 1.4] and [6.0, 3.4, 4.5, 1.6] are both predicted as class 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib  # type: ignore[import-not-found]
from sklearn import datasets, svm  # type: ignore[import-not-found]


def main(output: Path) -> None:
    features, labels = datasets.load_iris(return_X_y=True)
    classifier = svm.SVC(gamma="scale")
    classifier.fit(features, labels)
    output.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(classifier, output)
    print(f"trained {classifier!r} on {len(labels)} iris samples into {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
