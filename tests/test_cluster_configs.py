"""The deployment configs under cluster/ against the schemas of the tools that read them.

Offline and without a cluster: the AWS launcher config goes through Ray's own schema and
config validation; the KubeRay manifests through the v1 CRD schemas saved in
tests/schemas/ (KubeRay v1.7.0, see its README) with unknown fields rejected as
``kubectl --validate=strict`` does, and through Ray's KubeRay autoscaler config builder;
the Dockerfile against pyproject.toml and scripts/setup.sh; every ``unimusic`` command
the files (and cluster/README.md) run against the CLI's parser; the RayService's serve
config against Ray Serve's schema and ``serve.app.ServeSettings``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
SCHEMAS = Path(__file__).with_name("schemas")
AWS = CLUSTER / "aws.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
CRD_SCHEMA = {"RayCluster": "raycluster", "RayJob": "rayjob", "RayService": "rayservice"}
PREPROCESS, TRAIN = "preprocess", "train"  # the custom resources of pipelines.workflow.StageResources

# Ray Serve's schema module warns about its own pydantic usage on import.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

YAML_FILES = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(path: Path) -> list:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _manifests() -> list[tuple[str, dict]]:
    """Every KubeRay custom resource under cluster/kuberay, as (file:name, object)."""
    out = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in _docs(path):
            if doc.get("kind") in CRD_SCHEMA:
                out.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return out


def _by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


def _one(file: str) -> dict:
    (doc,) = [d for d in _docs(KUBERAY / file) if d.get("kind") in CRD_SCHEMA]
    return doc


def _cluster_spec(doc: dict) -> dict:
    return {"RayCluster": lambda s: s, "RayJob": lambda s: s["rayClusterSpec"],
            "RayService": lambda s: s["rayClusterConfig"]}[doc["kind"]](doc["spec"])


def _pod_specs(cluster_spec: dict) -> list[dict]:
    return [cluster_spec["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster_spec.get("workerGroupSpecs", [])]


def _lock_version(name: str) -> str:
    for line in (ROOT / "requirements/lock.txt").read_text().splitlines():
        if line.lower().startswith(name.lower() + "=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements/lock.txt")


# -- every file parses --------------------------------------------------------------------


def test_cluster_folder_has_the_configs():
    names = {str(p.relative_to(CLUSTER)) for p in YAML_FILES}
    assert {"aws.yaml", "pipeline-aws.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob-corpus.yaml",
            "kuberay/rayjob-train.yaml", "kuberay/rayservice.yaml"} <= names
    assert DOCKERFILE.is_file() and (CLUSTER / "README.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses(path):
    docs = _docs(path)
    assert docs, f"{path} has no YAML document"
    if path.parent == KUBERAY:
        for doc in docs:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: not a Kubernetes object"


def test_pipeline_config_is_a_mapping():
    (config,) = _docs(CLUSTER / "pipeline-aws.yaml")
    assert isinstance(config, dict) and str(config["out"]).startswith("s3://")


# -- the AWS cluster launcher config --------------------------------------------------------


def _ray_schema() -> dict:
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def _validate_launcher_config(config: dict) -> None:
    """What `ray up` checks before it launches anything: Ray's JSON schema on the file, then
    the defaults merged in (prepare_config) and Ray's full validation on the result."""
    jsonschema.validate(config, _ray_schema())
    try:  # private API of the installed Ray; the schema check above stands without it
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:
        return
    validate_config(prepare_config(copy.deepcopy(config)))


def test_aws_config_passes_rays_validation():
    (config,) = _docs(AWS)
    assert config["provider"]["type"] == "aws"
    _validate_launcher_config(config)


@pytest.mark.parametrize("breakage", ["max_workers_text", "node_type_without_resources", "unknown_key",
                                      "resource_fraction", "head_type_missing"])
def test_aws_config_validation_catches_mistakes(breakage):
    (config,) = _docs(AWS)
    types = config["available_node_types"]
    if breakage == "max_workers_text":
        config["max_workers"] = "twelve"
    elif breakage == "node_type_without_resources":
        del types["gpu-train"]["resources"]
    elif breakage == "unknown_key":
        types["gpu-train"]["min_worker"] = 1
    elif breakage == "resource_fraction":
        types["gpu-train"]["resources"][TRAIN] = 0.5
    elif breakage == "head_type_missing":
        config["head_node_type"] = "nohead"
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        _validate_launcher_config(config)


