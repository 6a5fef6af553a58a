"""Refresh the JSON schemas vendored here for tests/test_deploy_artifacts.py.

    python tests/schemas/vendor_schemas.py [--wheel-dir DIR]

Downloads the pinned wheels with pip (unless --wheel-dir already holds them) and rewrites:

* compose-spec.json, LICENSE.compose-spec: the Compose Specification schema, verbatim, as
  vendored by check-jsonschema.
* k8s/<version>/<kind>-<group>-<version>.json: the strict standalone Kubernetes schema of
  every kind used in k8s/ (alerts.yaml aside), verbatim, from kubernetes-validate.
* k8s/<version>/_definitions.json: the subset of that release's `_definitions.json` those
  kinds reach through `$ref`, with `description` texts dropped (validation is unchanged;
  the file shrinks from 1.2 MB to under 100 kB).

This is the only step that needs the network; the tests read the files offline.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
K8S_VERSION = "v1.30.0-local-strict"
KUBERNETES_VALIDATE = "kubernetes-validate==1.37.0"
CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"
NOT_IN_SCHEMAS = {"alerts.yaml", "kustomization.yaml"}  # a CRD kind and kustomize's file

REF = re.compile(r'"\$ref": "[^"#]*#/\$defs/([^"]+)"')


def schema_name(doc: dict[str, Any]) -> str:
    """Return kubernetes-validate's file name for a manifest: kind-group-version."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    return f"{doc['kind'].lower()}-{group_version}.json"


def used_schemas() -> set[str]:
    """Return the schema file names of every manifest kind in k8s/."""
    names = set()
    for path in sorted((REPO / "k8s").glob("*.yaml")):
        if path.name in NOT_IN_SCHEMAS:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                names.add(schema_name(doc))
    return names


def without_descriptions(node: Any) -> Any:
    """Return a schema with its `description` annotations removed."""
    if isinstance(node, dict):
        return {
            key: without_descriptions(value)
            for key, value in node.items()
            if not (key == "description" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [without_descriptions(value) for value in node]
    return node


def reachable(definitions: dict[str, Any], roots: list[Any]) -> dict[str, Any]:
    """Return the definitions that `roots` reach through `$ref`, transitively."""
    keep: dict[str, Any] = {}
    todo = [name for root in roots for name in REF.findall(json.dumps(root))]
    while todo:
        name = todo.pop()
        if name not in keep:
            keep[name] = definitions[name]
            todo.extend(REF.findall(json.dumps(definitions[name])))
    return dict(sorted(keep.items()))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def vendor_kubernetes(wheel: Path) -> None:
    out = HERE / "k8s" / K8S_VERSION
    shutil.rmtree(out, ignore_errors=True)
    prefix = f"kubernetes_validate/kubernetes-json-schema/{K8S_VERSION}/"
    with zipfile.ZipFile(wheel) as archive:
        kinds = {}
        for name in sorted(used_schemas()):
            kinds[name] = archive.read(prefix + name)
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(kinds[name])
        full = json.loads(archive.read(prefix + "_definitions.json"))
        licence = next(n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
        (HERE / "k8s" / "LICENSE").write_bytes(archive.read(licence))
    roots = [json.loads(raw) for raw in kinds.values()]
    subset = {key: value for key, value in full.items() if key != "$defs"}
    subset["$defs"] = without_descriptions(reachable(full["$defs"], roots))
    write_json(out / "_definitions.json", subset)


def vendor_compose(wheel: Path) -> None:
    prefix = "check_jsonschema/builtin_schemas/vendor/"
    with zipfile.ZipFile(wheel) as archive:
        (HERE / "compose-spec.json").write_bytes(archive.read(prefix + "compose-spec.json"))
        (HERE / "LICENSE.compose-spec").write_bytes(
            archive.read(prefix + "licenses/LICENSE.compose-spec")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel-dir", type=Path, help="directory holding the pinned wheels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheels = args.wheel_dir or Path(tmp)
        if args.wheel_dir is None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--dest",
                    str(wheels),
                    KUBERNETES_VALIDATE,
                    CHECK_JSONSCHEMA,
                ],
                check=True,
            )
        for spec, vendor in (
            (KUBERNETES_VALIDATE, vendor_kubernetes),
            (CHECK_JSONSCHEMA, vendor_compose),
        ):
            name, version = spec.split("==")
            vendor(next(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl")))


if __name__ == "__main__":
    main()
