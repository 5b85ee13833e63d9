"""Portrait settings: one frozen pydantic-settings object, read from ``PORTRAIT_...`` variables.

Every setting has an environment variable: the prefix ``PORTRAIT_``, then the field path joined by
``__`` in upper case, e.g. ``PORTRAIT_KAFKA__BOOTSTRAP_SERVERS`` or ``PORTRAIT_BATCH__MAX_WAIT_S``.
Build the object once at the entry point with :func:`load_settings` and pass it down; nothing
else in Portrait reads ``os.environ``.

Example:
    >>> settings = load_settings(batch={"max_batch_size": 32})
    >>> settings.batch.max_batch_size
    32
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.contract.errors import ConfigError
from models.contract.manifest import DEFAULT_MODEL_DIR

__all__ = [
    "DEFAULT_MODEL_DIR",
    "ENV_PREFIX",
    "BatchSettings",
    "KafkaSettings",
    "MixedSettings",
    "ModelSettings",
    "ProfileSettings",
    "PseudonymisationSettings",
    "SegmentSettings",
    "Settings",
    "TopicSettings",
    "env_name",
    "load_settings",
]

ENV_PREFIX = "PORTRAIT_"
"""Prefix of every Portrait environment variable."""


_TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"  # Kafka's legal topic-name characters and length
_HOST_PORT = re.compile(r"^[^\s:,]+:(\d{1,5})$|^\[[0-9A-Fa-f:.]+\]:(\d{1,5})$")
_SECRET_FIELDS = frozenset({"sasl_password", "secret", "token", "page"})  # inputs never echoed
_MIN_SECRET_CHARS = 16
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    """Connection to the Kafka-protocol broker (``PORTRAIT_KAFKA__...``).

    Attributes:
        bootstrap_servers: Comma-separated ``host:port`` list; ``""`` means none configured
            (``portrait demo`` then starts the embedded broker; ``portrait worker`` refuses to
            start).
        security_protocol: Kafka ``security.protocol``.
        sasl_mechanism: e.g. ``"PLAIN"``, ``"SCRAM-SHA-256"``; required with a ``SASL_*`` protocol.
        sasl_username: SASL user name.
        sasl_password: SASL password (never logged or printed).
        ssl_cafile: CA bundle file for ``SSL``/``SASL_SSL``; must exist.
        session_timeout_s: Consumer group session timeout in seconds (default 30; tests use 6).
        heartbeat_interval_s: Consumer heartbeat interval in seconds (default 3; tests use 1);
            must be below the session timeout.
    """

    bootstrap_servers: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = Field(default=None, validate_default=True)
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: FilePath | None = None
    session_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=3.0, gt=0)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        for part in parts:
            match = _HOST_PORT.match(part)
            port = int(next(g for g in match.groups() if g)) if match else -1
            if not 0 < port < 65536:
                raise ValueError(f"must be comma-separated host:port pairs, bad entry {part!r}")
        return ",".join(parts)

    @field_validator("sasl_mechanism")
    @classmethod
    def _check_sasl(cls, value: str | None, info: Any) -> str | None:
        protocol = info.data.get("security_protocol", "PLAINTEXT")
        if protocol.startswith("SASL_") and not value:
            raise ValueError(f"required when PORTRAIT_KAFKA__SECURITY_PROTOCOL is {protocol}")
        return value

    @field_validator("heartbeat_interval_s")
    @classmethod
    def _check_heartbeat(cls, value: float, info: Any) -> float:
        session = info.data.get("session_timeout_s")
        if session is not None and value >= session:
            raise ValueError(f"must be below PORTRAIT_KAFKA__SESSION_TIMEOUT_S ({session})")
        return value

    @property
    def bootstrap_list(self) -> list[str]:
        """The bootstrap servers as a list of ``host:port`` strings (empty when none set)."""
        return [p for p in self.bootstrap_servers.split(",") if p]


class TopicSettings(_Frozen):
    """Topic names and the layout of topics Portrait creates (``PORTRAIT_TOPICS__...``).

    Attributes:
        comments: Source topic of comment events.
        behavior: Source topic of behaviour events.
        profile_updates: Output topic of profile updates (key = user id).
        dead_letter: Dead-letter topic for events that cannot be decoded or validated.
        erasure: Topic of erasure requests (``portrait forget``).
        segment_events: Output topic of segment transitions (key = user id), written when
            segments are defined (``PORTRAIT_SEGMENTS__PATH``).
        labels: Topic of verdict corrections made on the profile page (key = user id; an
            erasure writes a tombstone there too; ``portrait labels export`` reads it).
        partitions: Partitions of topics Portrait creates; the source topics must have as many
            (they are co-partitioned with the profile table).
        replication_factor: Replication factor of topics Portrait creates.
        wrong_partition: What happens to a comment or behaviour event found on a partition other
            than its key's (murmur2, Kafka's default partitioner): ``reroute`` (default) writes it
            to the source's repartition topic ``<app_id>-<source>-repartition`` on its key's
            partition, where the worker profiles it, as Kafka Streams' repartition topics do;
            ``dead_letter`` dead-letters it (reason ``wrong_partition``). Either way each user
            keeps one profile. Erasure requests off their partition are always dead-lettered.
        require_compaction: Refuse to start (exit 2) when an existing profile-updates topic is
            not compacted (``cleanup.policy`` without ``compact``: an erased user's earlier
            updates would stay until retention); default False = a warning with the fix. A
            broker that reports no topic configs cannot be checked either way.
    """

    comments: str = Field(default="comments.v1", pattern=_TOPIC_PATTERN)
    behavior: str = Field(default="behavior.v1", pattern=_TOPIC_PATTERN)
    profile_updates: str = Field(default="profile-updates.v1", pattern=_TOPIC_PATTERN)
    dead_letter: str = Field(default="portrait-dlq.v1", pattern=_TOPIC_PATTERN)
    erasure: str = Field(default="erasure.v1", pattern=_TOPIC_PATTERN)
    partitions: int = Field(default=4, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=32)
    segment_events: str = Field(default="segment-events.v1", pattern=_TOPIC_PATTERN)
    labels: str = Field(default="labels.v1", pattern=_TOPIC_PATTERN)
    wrong_partition: Literal["reroute", "dead_letter"] = "reroute"
    require_compaction: bool = False


class BatchSettings(_Frozen):
    """Micro-batching of events (``PORTRAIT_BATCH__...``).

    A micro-batch closes at ``max_batch_size`` events or ``max_wait_s`` seconds after its first
    event, whichever comes first.

    Attributes:
        max_batch_size: Events per micro-batch, 1..4096 (default 64).
        max_wait_s: Seconds after the first event, > 0 and <= 10 (default 0.02).
    """

    max_batch_size: int = Field(default=64, ge=1, le=4096)
    max_wait_s: float = Field(default=0.02, gt=0, le=10)


class ModelSettings(_Frozen):
    """The sentiment model (``PORTRAIT_MODEL__...``).

    Attributes:
        path: Model directory written by ``portrait export``; ``None`` means the committed
            artifact :data:`DEFAULT_MODEL_DIR`.
        device: ``"auto"`` (CUDA when onnxruntime can use it, else CPU), ``"cpu"`` or ``"cuda"``
            (an error at start when CUDA cannot be used).
        intra_op_threads: onnxruntime intra-op threads; 0 = onnxruntime's default.
        registry: A model registry directory (:mod:`stream.model_registry`; ``portrait model
            stage|promote|rollback``); when set, the worker loads the registry's live model,
            swaps to a newly promoted one and shadow-scores the candidate; ``path`` must be unset.
        shadow_events: Comments each worker scores with a staged candidate in shadow
            (:mod:`stream.shadow`), default 10,000; 0 = no shadow scoring.
        shadow_share: Share of the comment micro-batches the candidate scores, in (0, 1]
            (default 1: every one); lower it where the candidate's CPU slows the live path.
    """

    path: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(default=0, ge=0, le=1024)
    registry: Path | None = None
    shadow_events: int = Field(default=10_000, ge=0, le=100_000_000)
    shadow_share: float = Field(default=1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSettings:
        if self.path is not None and self.registry is not None:
            raise ValueError("set PORTRAIT_MODEL__PATH or PORTRAIT_MODEL__REGISTRY, not both")
        return self

    @property
    def resolved_path(self) -> Path:
        """``path`` if set, else :data:`DEFAULT_MODEL_DIR`."""
        return self.path if self.path is not None else DEFAULT_MODEL_DIR


class ProfileSettings(_Frozen):
    """Per-user profile aggregation (``PORTRAIT_PROFILE__...``).

    Attributes:
        half_life_s: Half-life in seconds of the exponential decay over event time (default
            604800 = 7 days), > 0.
        top_k_categories: Interest categories kept per user, 1..1000 (default 20).
        last_n_comments: Most recent scored comments kept per user, 0..100 (default 5).
    """

    half_life_s: float = Field(default=604800.0, gt=0)
    top_k_categories: int = Field(default=20, ge=1, le=1000)
    last_n_comments: int = Field(default=5, ge=0, le=100)


class MixedSettings(_Frozen):
    """Mixed-sentiment detection on clauses (``PORTRAIT_MIXED__...``); see
    :mod:`models.contract.mixed`.

    Attributes:
        enabled: Split comments into clauses and classify them with the comments (default True);
            off, no comment is mixed and inference sees only the comments.
        threshold: A comment is mixed when one clause has ``p_positive`` and another
            ``p_negative`` as its largest probability and at least this, 0.35..1 (default 0.4;
            see :mod:`models.contract.mixed`).
        max_clauses: Most clauses classified per comment, 2..64 (default 8); each adds one row to
            the micro-batch's inference call.
    """

    enabled: bool = True
    threshold: float = Field(default=0.4, ge=0.35, le=1.0)
    max_clauses: int = Field(default=8, ge=2, le=64)


class SegmentSettings(_Frozen):
    """Streaming segments (``PORTRAIT_SEGMENTS__...``; :mod:`stream.segments`).

    Attributes:
        path: The definitions file (YAML or JSON, ``{"segments": [...]}``); ``None`` (default) =
            no segments, no ``segment-events.v1``.
        reevaluate_interval_s: Seconds between two re-evaluations of every stored profile
            (10 s .. 7 days, default 1 hour), besides one after each rebalance: how late a
            wall-clock condition ("no event for 14 days") may be noticed
            (:mod:`stream.segment_sweep`).
    """

    path: Path | None = None
    reevaluate_interval_s: float = Field(default=3600.0, ge=10.0, le=7 * 24 * 3600.0)


class PageSettings(_Frozen):
    """The profile page, ``portrait page`` (``PORTRAIT_PAGE__...``; :mod:`stream.tools.page`).

    Attributes:
        host: Address the page binds to (default ``127.0.0.1``: this machine only).
        port: TCP port (default 8700).
        token: Bearer token every request must carry (``Authorization: Bearer <token>``), at
            least 16 characters; required when ``host`` is not a loopback address, never logged.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    token: SecretStr | None = None

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {_MIN_SECRET_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _token_off_loopback(self) -> PageSettings:
        if self.token is None and not _is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is reachable from other machines: set PORTRAIT_PAGE__TOKEN "
                "(a bearer token of 16+ characters) or bind to 127.0.0.1"
            )
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PseudonymisationSettings(_Frozen):
    """Pseudonymisation of user ids (``PORTRAIT_PSEUDONYMISATION__...``); off by default.

    Attributes:
        secret: Key of the HMAC-SHA256 that replaces every user id by its 64-character lowercase
            hex digest before the id reaches the profile table, the logs or the output topics
            (see :mod:`stream.privacy`); at least 16 characters, never logged or printed.
            ``None`` (the default) keeps user ids as they are. Changing the secret starts a new
            profile for every user. The dead-letter topic keeps the original record bytes.
    """

    secret: SecretStr | None = None

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < _MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {_MIN_SECRET_CHARS} characters")
        return value


