"""Memory of scoring raw text with an exported reward model: the sparse path against ONNX.

Run from the repo root:
    .venv/bin/python bench/scoring_memory.py [--items 1000 10000] [--dense-batch 1000]

A model with the default features (2**18 columns) and random weights, overall plus three heads,
is written as PrefLab writes it (`rewards.artifacts.onnx_model`, `weights.npy`), next to a
copy of `rewards/features.py` as `featurizer.py`. Then, for each path and number of items, a
fresh child process that imports only numpy, scipy, scikit-learn, onnxruntime and that
`featurizer.py` (what a user outside PrefLab has) makes synthetic items (a ~120-character
prompt, a ~400-character completion from a 3,000-word vocabulary), warms the path up on 10 items,
resets its peak RSS (writing 5 to /proc/self/clear_refs, Linux), scores them and reports its
peak RSS (VmHWM in /proc/self/status):

- sparse: `featurizer.score(items, config, featurizer.load_weights("weights.npy"))`, sparse
  rows (1,000 items at a time) times the weights, never dense: what PrefLab itself does;
- onnx: `featurize(...).astype("float32").toarray()` fed to onnxruntime, `--dense-batch`
  items at a time (the ONNX graph takes the dense 2**18-column input: 1 MiB an item).

The figure that matters is the peak minus the RSS before scoring (the items and the imported
libraries are the same for both paths).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADS = 4  # the overall head and helpful, honest, harmless

CHILD = r"""
import json, sys, time
import numpy as np
directory, path, count, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, directory)
import featurizer
import onnxruntime

def status_mib(field):
    with open("/proc/self/status") as file:
        line = next(line for line in file if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024

rng = np.random.default_rng(0)
vocabulary = [f"w{i}" for i in range(3000)]
zipf = 1 / np.arange(1, 3001)
zipf /= zipf.sum()
items = [
    (
        [{"role": "user", "content": " ".join(rng.choice(vocabulary, 20, p=zipf)) + "?"}],
        " ".join(rng.choice(vocabulary, 80, p=zipf)) + ".",
    )
    for _ in range(count)
]
config = featurizer.FeatureConfig()
weights = featurizer.load_weights(f"{directory}/weights.npy")
featurizer.score(items[:10], config, weights)  # warm up before measuring
if path == "onnx":
    session = onnxruntime.InferenceSession(
        f"{directory}/model.onnx", providers=["CPUExecutionProvider"]
    )
    warm = featurizer.featurize(items[:10], config).astype(np.float32).toarray()
    session.run(None, {"features": warm})
    del warm
# Reset the peak (VmHWM) to the present RSS, so the peak read below is that of the scoring.
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")
before = status_mib("VmRSS")
start = time.perf_counter()
if path == "sparse":
    rewards = featurizer.score(items, config, weights)
else:
    parts = []
    for first in range(0, count, batch):
        rows = featurizer.featurize(items[first : first + batch], config)
        parts.append(session.run(None, {"features": rows.astype(np.float32).toarray()})[0])
        del rows
    rewards = np.concatenate(parts)
seconds = time.perf_counter() - start
peak = status_mib("VmHWM")
print(json.dumps({"before": before, "peak": peak, "seconds": seconds}))
"""


def write_model(directory: Path) -> None:
    """An exported model as PrefLab writes it: model.onnx, weights.npy and featurizer.py."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import numpy as np
    import onnx

    from rewards import artifacts, features

    width = features.FeatureConfig().n_features
    weights = np.random.default_rng(0).normal(scale=0.1, size=(HEADS, width))
    model = artifacts.linear_model(weights)
    onnx.save_model(artifacts.onnx_model(model), str(directory / "model.onnx"))
    np.save(directory / "weights.npy", model.coef_, allow_pickle=False)
    shutil.copyfile(features.__file__, directory / "featurizer.py")


def measure(directory: Path, path: str, count: int, batch: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), path, str(count), str(batch)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--dense-batch", type=int, default=1000)
    options = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        write_model(directory)
        print(
            f"model: {HEADS} heads x 2**18 columns; weights.npy "
            f"{(directory / 'weights.npy').stat().st_size / 2**20:.1f} MiB, model.onnx "
            f"{(directory / 'model.onnx').stat().st_size / 2**20:.1f} MiB"
        )
        print(
            f"{'path':<8}{'items':>8}{'batch':>7}{'RSS before':>12}{'peak':>9}"
            f"{'peak - before':>15}{'seconds':>9}"
        )
        for count in options.items:
            for path in ("sparse", "onnx"):
                batch = min(count, options.dense_batch) if path == "onnx" else 1000
                started = time.perf_counter()
                figures = measure(directory, path, count, batch)
                added = figures["peak"] - figures["before"]
                print(
                    f"{path:<8}{count:>8}{batch:>7}{figures['before']:>10.0f} M"
                    f"{figures['peak']:>7.0f} M{added:>13.0f} M"
                    f"{figures['seconds']:>9.2f}"
                    f"   (child {time.perf_counter() - started:.0f} s)"
                )


if __name__ == "__main__":
    main()