def test_aws_node_types_and_credentials():
    (config,) = _docs(AWS)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head runs drivers and the autoscaler, no tasks"
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    cpu = [t for t in workers.values() if t["resources"].get(PREPROCESS, 0) > 0]
    gpu = [t for t in workers.values() if t["resources"].get(TRAIN, 0) > 0]
    assert cpu and gpu
    for t in cpu:  # one {"preprocess": 1} actor per CPU, and no GPU wasted on preprocessing
        assert t["resources"][PREPROCESS] == t["resources"]["CPU"] and not t["resources"].get("GPU")
    for t in gpu:  # one {"train": 1} worker per GPU
        assert t["resources"]["GPU"] >= 1 and t["resources"][TRAIN] == t["resources"]["GPU"]
    assert sum(t.get("max_workers", 0) for t in workers.values()) <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0
    for name, t in types.items():  # AWS access through instance profiles only
        assert t["node_config"].get("IamInstanceProfile"), f"node type {name} has no IAM instance profile"
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "--head" in starts and "$RAY_HEAD_IP" in starts


def test_aws_config_installs_the_checkout_and_setup_sh_packages():
    (config,) = _docs(AWS)
    mounted = {os.path.normpath(os.path.expanduser(local)): remote for remote, local in config["file_mounts"].items()}
    assert "." in mounted, "the launcher syncs this checkout (run `ray up` from the repository root)"
    target = mounted["."]
    setup = " ".join(config["setup_commands"])
    assert re.search(rf"pip install [^;&|]*-e {re.escape(target)}\b", setup), setup
    apt = _setup_sh_apt_packages()
    for pkg in ("fluidsynth", "fluid-soundfont-gm", "ffmpeg", "lilypond"):  # the run-time ones of setup.sh
        assert pkg in apt and re.search(rf"\b{re.escape(pkg)}\b", setup), pkg
    assert config["docker"]["image"] == _image(), "the launcher's image is the one the manifests run"


# -- the KubeRay manifests ----------------------------------------------------------------


def _strict(schema):
    """The schema with unknown fields rejected (additionalProperties: false wherever it lists
    properties and does not preserve unknown fields), like the API server's strict field
    validation; Kubernetes' x-kubernetes-* keywords are otherwise ignored by jsonschema
    (int-or-string fields are spelled anyOf integer/string, which it understands)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_strict(s) for s in out[key]]
    return out


_VALIDATORS: dict = {}


def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    if kind not in _VALIDATORS:
        schema = json.loads((SCHEMAS / f"kuberay-v1-{CRD_SCHEMA[kind]}.json").read_text())
        _VALIDATORS[kind] = jsonschema.Draft7Validator(_strict(schema))
    return _VALIDATORS[kind]


def _crd_errors(doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _crd_validator(doc["kind"]).iter_errors(doc)]


def test_every_kuberay_kind_is_present():
    kinds = sorted(doc["kind"] for _, doc in _manifests())
    assert kinds == ["RayCluster", "RayJob", "RayJob", "RayService"]


@pytest.mark.parametrize("name,doc", _manifests(), ids=[n for n, _ in _manifests()])
def test_manifest_matches_kuberay_crd_schema(name, doc):
    assert doc["apiVersion"] == "ray.io/v1"
    assert _crd_errors(doc) == []


def _break(doc: dict, breakage: str) -> dict:
    doc = copy.deepcopy(doc)
    group = _cluster_spec(doc)["workerGroupSpecs"][0]
    if breakage == "no_group_name":
        del group["groupName"]
    elif breakage == "replicas_text":
        group["maxReplicas"] = "four"
    elif breakage == "start_param_number":
        group["rayStartParams"]["num-cpus"] = 4
    elif breakage == "misspelled_field":
        group["minReplica"] = group.pop("minReplicas")
    elif breakage == "bad_quantity_type":
        group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = [4]
    elif breakage == "serve_config_not_text":
        doc["spec"]["serveConfigV2"] = yaml.safe_load(doc["spec"]["serveConfigV2"])
    return doc


@pytest.mark.parametrize("breakage", ["no_group_name", "replicas_text", "start_param_number", "misspelled_field",
                                      "bad_quantity_type"])
@pytest.mark.parametrize("kind", sorted(CRD_SCHEMA))
def test_broken_manifests_fail_validation(kind, breakage):
    doc = _by_kind(kind)[0]
    assert _crd_errors(doc) == []
    assert _crd_errors(_break(doc, breakage)), f"{kind} with {breakage} passed the CRD schema"


def test_serve_config_must_be_text():
    assert _crd_errors(_break(_by_kind("RayService")[0], "serve_config_not_text"))


def _autoscaling_config(doc: dict) -> dict:
    """Ray's own reading of a cluster spec (what KubeRay's autoscaler sidecar computes), which
    also runs Ray's launcher-config validation on it."""
    from ray.autoscaler._private.kuberay import autoscaling_config as kuberay_config

    derive = getattr(kuberay_config, "_derive_autoscaling_config_from_ray_cr", None)
    if derive is None:
        pytest.skip("this Ray has no _derive_autoscaling_config_from_ray_cr")
    return derive({"metadata": {"name": doc["metadata"]["name"], "namespace": doc["metadata"]["namespace"]},
                   "spec": _cluster_spec(doc)})


