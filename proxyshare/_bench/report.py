"""The bench's data: what to run (``BenchConfig``) and what it measured (``BenchReport``).

Pydantic models, so a report round-trips through JSON (``--json``) and the
CLI can validate options.  Pool workers never import this module (they import
``proxyshare._bench.workers`` only), so pydantic stays out of them.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from proxyshare._bench import scenarios as S

__all__ = [
    "DEFAULT_OPS",
    "QUICK_OPS",
    "SCENARIOS",
    "SCHEMA_VERSION",
    "TASK_TIMEOUT",
    "BenchConfig",
    "BenchReport",
    "Capability",
    "CapabilityRow",
    "MachineInfo",
    "Measurement",
    "Progress",
    "Run",
    "Steps",
    "Target",
    "Verdict",
    "expand_scenarios",
    "failure_text",
    "spec_of",
]

SCENARIOS = S.SCENARIOS
# Of BenchReport's JSON: bumped when a field is added, renamed or changes
# meaning.  1: no schema_version field; 2: + schema_version, verdict,
# Measurement.family; 3: + Run.connect_us, Measurement.connect_us.
SCHEMA_VERSION = 3
# Per worker (x ops_scale for the ~1 µs scenarios): the default run takes
# about 20-30 s on 2 busy cores, well under a minute.
DEFAULT_OPS = 10_000
QUICK_OPS = 200
TASK_TIMEOUT = 300.0  # seconds for one timed task, barrier wait included

# Names that stand for several scenarios in --scenarios.
ALIASES: dict[str, list[str]] = {
    "default": [name for name, spec in SCENARIOS.items() if spec.default],
    "all": list(SCENARIOS),
    "queue": [name for name in SCENARIOS if name.startswith("queue-")],
    "tls": ["proxyshare-tcp", "proxyshare-tls"],
    # The asyncio client beside the sync one (not in the default run, which fits a screen).
    "aio": ["proxyshare-counter", *(name for name in SCENARIOS if name.startswith("aio-"))],
}

Progress = Callable[[int, int, str], None]


def expand_scenarios(names: list[str] | None) -> list[str]:
    """Scenario names in table order; aliases expanded; ``ValueError`` on unknown names."""
    if names is None:
        return list(ALIASES["default"])
    wanted: set[str] = set()
    for name in names:
        if name in ALIASES:
            wanted.update(ALIASES[name])
        elif name in SCENARIOS:
            wanted.add(name)
        else:
            known = ", ".join([*SCENARIOS, *ALIASES])
            raise ValueError(f"unknown scenario {name!r}; choose from: {known}")
    return [name for name in SCENARIOS if name in wanted]


# -- the report ------------------------------------------------------------------


class BenchConfig(BaseModel):
    """What to run.  ``ops`` is per worker; None means the default (or quick) size."""

    model_config = ConfigDict(extra="forbid")

    workers: list[PositiveInt] = Field(default_factory=lambda: [2], min_length=1)
    ops: PositiveInt | None = None
    repeat: PositiveInt = 1
    scenarios: list[str] | None = None
    start_method: str | None = None
    redis_url: str | None = None
    quick: bool = False
    clients: list[PositiveInt] = Field(default_factory=list)
    micro: bool = False
    probes: bool = True

    @field_validator("scenarios")
    @classmethod
    def _known_scenarios(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            expand_scenarios(value)
        return value

    @field_validator("start_method")
    @classmethod
    def _known_start_method(cls, value: str | None) -> str | None:
        if value is not None and value not in multiprocessing.get_all_start_methods():
            methods = ", ".join(multiprocessing.get_all_start_methods())
            raise ValueError(f"unknown start method {value!r}; this platform has: {methods}")
        return value

    @property
    def ops_per_worker(self) -> int:
        if self.ops is not None:
            return self.ops
        return QUICK_OPS if self.quick else DEFAULT_OPS

    @property
    def selected(self) -> list[str]:
        return expand_scenarios(self.scenarios)

    @property
    def redis(self) -> str:
        return self.redis_url or S.DEFAULT_REDIS_URL


class Run(BaseModel):
    """One timed run of a scenario."""

    us_per_op: float
    expected: int
    observed: int
    round_trips_per_op: float | None = None
    connect_us: float | None = None  # opening one new connection (served over TCP), median


class Measurement(BaseModel):
    """A scenario at one worker count: the median of its runs, and their spread."""

    scenario: str
    description: str
    mechanism: str
    unit: str
    # A key of scenarios.FAMILIES; None in reports older than the field (or micro mode).
    family: str | None = None
    workers: int
    ops_per_worker: int
    us_per_op: float  # median over runs
    us_per_op_min: float
    us_per_op_max: float
    us_per_op_stdev: float
    ops_per_s: float
    baseline: str | None = None
    ratio_to_initializer: float | None = None  # us_per_op / baseline's us_per_op
    ratio_to_floor: float | None = None  # micro mode: us_per_op / the transport floor's
    expected: int
    observed: int
    lost_updates: int  # the most any run lost
    racy: bool
    correct: bool  # every run's total was exact
    round_trips_per_op: float | None = None  # proxyshare scenarios, from server stats
    connect_us: float | None = None  # proxyshare-tcp/-tls: a new connection's cost, µs
    runs: list[Run]


class Capability(BaseModel):
    """One cell of "what the cost buys"."""

    works: bool | None  # None: not applicable or not available here
    basis: Literal["checked", "structural", "n/a"]
    detail: str
    seconds: float | None = None  # holder-death probes: how long the lock stayed taken


class CapabilityRow(BaseModel):
    scenario: str
    mechanism: str
    submit_argument: Capability
    created_after_pool_start: Capability
    other_machine: Capability
    lock_release_on_holder_death: Capability


class Target(BaseModel):
    """A performance target (what it compares, and the limit) and whether this run met it."""

    name: str
    description: str
    measured: float | None
    limit: float
    comparison: Literal["<=", ">="]
    met: bool | None  # None: the scenarios it needs did not run
    detail: str


class Verdict(BaseModel):
    """What the run says, in a few plain sentences drawn from its measurements."""

    sentences: list[str]
    workers: int | None = None  # the worker count the sentences speak of
    # The cheapest scenario whose object passes as a submit() argument.
    cheapest_passable: str | None = None
    noisy: bool = False  # the machine was too noisy to trust the numbers
    noise: list[str] = Field(default_factory=list)  # why


class MachineInfo(BaseModel):
    platform: str
    machine: str
    processor: str
    cpu_count: int | None
    load_average_start: list[float] | None = None
    load_average_end: list[float] | None = None


class BenchReport(BaseModel):
    """Everything one ``proxyshare bench`` run measured and found."""

    schema_version: int = SCHEMA_VERSION
    proxyshare_version: str
    python_version: str
    python_implementation: str
    machine: MachineInfo
    start_method: str
    mode: Literal["scenarios", "micro"]
    config: BenchConfig
    measurements: list[Measurement] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)
    capabilities: list[CapabilityRow] = Field(default_factory=list)
    targets: list[Target] = Field(default_factory=list)
    verdict: Verdict | None = None
    started: datetime
    finished: datetime | None = None

    def measurement(self, scenario: str, workers: int | None = None) -> Measurement | None:
        """The measurement of ``scenario`` at ``workers`` (any worker count if None)."""
        for m in self.measurements:
            if m.scenario == scenario and (workers is None or m.workers == workers):
                return m
        return None


def spec_of(name: str) -> S.ScenarioSpec:
    return S.CLIENTS_SCENARIO if name == S.CLIENTS_SCENARIO.name else SCENARIOS[name]


def failure_text(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


class Steps:
    """Counts finished steps for the progress callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def start(self, label: str) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total, label)

    def finish(self, label: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, label)
