"""The manifest: Pydantic v2 models. `manifest.yaml` is the only hand-edited file; everything else derives from it.

Every model forbids unknown keys so a typo is an error (with a did-you-mean), never a silently ignored setting.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..history import DEFAULT_KEEP, DEFAULT_MAX_MB, DEFAULT_STATUS_EVERY, MB, Rotation
from ..policy.opa_version import OPA_IMAGE
from ..runtime import RUNTIMES, port_claims
from .types import Argv, Count, Duration, Email, ImageRef, Name, Number, Port, SafeText, UrlPath, Version

# Pinned (policy/opa_version.py, the one place) so a generated stack never drifts to a new OPA release by itself.
DEFAULT_OPA_IMAGE = OPA_IMAGE
# Compose services swiftdeploy generates beside the app (render/compose.py).
RESERVED_SERVICE_NAMES = ("nginx", "opa")
# `runtime:` accepts exactly the registered runtimes (swiftdeploy.runtime.RUNTIMES).
RuntimeName = Literal[tuple(RUNTIMES)]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServiceConfig(Strict):
    """The application: the stable track, and the base of the canary track."""

    name: Name = Field("app", description="Service name; the canary track is `<name>-canary`.")
    image: ImageRef = Field(description="Image of the stable track.")
    port: Port = Field(
        3000,
        description="Port the app listens on inside its container. Local runtime: on 127.0.0.1, and the stable app "
        "alternates between it and services.port + 2 at each blue/green restart; the canary uses services.port + 1.",
    )
    version: Version = Field("1.0.0", description="Version of the stable track (APP_VERSION).")
    mode: Literal["stable", "canary"] = Field(
        "stable", description="`canary` while a canary track runs beside stable. Changed by `promote`/`rollback`."
    )
    restart_policy: Literal["no", "always", "on-failure", "unless-stopped"] = Field(
        "unless-stopped", description="Compose restart policy of the app containers."
    )
    command: Argv | None = Field(
        None,
        description="Local runtime only: the app's argv (default: the bundled demo API, `python -m demo_api`).",
    )
    health_path: UrlPath = Field(
        "/healthz",
        description="Path the app answers 200 on when healthy: polled by deploy and status, and the docker "
        "healthcheck (docs/your-service.md).",
    )
    replicas: Replicas = Field(
        1, description="Swarm runtime only: tasks of the stable track, spread over the cluster's nodes."
    )


MAX_REPLICAS = 50
Replicas = Annotated[int, Field(ge=1, le=MAX_REPLICAS, strict=True)]


# --- progressive delivery (`swiftdeploy rollout`, docs/operations.md#progressive-delivery) ---
MAX_STEPS = 10
MAX_STEP_SECONDS = 3600.0
StepWeight = Annotated[int, Field(ge=1, le=99, strict=True)]


class AnalysisConfig(Strict):
    """How `swiftdeploy rollout` judges each step (the canary gate, watched like `promote stable` watches)."""

    max_step_seconds: Duration = Field(
        120.0,
        le=MAX_STEP_SECONDS,
        description="Longest `rollout` watches the canary at one step; it moves on at the first allow (at most 1h).",
    )
    on_inconclusive: Literal["pause", "rollback"] = Field(
        "pause",
        description="What a step still inconclusive after max_step_seconds does: `pause` (stay at this weight, "
        "record the step, exit 5; `rollout` again resumes, `abort` ends it) or `rollback` (exit 3).",
    )
    rollback_on_failure: bool = Field(
        True,
        strict=True,
        description="A denied step (or an error during a step) rolls the canary back automatically; false leaves it "
        "at that weight for a person to look at (exit 3 or 1; `abort` ends it).",
    )


class CanaryConfig(Strict):
    image: ImageRef | None = Field(None, description="Image of the canary track (default: services.image).")
    version: Version | None = Field(None, description="Version of the canary track (default: services.version).")
    command: Argv | None = Field(
        None,
        description="Local runtime only: the canary app's argv (default: services.command). `promote stable` "
        "makes it services.command.",
    )
    weight: int = Field(10, ge=0, le=100, strict=True, description="Percent of public traffic sent to the canary.")
    steps: list[StepWeight] | None = Field(
        None,
        min_length=1,
        max_length=MAX_STEPS,
        description="`rollout`: the canary's weights step by step, e.g. [10, 25, 50] (each 1-99, strictly "
        f"increasing, at most {MAX_STEPS}); default: one step at canary.weight.",
    )
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    replicas: Replicas = Field(1, description="Swarm runtime only: tasks of the canary track.")

    @model_validator(mode="after")
    def _steps_increase(self) -> CanaryConfig:
        for i, step in enumerate(self.steps or []):
            if i and step <= self.steps[i - 1]:  # type: ignore[index]
                raise ValueError(
                    f"canary.steps must increase strictly: {step} follows {self.steps[i - 1]}"  # type: ignore[index]
                )
        return self

    @property
    def rollout_steps(self) -> list[int]:
        """The weights `rollout` goes through: canary.steps, else one step at canary.weight."""
        return list(self.steps) if self.steps else [self.weight]


class NginxConfig(Strict):
    image: ImageRef = Field("nginx:1.27", description="Nginx image.")
    port: Port = Field(8080, description="Public port.")
    admin_port: Port = Field(8081, description="Admin listener, published on 127.0.0.1 only.")
    proxy_timeout: Duration = Field(30.0, description="Proxy connect/read/send timeout ('30s', '2m' or seconds).")
    contact: Email = Field("ops@example.com", description="Contact shown in JSON error bodies.")


class NetworkConfig(Strict):
    name: Name = Field("swiftdeploy-net", description="Compose network name.")
    driver_type: Literal["bridge", "overlay"] = Field("bridge", description="Compose network driver.")


class SwarmUpdate(Strict):
    """How Swarm replaces a track's tasks when its image or version changes (`promote stable`, `undo`)."""

    parallelism: int = Field(1, ge=1, le=MAX_REPLICAS, strict=True, description="Tasks replaced at a time.")
    delay: Duration = Field(2.0, le=600, description="Pause between two batches of replaced tasks.")
    order: Literal["start-first", "stop-first"] = Field(
        "start-first",
        description="`start-first`: a new task is healthy before an old one stops (the track never shrinks).",
    )
    failure_action: Literal["rollback", "pause"] = Field(
        "rollback", description="A new task that fails its healthcheck: roll the service back, or pause the update."
    )
    monitor: Duration = Field(10.0, le=600, description="How long a new task is watched for failure.")