@pytest.mark.parametrize("name,doc", _manifests(), ids=[n for n, _ in _manifests()])
def test_cluster_spec_resources_as_ray_reads_them(name, doc):
    spec = _cluster_spec(doc)
    assert spec["rayVersion"] == _lock_version("ray"), "rayVersion must be the image's Ray (requirements/lock.txt)"
    assert spec.get("enableInTreeAutoscaling") is True
    types = _autoscaling_config(doc)["available_node_types"]
    assert types.pop("headgroup")["resources"]["CPU"] == 0
    for group in spec["workerGroupSpecs"]:
        res = types[group["groupName"]]["resources"]
        assert group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        if res.get(PREPROCESS):
            assert res[PREPROCESS] == res["CPU"] and not res.get("GPU"), group["groupName"]
        if res.get(TRAIN):
            assert res[TRAIN] == res["GPU"] >= 1, group["groupName"]
    resources = [r["resources"] for r in types.values()]
    wanted = {"raycluster.yaml": (PREPROCESS, TRAIN), "rayjob-corpus.yaml": (PREPROCESS,),
              "rayjob-train.yaml": (TRAIN,), "rayservice.yaml": ("GPU",)}[name.split(":")[0]]
    for key in wanted:
        assert any(r.get(key) for r in resources), f"{name}: no worker group with {key}"


def test_pods_share_image_identity_and_region():
    image = _image()
    (_, sa) = _docs(KUBERAY / "serviceaccount.yaml")
    assert sa["kind"] == "ServiceAccount" and "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]
    for name, doc in _manifests():
        assert doc["metadata"]["namespace"] == sa["metadata"]["namespace"], name
        for pod in _pod_specs(_cluster_spec(doc)):
            assert pod["serviceAccountName"] == sa["metadata"]["name"], name
            for c in pod["containers"] + pod.get("initContainers", []):
                assert c["image"] == image, f"{name}: {c['name']} runs {c['image']}"
                assert {"name": "AWS_DEFAULT_REGION", "value": _docs(AWS)[0]["provider"]["region"]} in c["env"]


def test_gpu_pods_ask_for_gpus():
    for name, doc in _manifests():
        for group in _cluster_spec(doc)["workerGroupSpecs"]:
            (container,) = group["template"]["spec"]["containers"]
            limits = container["resources"]["limits"]
            if TRAIN in group["rayStartParams"].get("resources", "") or group["groupName"].startswith("gpu"):
                assert limits.get("nvidia.com/gpu") == "1", f"{name}: {group['groupName']}"
            else:
                assert "nvidia.com/gpu" not in limits, f"{name}: {group['groupName']}"


# -- the Dockerfile -------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        current += " " + stripped
        if current.endswith("\\"):
            current = current[:-1]
            continue
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest.strip()))
        current = ""
    return lines


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(_norm(re.split(r"[\[<>=!~; @]", line, maxsplit=1)[0]))
    return names


def _docker_pip_installs() -> list[str]:
    return [rest for ins, rest in _dockerfile() if ins == "RUN" for rest in re.split(r"&&", rest)
            if re.search(r"\bpip install\b", rest)]


def _docker_requirement_files() -> list[str]:
    files = []
    for cmd in _docker_pip_installs():
        files += [Path(f).name for f in re.findall(r"-r\s+(\S+)", cmd)]
    return files


def _setup_sh() -> str:
    return (ROOT / "scripts/setup.sh").read_text()


def _setup_sh_apt_packages() -> list[str]:
    match = re.search(r"^APT_PACKAGES=\(([^)]*)\)", _setup_sh(), re.M)
    assert match, "scripts/setup.sh has no APT_PACKAGES=(...)"
    return match.group(1).split()


