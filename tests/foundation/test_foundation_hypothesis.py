"""Property test: 2 000+ generated manifests (random and near-miss keys, any YAML type, unicode, injection
characters, raw text mutations) either load or raise ManifestError - never another exception. Those that load must
render both files without error, and nothing an attacker controls may break out of a scalar."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from swiftdeploy.errors import ManifestError
from swiftdeploy.manifest import Manifest, parse_manifest
from swiftdeploy.render import render_compose, render_nginx

SECTIONS = {
    "services": ["name", "image", "port", "version", "mode", "restart_policy", "command"],
    "canary": ["image", "version", "weight"],
    "nginx": ["image", "port", "admin_port", "proxy_timeout", "contact"],
    "network": ["name", "driver_type"],
    "opa": ["image", "port", "timeout", "binary"],
    "policy": ["engine", "window_seconds", "thresholds", "dir"],
}
TOP_SCALARS = ["runtime", "project", "output_dir"]
INJECTION = "\n\r\t;{}'\"`$\\\x00\x7f\u2028\u0085"


def _near_misses(key: str) -> list[str]:
    """Typos of a valid key: a dropped, doubled or swapped character, a case change, a plural."""
    variants = {key.upper(), key + "s", key[:-1]}
    variants |= {key[:i] + key[i + 1 :] for i in range(len(key))}
    variants |= {key[:i] + key[i] + key[i:] for i in range(len(key))}
    variants |= {key[:i] + key[i + 1] + key[i] + key[i + 2 :] for i in range(len(key) - 1)}
    return sorted(v for v in variants if v and v != key)


# Precomputed pools keep generation cheap (sampled_from is far faster than filtered unicode strategies).
NEAR = {name: [typo for key in keys for typo in _near_misses(key)] for name, keys in SECTIONS.items()}
NEAR_TOP = [typo for key in [*SECTIONS, *TOP_SCALARS] for typo in _near_misses(key)]
CHARS = list("abcxyz019-_.:/@ ") + list("éß中ك😀\u200b\ufeff\U0001f4a9") + list(INJECTION)
texts = st.text(alphabet=st.sampled_from(CHARS), max_size=12)
good_scalars = st.sampled_from(
    [
        "app",
        "demo:1",
        "nginx:1.27",
        "ops@example.com",
        "30s",
        "2m",
        "250ms",
        "canary",
        "stable",
        "local",
        "docker",
        "opa",
        "embedded",
        "auto",
        "bridge",
        "1.0.0",
        "ghcr.io/acme/api:1.2.3",
        "unless-stopped",
        "no",
    ]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
    | good_scalars
    | st.integers(min_value=0, max_value=70000)
)
values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(texts, scalars, max_size=2)


# Built once: strategies constructed inside a draw are re-validated on every example (slow).
SECTION_STRATEGIES = {
    name: st.dictionaries(st.sampled_from(keys) | st.sampled_from(NEAR[name]) | texts, values, max_size=4)
    for name, keys in SECTIONS.items()
}
TOP_KEYS = st.lists(st.sampled_from(TOP_SCALARS) | st.sampled_from(NEAR_TOP), max_size=2)
COIN = st.booleans()


# Valid values per field: a manifest built from these loads, so mutating one or two of them probes each field.
PORTS = st.integers(1, 65535)
NAMES = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
IMAGES = st.sampled_from(["demo:1", "nginx:1.27", "ghcr.io/acme/api:1.2.3", "localhost:5000/a/b", "x"])
VERSIONS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,10}", fullmatch=True)
DURATIONS = st.sampled_from(["30s", "2m", "250ms", "1h", "1.5s", 30, 0.5])
VALID = {
    ("services", "name"): NAMES,
    ("services", "image"): IMAGES,
    ("services", "port"): PORTS,
    ("services", "version"): VERSIONS,
    ("services", "mode"): st.sampled_from(["stable", "canary"]),
    ("services", "restart_policy"): st.sampled_from(["no", "always", "on-failure", "unless-stopped"]),
    ("canary", "image"): IMAGES,
    ("canary", "version"): VERSIONS,
    ("canary", "weight"): st.integers(0, 100),
    ("nginx", "image"): IMAGES,
    ("nginx", "port"): PORTS,
    ("nginx", "admin_port"): PORTS,
    ("nginx", "proxy_timeout"): DURATIONS,
    ("nginx", "contact"): st.sampled_from(["ops@example.com", "a.b+c@sub.example.org"]),
    ("network", "name"): NAMES,
    ("network", "driver_type"): st.sampled_from(["bridge", "overlay"]),
    ("opa", "port"): PORTS,
    ("policy", "engine"): st.sampled_from(["auto", "opa", "embedded"]),
    ("runtime",): st.sampled_from(["docker", "local"]),
    ("project",): NAMES,
}
LEAVES = st.sampled_from(sorted(VALID))


@st.composite
def mutated_valid(draw) -> dict:
    data: dict = {"services": {"image": "demo:1"}}
    for path, strategy in VALID.items():
        if draw(COIN):
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = draw(strategy)
    for _ in range(draw(st.integers(0, 2))):
        path = draw(LEAVES)
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = draw(values)
    return data


@st.composite
def manifests(draw) -> object:
    if draw(COIN):
        return draw(mutated_valid())
    if draw(st.integers(0, 19)) == 0:
        return draw(values)  # not even a mapping
    data: dict = {}
    if draw(COIN):  # a valid base makes deep fields reachable
        data["services"] = {"image": "demo:1"}
    for name, strategy in SECTION_STRATEGIES.items():
        if draw(COIN):
            data.setdefault(name, {}).update(draw(strategy))
    for key in draw(TOP_KEYS):
        data[key] = draw(values)
    return data


def _to_yaml(data: object, style: int) -> str:
    if style == 0:
        return json.dumps(data, ensure_ascii=False, allow_nan=True, default=str)  # JSON is YAML (flow style)
    from io import StringIO

    from ruamel.yaml import YAML

    out = StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(data, out)
    return out.getvalue()


def _check_rendered(m: Manifest) -> None:
    compose, nginx = render_compose(m), render_nginx(m)
    for text in (compose, nginx):
        assert "\x00" not in text and "\r" not in text and "\u2028" not in text and "\x85" not in text
    # Manifest strings never bring quotes or `$` into nginx.conf or compose (only our own fixed text may).
    for value in (m.services.name, m.services.image, m.nginx.contact, m.network.name, m.project_name):
        assert not set(value) & set("'\"`$;{}\\\n")


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=manifests(), style=st.integers(0, 1), mutation=st.tuples(st.integers(0, 400), texts))
def test_generated_manifests_load_or_raise_manifest_error(data, style, mutation):
    try:
        text = _to_yaml(data, style)
    except Exception:  # noqa: BLE001 - the dumper refusing a value is not what is under test
        text = repr(data)
    at, insert = mutation
    if at % 4 == 0:  # sometimes corrupt the raw text too: YAML syntax errors, tabs, stray quotes
        text = text[:at] + insert + text[at:]
    try:
        m = parse_manifest(text, source="fuzz.yaml")
    except ManifestError as exc:
        event("ManifestError")
        assert str(exc).startswith("fuzz.yaml")
        return
    event("loaded")
    _check_rendered(m)