class Settings(BaseSettings):
    """All Portrait settings; env prefix ``PORTRAIT_``, nested delimiter ``__``. Frozen.

    Attributes:
        app_id: faust app id = consumer group id = prefix of changelog topics (default
            ``"portrait"``).
        state_dir: Directory of the local RocksDB table stores (default ``.portrait/state``).
        metrics_port: Port of the Prometheus endpoint; 0 = no metrics server (default 9464).
        log_level: ``"debug"``, ``"info"``, ``"warn"`` or ``"error"`` (default ``"info"``).
        log_format: ``"text"`` (one line per record) or ``"json"`` (one JSON object per line, the
            same fields, for log pipelines; default ``"text"``).
        log_user_ids: Whether user ids may appear in logs (default False).
        kafka: See :class:`KafkaSettings`.
        topics: See :class:`TopicSettings`.
        batch: See :class:`BatchSettings`.
        model: See :class:`ModelSettings`.
        profile: See :class:`ProfileSettings`.
        mixed: See :class:`MixedSettings`.
        pseudonymisation: See :class:`PseudonymisationSettings`.
        segments: See :class:`SegmentSettings`.
        page: See :class:`PageSettings`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    app_id: str = Field(default="portrait", pattern=_TOPIC_PATTERN)
    state_dir: Path = Path(".portrait/state")
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    log_level: Literal["debug", "info", "warn", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    log_user_ids: bool = False
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    batch: BatchSettings = BatchSettings()
    model: ModelSettings = ModelSettings()
    profile: ProfileSettings = ProfileSettings()
    mixed: MixedSettings = MixedSettings()
    pseudonymisation: PseudonymisationSettings = PseudonymisationSettings()
    segments: SegmentSettings = SegmentSettings()
    page: PageSettings = PageSettings()

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def segment_ticks_topic(self) -> str:
        """The internal topic that triggers re-evaluations of stored profiles against the
        segments: ``<app_id>-segment-ticks`` (:mod:`stream.segment_sweep`)."""
        return f"{self.app_id}-segment-ticks"

    def repartition_topics(self) -> dict[str, str]:
        """Source topic -> its repartition topic ``<app_id>-<source>-repartition`` (comments and
        behaviour; see ``TopicSettings.wrong_partition``), empty under ``dead_letter``."""
        if self.topics.wrong_partition != "reroute":
            return {}
        return {source: f"{self.app_id}-{source}-repartition"
                for source in (self.topics.comments, self.topics.behavior)}  # fmt: skip


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable of a settings field path.

    Args:
        loc: Field path, e.g. ``("batch", "max_wait_s")``.

    Returns:
        e.g. ``"PORTRAIT_BATCH__MAX_WAIT_S"``.
    """
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _describe(error: ErrorDetails) -> str:
    """One line per validation error: ``ENV_VAR: what is wrong (got VALUE)``."""
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()))
        what = f"must be {_BOUNDS[kind]} {limit:g}"
    elif kind == "literal_error":
        what = f"must be one of {ctx['expected']}"
    elif kind == "string_pattern_mismatch":
        what = "must be 1-249 characters from A-Z a-z 0-9 . _ -"
    elif kind == "extra_forbidden":
        return f"{env_name(loc)}: unknown setting (check the spelling)"
    elif kind == "value_error":
        what = str(ctx.get("error", error["msg"]))
    else:
        what = error["msg"].lower()
    if error["input"] is None or any(str(part) in _SECRET_FIELDS for part in loc):
        return f"{env_name(loc)}: {what}"
    return f"{env_name(loc)}: {what} (got {error['input']})"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from ``PORTRAIT_...`` environment variables and explicit overrides.

    Args:
        **overrides: Field values that take precedence over the environment; nested sections as
            mappings, e.g. ``load_settings(batch={"max_wait_s": 0.05})``.

    Returns:
        The frozen, validated settings.

    Raises:
        ConfigError: A value is invalid; the message has one line per problem, naming the
            environment variable and what to change, e.g.
            ``"PORTRAIT_BATCH__MAX_WAIT_S: must be > 0 (got -1)"``.
    """
    try:
        return Settings(**_plain(overrides))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        lines = [_describe(error) for error in errors]
        names = [env_name(tuple(error["loc"])) for error in errors]
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines), env_vars=names) from exc


def _plain(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Section models given as overrides -> mappings of their set fields, so env values merge in."""
    return {
        key: value.model_dump(exclude_unset=True) if isinstance(value, BaseModel) else value
        for key, value in overrides.items()
    }