def test_dockerfile_installs_every_pyproject_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(re.split(r"[\[<>=!~; @]", d, maxsplit=1)[0])
              for d in project["dependencies"] + project["optional-dependencies"]["serve"]}
    copied = " ".join(rest for ins, rest in _dockerfile() if ins == "COPY")
    assert "requirements/" in copied, "the Dockerfile must copy requirements/"
    installed = set()
    for name in _docker_requirement_files():
        installed |= _requirement_names(ROOT / "requirements" / name)
    for cmd in _docker_pip_installs():  # packages named on the command line itself
        words = [w for w in shlex.split(cmd.split("pip install", 1)[1]) if not w.startswith("-") and "/" not in w]
        installed |= {_norm(re.split(r"[\[<>=!~]", w, maxsplit=1)[0]) for w in words if "$" not in w}
    assert not wanted - installed, f"pyproject dependencies the image does not install: {sorted(wanted - installed)}"


def test_dockerfile_follows_setup_sh():
    setup_order = [Path(f).name for f in re.findall(r"-r (requirements/\S+\.txt)", _setup_sh())]
    assert setup_order and _docker_requirement_files() == setup_order, "the same pip stages, in the same order"
    for cmd in _docker_pip_installs():
        if "-r " in cmd:
            assert re.search(r"-c\s+\S*constraints\.txt|-c\s+\S*lock\.txt", cmd), f"unconstrained: {cmd}"
        if "5-nodeps.txt" in cmd:
            assert "--no-deps" in cmd
        if "3-deepspeed.txt" in cmd:
            assert "DS_BUILD_OPS=0" in cmd
    runs = " ".join(rest for ins, rest in _dockerfile() if ins == "RUN")
    assert re.search(r"\block\.txt\b", runs), "the constraints come from requirements/lock.txt"
    # The constraints are the lock with torch's "+cpu" label dropped, nothing else changed.
    (expr,) = re.findall(r"sed -e '(s/[^']*)' \S*lock\.txt > \S*constraints\.txt", runs)
    lock = (ROOT / "requirements/lock.txt").read_text().splitlines()
    constraints = [_sed_substitute(expr, line) for line in lock]
    changed = {(a, b) for a, b in zip(lock, constraints) if a != b}
    torch = _lock_version("torch")
    assert changed == ({(f"torch=={torch}", f"torch=={torch.split('+')[0]}")} if "+" in torch else set())
    assert "torchaudio/lib/*.so" in runs, "torchaudio in pure-Python mode, as setup.sh leaves it"
    assert re.search(r"pip install [^&]*--no-deps /tmp/unimusic/src\b", runs), "the package itself, last"


def _sed_substitute(expr: str, line: str) -> str:
    """Apply a sed ``s/BRE/REPLACEMENT/`` (basic regular expression) to one line."""
    _, pattern, replacement, flags = expr.split("/")
    assert flags == "", expr
    regex, i = "", 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            regex += pattern[i + 1] if pattern[i + 1] in "()" else pattern[i:i + 2]
            i += 2
            continue
        regex += "\\" + pattern[i] if pattern[i] in "+?|{}()" else pattern[i]
        i += 1
    return re.sub(regex, replacement, line, count=1)


def test_dockerfile_apt_packages_cover_setup_sh():
    installed = set()
    for ins, rest in _dockerfile():
        if ins == "RUN" and "apt-get install" in rest:
            for part in rest.split("&&"):
                if "apt-get install" in part:
                    installed |= {w for w in part.split("apt-get install", 1)[1].split() if not w.startswith("-")}
    missing = set(_setup_sh_apt_packages()) - installed
    assert not missing, f"scripts/setup.sh installs {sorted(missing)}, the image does not"
    assert {"wget", "rsync", "openssh-client"} <= installed, "KubeRay's probes and the launcher need these"