class SwarmConfig(Strict):
    """Swarm runtime only (docs/swarm.md): where the cluster's manager is and how the stack is placed."""

    docker_host: SafeText | None = Field(
        None,
        description="The manager's Docker engine (unix://, tcp:// or ssh://); default: DOCKER_HOST, else the local "
        "socket. swiftdeploy runs on the manager: nginx's admin socket and the generated files are on its disk.",
    )
    update: SwarmUpdate = Field(default_factory=SwarmUpdate)

    @field_validator("docker_host")
    @classmethod
    def _engine_address(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("unix://", "tcp://", "ssh://")):
            raise ValueError(
                f"{value!r} is not an engine address: use unix:///path/docker.sock, tcp://HOST:PORT or ssh://HOST"
            )
        return value

    nginx_constraints: list[SafeText] = Field(
        default_factory=lambda: ["node.role == manager"],
        min_length=1,
        max_length=16,
        description="Placement constraints of the nginx task. It must land on the node swiftdeploy runs on (it "
        "bind-mounts nginx.conf and the admin socket from there): pin it, e.g. `node.hostname == <manager>`, when "
        "the cluster has several managers.",
    )


class OpaConfig(Strict):
    image: ImageRef = Field(DEFAULT_OPA_IMAGE, description="OPA server image (pinned: the version the tests ran).")
    port: Port = Field(8181, description="OPA listens on the host's 127.0.0.1:<port> only (no container reaches it).")
    timeout: Duration = Field(2.0, description="Timeout of one OPA request.")
    binary: SafeText | None = Field(
        None,
        description="Local runtime: the OPA binary to run (relative to the manifest); default `opa` on PATH, else "
        "the project's .tools/bin/opa (`make opa`).",
    )


