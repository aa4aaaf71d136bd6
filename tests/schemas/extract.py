"""Regenerate the KubeRay CRD schemas in this folder from a KubeRay checkout (see README.md).

    python tests/schemas/extract.py /path/to/kuberay [REF]

Takes ``spec.versions[name=v1].schema.openAPIV3Schema`` of each CRD at REF (default HEAD) with
``git show``, so the checkout's work tree is not needed (a bare mirror works too).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CRDS = {"raycluster": "rayclusters", "rayjob": "rayjobs", "rayservice": "rayservices"}
MAX_BYTES = 1_000_000


def _drop_descriptions(node):
    if isinstance(node, dict):
        return {k: _drop_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_drop_descriptions(v) for v in node]
    return node


def main(repo: str, ref: str = "HEAD") -> None:
    for kind, plural in CRDS.items():
        text = subprocess.run(["git", "-C", repo, "show", f"{ref}:ray-operator/config/crd/bases/ray.io_{plural}.yaml"],
                              check=True, capture_output=True, text=True).stdout
        crd = yaml.safe_load(text)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = version["schema"]["openAPIV3Schema"]
        out = json.dumps(schema, indent=1, sort_keys=True) + "\n"
        if len(out) > MAX_BYTES:  # shrink only by dropping prose
            out = json.dumps(_drop_descriptions(schema), indent=1, sort_keys=True) + "\n"
        (HERE / f"kuberay-v1-{kind}.json").write_text(out, encoding="utf-8")
        print(f"kuberay-v1-{kind}.json: {len(out)} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