def test_dockerfile_python_matches_pyproject():
    from packaging.specifiers import SpecifierSet

    args = dict(re.match(r"(\w+)=(\S*)", rest).groups() for ins, rest in _dockerfile() if ins == "ARG" and "=" in rest)
    froms = [rest.split()[0] for ins, rest in _dockerfile() if ins == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    match = re.match(r"python:(\d+\.\d+)", args["BASE_IMAGE"])
    assert match, args["BASE_IMAGE"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(match.group(1) + ".0")


def test_docker_build_context_keeps_what_pip_needs():
    patterns = [p.strip() for p in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*"
    kept = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {"pyproject.toml", project["project"]["readme"], "requirements"} | packages
    assert needed <= kept, f"excluded from the build context: {sorted(needed - kept)}"


# -- every unimusic command they run is a real one -------------------------------------------


def _unimusic_argvs(text: str) -> list[list[str]]:
    """The argument lists of every `unimusic ...` command in a shell line (also inside quoted
    strings such as ``ray exec ... 'cd x && unimusic ...'`` and after ``ray job submit --``)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: not a shell line
        return []
    out, segment = [], []
    for tok in tokens + [";"]:
        if tok and set(tok) <= set(";&|"):
            words = list(segment)
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
                words = words[1:]
            if words and words[0] == "unimusic":
                out.append(words[1:])
            elif "--" in words and words[words.index("--") + 1:][:1] == ["unimusic"]:
                out.append(words[words.index("--") + 2:])
            for w in segment:
                if " " in w and "unimusic " in w:
                    out += _unimusic_argvs(w)
            segment = []
        else:
            segment.append(tok)
    return out


def _check_cli(argv: list[str]) -> None:
    """Parse argv as `unimusic` does (cli.main): subcommands and flags must exist, key=value
    overrides only where the command takes them."""
    from unimusic.cli import build_parser

    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and ("--version" in argv or "--help" in argv or "-h" in argv):
            return
        raise AssertionError(f"unimusic {' '.join(argv)}: rejected by the CLI parser") from None
    overrides = [w for w in extra if "=" in w and not w.startswith("-")]
    unknown = [w for w in extra if w not in overrides]
    assert not unknown, f"unimusic {' '.join(argv)}: unrecognized {unknown}"
    assert not overrides or getattr(args, "takes_overrides", False), f"unimusic {' '.join(argv)}: takes no overrides"
    assert callable(getattr(args, "func", None)), f"unimusic {' '.join(argv)}: not a complete command"


def _aws_commands() -> list[str]:
    (config,) = _docs(AWS)
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [cmd for key in keys for cmd in config.get(key, [])]


def _cli_sources() -> dict[str, list[list[str]]]:
    sources = {"aws.yaml": [argv for cmd in _aws_commands() for argv in _unimusic_argvs(cmd)]}
    for name, doc in _manifests():
        found = []
        if doc["kind"] == "RayJob":
            found += _unimusic_argvs(doc["spec"]["entrypoint"])
        for pod in _pod_specs(_cluster_spec(doc)):
            for c in pod["containers"] + pod.get("initContainers", []):
                command = c.get("command", []) + c.get("args", [])
                if command[:1] == ["unimusic"]:
                    found.append(command[1:])
        sources[name] = found
    readme = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", (CLUSTER / "README.md").read_text(), re.S):
        for line in block.splitlines():
            readme += _unimusic_argvs(line.split(" #", 1)[0])
    sources["README.md"] = readme
    for path in YAML_FILES:  # the usage lines in the files' comments (indented: "#   command")
        comments = [line.lstrip("# ").rstrip() for line in path.read_text().splitlines() if line.startswith("#  ")]
        joined = "\n".join(comments).replace("\\\n", " ")
        sources[f"{path.name} (comments)"] = [a for line in joined.splitlines() for a in _unimusic_argvs(line)]
    return sources


def test_every_unimusic_command_is_real():
    sources = _cli_sources()
    for where in ("aws.yaml", "README.md", "rayjob-corpus.yaml:unimusic-corpus", "rayjob-train.yaml:unimusic-train",
                  "rayservice.yaml:unimusic"):
        assert sources[where], f"no unimusic command found in {where}"
    for where, argvs in sources.items():
        for argv in argvs:
            try:
                _check_cli(argv)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}") from None


@pytest.mark.parametrize("argv", [["corpus", "bild", "music21", "--out", "x"], ["train", "--gpus"],
                                  ["corpus", "build", "music21"], ["export", "a", "b", "steps=3"], ["corpus"]])
def test_cli_check_rejects_wrong_commands(argv, capsys):
    with pytest.raises(AssertionError):
        _check_cli(argv)


def _parsed(argv: list[str]):
    from unimusic.cli import build_parser

    return build_parser().parse_known_args(argv)[0]


def test_jobs_chain_their_storage_paths():
    corpus = [_parsed(a) for a in _unimusic_argvs(_one("rayjob-corpus.yaml")["spec"]["entrypoint"])]
    (train,) = [_parsed(a) for a in _unimusic_argvs(_one("rayjob-train.yaml")["spec"]["entrypoint"])]
    build, tokenize = corpus
    assert (build.corpus_command, tokenize.corpus_command) == ("build", "tokenize")
    assert build.out.startswith("s3://") and tokenize.input == build.out
    assert train.tokens == tokenize.out and train.storage.startswith("s3://") and train.gpu
    (export,) = [c["command"][1:] for pod in _pod_specs(_one("rayservice.yaml")["spec"]["rayClusterConfig"])
                 for c in pod.get("initContainers", [])]
    export = _parsed(export)
    assert export.checkpoint.rstrip("/") == f"{train.storage.rstrip('/')}/{train.name}", "serve the trained run"
    (config,) = _docs(CLUSTER / "pipeline-aws.yaml")
    for path in (build.out, tokenize.out, train.storage):
        assert path.startswith(config["out"].rstrip("/") + "/"), "one run prefix for jobs and pipeline"


# -- the RayService's serve config -----------------------------------------------------------


def _serve_config() -> dict:
    return yaml.safe_load(_one("rayservice.yaml")["spec"]["serveConfigV2"])


def test_rayservice_serve_config_matches_ray_serve_schema():
    from ray.serve.schema import ServeDeploySchema

    config = _serve_config()
    validate = getattr(ServeDeploySchema, "model_validate", None) or ServeDeploySchema.parse_obj
    validate(config)
    for key, value in (("proxy_location", "Everywhere"), ("http_options", {"port": "eighty"})):
        with pytest.raises(Exception):  # the check can fail
            validate({**config, key: value})


def test_rayservice_runs_our_application_with_valid_settings():
    import importlib

    from serve.app import ServeSettings
    from unimusic.errors import InputError

    (local,) = _docs(ROOT / "serve/config.yaml")
    (app,) = _serve_config()["applications"]
    (local_app,) = local["applications"]
    assert app["import_path"] == local_app["import_path"] == "serve.app:build"
    module, _, attr = app["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert (app["name"], app["route_prefix"]) == (local_app["name"], local_app["route_prefix"])
    assert set(local_app["args"]) <= set(app["args"]), "every serve/config.yaml setting is set for the cluster too"
    settings = ServeSettings.from_mapping(app["args"])
    with pytest.raises(InputError):
        ServeSettings.from_mapping({**app["args"], "max_replica": 3})
    http = _serve_config()["http_options"]
    assert http["host"] == "0.0.0.0" and http["port"] == settings.port
    spec = _one("rayservice.yaml")["spec"]["rayClusterConfig"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": settings.port, "name": "serve"} in head["ports"]
    # Listening on every interface: the API key must be set in every pod, from a secret.
    for pod in _pod_specs(spec):
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert "secretKeyRef" in env["UNIMUSIC_API_KEY"]["valueFrom"]
    # GPU replicas need a GPU group big enough for max_replicas of them.
    if settings.model_gpus:
        gpu_groups = [g for g in spec["workerGroupSpecs"]
                      if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
        assert sum(g["maxReplicas"] for g in gpu_groups) >= settings.max_replicas * settings.model_gpus


def test_rayservice_checkpoint_is_the_exported_model():
    from serve.app import ServeSettings

    settings = ServeSettings.from_mapping(_serve_config()["applications"][0]["args"])
    spec = _one("rayservice.yaml")["spec"]["rayClusterConfig"]
    model_pods = [p for p in _pod_specs(spec) if p.get("initContainers")]
    assert model_pods and settings.checkpoint
    for pod in model_pods:
        (init,) = pod["initContainers"]
        assert _parsed(init["command"][1:]).out == settings.checkpoint
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
        shared = [n for n in init_mounts if mounts.get(n) == init_mounts[n]
                  and settings.checkpoint.startswith(init_mounts[n].rstrip("/") + "/")]
        assert shared, "the exported model must be on a volume the Ray container mounts at the same path"


# -- no credentials anywhere ----------------------------------------------------------------


def _image() -> str:
    (config,) = _docs(AWS)
    return config["docker"]["image"]


@pytest.mark.parametrize("path", sorted(p for p in CLUSTER.rglob("*") if p.is_file()),
                         ids=lambda p: str(p.relative_to(CLUSTER)))
def test_no_credentials_in_cluster_files(path):
    text = path.read_text(encoding="utf-8")
    for pattern in (r"AKIA[0-9A-Z]{16}", r"ASIA[0-9A-Z]{16}", r"(?i)aws_secret_access_key", r"(?i)aws_access_key_id",
                    r"(?i)aws_session_token", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"):
        assert not re.search(pattern, text), f"{path.name} matches {pattern}"
