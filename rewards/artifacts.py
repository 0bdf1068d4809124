"""Reward model files: skops (never pickle), ONNX, the weights as .npy, the featurizer's
source and a model card.

A model is a linear map over the features of `rewards.features`, stored as a scikit-learn
LinearRegression without intercept, so one estimator serves the skops file, the ONNX graph
(skl2onnx) and the Python scorer. The featurizer ships beside the ONNX file as `featurizer.py`
(the very module PrefLab uses, which needs only numpy, scipy and scikit-learn) with its
configuration in the model card, so raw text can be scored without PrefLab: either through the
ONNX file, which takes the dense feature rows (1 MiB an item), or the sparse way, with
`featurizer.score(items, config, featurizer.load_weights("weights.npy"))`, which is what
PrefLab itself does.

A model with per-criterion heads (`rewards.heads`) has a weight row per head: row 0 the overall
head, then one per criterion in the card's "heads" order. The estimator then has a 2-D coef_,
the ONNX graph one output column per row (output "variable", shape [items, 1 + heads]) and
weights.npy that shape; a model without heads is exactly as before (1-D, one column).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import skops.io
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LinearRegression

from rewards import features
from rewards.models import ARTIFACT_FILES

FORMAT_VERSION = 1
FILES = ARTIFACT_FILES
TRUSTED_TYPES = ["sklearn.linear_model._base.LinearRegression"]


def linear_model(weights: np.ndarray) -> LinearRegression:
    """The estimator of weights of shape (columns,), or (1 + heads, columns) with heads."""
    model = LinearRegression(fit_intercept=False)
    model.coef_ = np.asarray(weights, dtype=np.float64)
    model.intercept_ = 0.0 if model.coef_.ndim == 1 else np.zeros(model.coef_.shape[0])
    model.n_features_in_ = model.coef_.shape[-1]
    return model


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_model(model: LinearRegression) -> onnx.ModelProto:
    width = model.n_features_in_
    return convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, width]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )


def write_artifacts(
    directory: Path, *, weights: np.ndarray, card: dict[str, Any]
) -> dict[str, Any]:
    """Write the files of `FILES` into `directory`, which must not exist yet, all or nothing.

    Everything goes into a temporary folder beside it that is renamed at the end, so a failure
    leaves no files and a reader never sees half a model. Returns name, sha256 and size per file.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        model = linear_model(weights)
        skops.io.dump(model, staging / FILES["skops"])
        onnx.save_model(onnx_model(model), str(staging / FILES["onnx"]))
        np.save(staging / FILES["weights"], model.coef_, allow_pickle=False)
        shutil.copyfile(features.__file__, staging / FILES["featurizer"])
        card_path = staging / FILES["card"]
        card_path.write_text(json.dumps(card, indent=2, sort_keys=True))
        files = {
            kind: {
                "name": name,
                "sha256": sha256(staging / name),
                "bytes": (staging / name).stat().st_size,
            }
            for kind, name in FILES.items()
        }
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return files


def load_model(directory: Path) -> LinearRegression:
    """Load the skops file, refusing any type but the linear model it should hold."""
    path = directory / FILES["skops"]
    untrusted = set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
    if untrusted:
        raise ValueError(f"{path} holds unexpected types: {sorted(untrusted)}")
    model = skops.io.load(path, trusted=TRUSTED_TYPES)
    if not isinstance(model, LinearRegression):
        raise ValueError(f"{path} does not hold a linear model")
    return model


def score(
    model: LinearRegression,
    items: list[tuple[list[features.Message], str]],
    config: features.FeatureConfig,
) -> np.ndarray:
    """The overall rewards of the items, one float64 each, whether or not the model has heads."""
    weights = model.coef_ if model.coef_.ndim == 1 else model.coef_[0]
    return features.score(items, config, weights)


def score_heads(
    model: LinearRegression,
    items: list[tuple[list[features.Message], str]],
    config: features.FeatureConfig,
) -> np.ndarray:
    """Every head's rewards, shape (items, 1 + heads): column 0 the overall head, then the
    criteria in the card's "heads" order (just column 0 for a model without heads)."""
    return features.score(items, config, np.atleast_2d(model.coef_))