class Thresholds(Strict):
    """Overrides of policies/data.json. Unset values keep the policy defaults."""

    min_disk_free_gb: Number | None = Field(None, ge=0, description="Deploy gate: deny below this much free disk (GB).")
    max_cpu_load_per_core: Number | None = Field(
        None, ge=0, description="Deploy gate: deny above this 1-minute load average divided by the CPU count."
    )
    max_cpu_load: Number | None = Field(
        None,
        ge=0,
        description="Deploy gate: deny above this 1-minute load average (the whole host); when set it replaces "
        "the per-core rule.",
    )
    max_memory_used_percent: Number | None = Field(
        None, ge=0, le=100, description="Deploy gate: deny above this percentage of memory in use."
    )
    max_error_rate_percent: Number | None = Field(
        None, ge=0, le=100, description="Promote gate: deny when the canary error rate is shown above this (percent)."
    )
    bad_error_rate_percent: Number | None = Field(
        None, gt=0, le=100, description="Promote gate: allow only when the error rate is shown below this (percent)."
    )
    max_p99_latency_ms: Number | None = Field(
        None,
        ge=0,
        description="Promote gate: the canary P99 may not be above this (ms); judged on counted slow requests.",
    )
    max_slow_percent: Number | None = Field(
        None,
        ge=0,
        le=100,
        description="Promote gate: percent of requests allowed slower than max_p99_latency_ms (1 = P99).",
    )
    bad_slow_percent: Number | None = Field(
        None, gt=0, le=100, description="Promote gate: allow only when the slow share is shown below this (percent)."
    )
    min_requests: Count | None = Field(
        None, ge=0, description="Promote gate: never allow on fewer canary requests than this."
    )
    deny_confidence_percent: Number | None = Field(
        None, ge=50, lt=100, description="Promote gate: confidence a deny needs (percent; 99 = 1 in 100 wrong denies)."
    )
    ratio_confidence_percent: Number | None = Field(
        None, ge=50, lt=100, description="Relative rule: confidence a deny by max_error_rate_ratio needs (percent)."
    )
    allow_confidence_percent: Number | None = Field(
        None, ge=50, lt=100, description="Promote gate: confidence an allow needs (percent)."
    )
    max_error_rate_ratio: Number | None = Field(
        None, ge=1, description="Relative rule: deny when the canary error rate is shown above this many x stable's."
    )
    max_p99_ratio: Number | None = Field(
        None, ge=1, description="Relative rule: the canary P99 may not be above this many times stable's P99."
    )
    min_p99_ms_for_ratio: Number | None = Field(
        None, ge=0, description="Relative rule floor: the P99 ratio rule compares latencies from this many ms up."
    )
    max_error_rate_increase_percent: Number | None = Field(
        None, ge=0, le=100, description="No longer used (replaced by max_error_rate_ratio); `validate` warns."
    )

    allow_direct_deploy: bool | None = Field(
        None,
        strict=True,
        description="Deploy gate: true lets `deploy` put a new services.version or services.image straight onto a "
        "running stable (default: only through a canary).",
    )

    def overrides(self) -> dict[str, float | int | bool]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class PolicyConfig(Strict):
    engine: Literal["auto", "opa", "embedded"] = Field(
        "auto",
        description="auto: the stack's OPA server when it runs one (docker; local with an OPA binary) and it "
        "answers, else the embedded Rego engine.",
    )
    window_seconds: Duration = Field(
        120.0, description="Longest `promote stable` watches the canary; it stops as soon as the verdict is clear."
    )
    scrape_interval: Duration = Field(
        1.0, ge=0.2, le=60, description="Seconds between two looks at the canary while `promote stable` watches."
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    dir: SafeText | None = Field(None, description="Your own policies folder (relative to the manifest).")


class HistoryConfig(Strict):
    """How much of history.jsonl is kept (docs/history.md#what-is-kept-for-how-long). Lifecycle events and policy
    decisions are always recorded; only the dashboard's status snapshots are thinned."""

    status_every: Duration = Field(
        DEFAULT_STATUS_EVERY,
        description="The dashboard records a status snapshot when something in it changes, else at most this often.",
    )
    max_mb: float = Field(
        DEFAULT_MAX_MB,
        gt=0,
        le=100_000,
        strict=True,
        description="Rotate history.jsonl to history.1.jsonl before it would grow past this many MiB.",
    )
    keep: int = Field(
        DEFAULT_KEEP,
        ge=1,
        le=1000,
        strict=True,
        description="Rotated files kept (history.1.jsonl … history.<keep>.jsonl); the oldest is deleted.",
    )

    @property
    def rotation(self) -> Rotation:
        """What `history.append` needs to rotate like this manifest says."""
        return Rotation(max_bytes=max(1, int(self.max_mb * MB)), keep=self.keep)


# --- hooks (swiftdeploy/hooks.py, docs/operations.md "Hooks") ---
HOOK_ARGS_MAX = 64  # arguments of one hook argv
HOOK_ARG_CHARS = 4096  # characters of one argument
HOOKS_PER_EVENT = 16
HookArgv = Annotated[
    list[Annotated[SafeText, Field(min_length=1, max_length=HOOK_ARG_CHARS)]],
    Field(min_length=1, max_length=HOOK_ARGS_MAX),
]


def _hook_list(when: str) -> Any:
    return Field(
        default_factory=list,
        max_length=HOOKS_PER_EVENT,
        description=f"Commands (each an argv list, like services.command) run {when}.",
    )


class HooksConfig(Strict):
    """Your own executables at fixed points of an operation, with SWIFTDEPLOY_* environment variables; cwd: the
    manifest's folder. A failing pre_* hook stops the operation before it changes anything (exit 1); a failing
    post_*/on_* hook is a warning."""

    pre_deploy: list[HookArgv] = _hook_list("by `deploy` after its gate allows, before anything starts")
    post_deploy: list[HookArgv] = _hook_list("after a deploy succeeded")
    pre_promote: list[HookArgv] = _hook_list(
        "by `promote canary` / `promote stable` after the gate allows, before anything changes"
    )
    post_promote: list[HookArgv] = _hook_list("after a promotion succeeded")
    on_blocked: list[HookArgv] = _hook_list("when a policy gate blocks an operation (deny or inconclusive)")
    post_rollback: list[HookArgv] = _hook_list("after `rollback` or `undo` succeeded")
    timeout: Duration = Field(
        30.0, le=600, description="Longest one hook may run; then its process group is killed (at most 10m)."
    )


class Manifest(Strict):
    """A validated manifest.yaml. Load one with `load_manifest(path)`; derived values are properties."""

    services: ServiceConfig
    nginx: NginxConfig = Field(default_factory=NginxConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    canary: CanaryConfig = Field(default_factory=CanaryConfig)
    opa: OpaConfig = Field(default_factory=OpaConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    swarm: SwarmConfig = Field(default_factory=SwarmConfig)
    runtime: RuntimeName = Field(
        "docker", description=" or ".join(f"{s.name} ({s.summary})" for s in RUNTIMES.values()) + "."
    )
    project: Name | None = Field(None, description="Compose project name (default: swiftdeploy-<services.name>).")
    output_dir: SafeText | None = Field(None, description="Where generated files go (relative to the manifest).")

    _source: Path | None = PrivateAttr(None)
    _sha256: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _ports_distinct(self) -> Manifest:
        if self.services.name in RESERVED_SERVICE_NAMES:
            raise ValueError(
                f"services.name {self.services.name!r} is the name of a generated compose service; choose another"
            )
        taken: dict[int, str] = {}
        claims = port_claims(self, probe=False)  # the runtime's port rules
        highest = max(claims, key=lambda c: c.port)
        if highest.port > 65535:
            top = 65535 - (highest.port - self.services.port)
            raise ValueError(
                f"services.port must be at most {top} on the {self.runtime} runtime: it also uses {highest.field} "
                f"({highest.what}), which would be {highest.port}"
            )
        for claim in claims:
            if claim.port in taken:
                raise ValueError(
                    f"{claim.field} and {taken[claim.port]} are both {claim.port}; give each listener its own port"
                )
            taken[claim.port] = claim.field
        self._runtime_settings()
        if self.output_dir is not None and (posixpath.isabs(self.output_dir) or ".." in Path(self.output_dir).parts):
            raise ValueError("output_dir must be a folder inside the manifest's folder (relative, no '..')")
        return self

    def _runtime_settings(self) -> None:
        """Settings of one runtime are refused on another, never silently ignored."""
        if self.runtime == "swarm":
            if "driver_type" in self.network.model_fields_set and self.network.driver_type != "overlay":
                raise ValueError("network.driver_type must be overlay on the swarm runtime (or left out)")
            return
        for field, value in (("services.replicas", self.services.replicas), ("canary.replicas", self.canary.replicas)):
            if value != 1:
                raise ValueError(f"{field} is {value}, but only the swarm runtime runs replicas; set runtime: swarm")
        if "swarm" in self.model_fields_set:
            raise ValueError(
                f"the swarm section is for runtime: swarm (this manifest's runtime is {self.runtime}); remove it "
                "or set runtime: swarm"
            )

    # --- derived values (generators and runtimes read these, never recompute them) ---

    @property
    def project_name(self) -> str:
        return self.project or f"swiftdeploy-{self.services.name}"

    @property
    def canary_name(self) -> str:
        return f"{self.services.name}-canary"

    @property
    def canary_image(self) -> str:
        return self.canary.image or self.services.image

    @property
    def canary_version(self) -> str:
        return self.canary.version or self.services.version

    @property
    def canary_command(self) -> list[str] | None:
        """The canary's argv on the local runtime: canary.command, else services.command (None: the demo API)."""
        return self.canary.command or self.services.command

    @property
    def settings_sha256(self) -> str:
        """sha256 of the validated settings (every value, defaults included; canonical JSON): what the generated
        files are made from. Comments, key order, quoting and layout of the file do not change it."""
        import hashlib
        import json

        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def source_path(self) -> Path | None:
        """The manifest file this model was loaded from (None when built in code)."""
        return self._source

    @property
    def sha256(self) -> str | None:
        """sha256 of the manifest file's bytes (None when built in code)."""
        return self._sha256

    @property
    def base_dir(self) -> Path:
        return self._source.parent if self._source else Path.cwd()

    @property
    def out_dir(self) -> Path:
        """Folder of the generated files and history.jsonl."""
        return self.base_dir / self.output_dir if self.output_dir else self.base_dir

    @property
    def state_dir(self) -> Path:
        """Runtime state (lock, pid files, local configs, logs), next to the manifest."""
        return self.base_dir / ".swiftdeploy"

    @property
    def history_path(self) -> Path:
        return self.out_dir / "history.jsonl"

    def with_canary_weight(self, weight: int) -> Manifest:
        """This manifest with canary.weight set to `weight` (a rollout step's weight for nginx), same source."""
        copy = self.model_copy(update={"canary": self.canary.model_copy(update={"weight": weight})})
        return copy.with_source(self._source, self._sha256)

    def with_source(self, path: Path | None, sha256: str | None) -> Manifest:
        self._source = path
        self._sha256 = sha256
        return self
