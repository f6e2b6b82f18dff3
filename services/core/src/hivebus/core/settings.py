"""Process settings, read once from the environment (prefix `HIVEBUS_`) in the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where to connect, how to log, and the bus timings; every default is written here."""

    model_config = SettingsConfigDict(env_prefix="HIVEBUS_", extra="ignore")

    nats_url: str | None = Field(
        default=None, description="NATS server URL; `up`/`run` start an embedded one when unset."
    )
    nats_user: str | None = Field(
        default=None, min_length=1, description="NATS user name of this process's identity."
    )
    nats_password: SecretStr | None = Field(
        default=None, description="Password of `nats_user`; never logged."
    )
    nats_password_file: Path | None = Field(
        default=None,
        description="A file holding the password (a compose or Kubernetes secret), instead of "
        "HIVEBUS_NATS_PASSWORD.",
    )
    nats_creds: Path | None = Field(
        default=None,
        description="A NATS credentials file (user JWT and seed) or an nkey seed file, instead "
        "of a user and password.",
    )
    nats_inbox_prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="Prefix of this process's reply subjects; `_INBOX_<user>` when a user is "
        "set (what the shipped permissions allow it), else `_INBOX`.",
    )
    nats_tls_ca: Path | None = Field(
        default=None, description="CA bundle that signs the server's certificate (turns TLS on)."
    )
    nats_tls_cert: Path | None = Field(
        default=None, description="Client certificate, for servers that verify clients."
    )
    nats_tls_key: Path | None = Field(default=None, description="Key of `nats_tls_cert`.")
    approver_user: str | None = Field(
        default=None,
        min_length=1,
        description="The dashboard decides approvals and replays dead letters as this NATS "
        "user (the `approver` identity) when its own identity (`dashboard`) may not.",
    )
    approver_password: SecretStr | None = Field(
        default=None, description="Password of `approver_user`; never logged."
    )
    provision: bool = Field(
        default=True,
        description="`serve` creates the streams, buckets and consumers it needs at start; "
        "false in a deployment, where `hivebus provision` did it as the provisioner identity.",
    )
    health_file: Path | None = Field(
        default=None,
        description="`serve` rewrites this file every few seconds while it is connected; "
        "`hivebus health` reads it (the image sets /tmp/hivebus-health).",
    )
    config_file: Path = Field(default=Path("hivebus.yaml"), description="Roles and tools file.")
    data_dir: Path | None = Field(
        default=None, description="Embedded server's JetStream store; a temporary one when unset."
    )
    knowledge_dir: Path | None = Field(
        default=None,
        description="The knowledge store's Git repository; `<data dir>/knowledge` or a "
        "temporary one when unset.",
    )
    log_format: Literal["console", "json"] = Field(default="console", description="Log renderer.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("HIVEBUS_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
        description="Key for `anthropic:` models; never logged.",
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("HIVEBUS_ANTHROPIC_BASE_URL", "ANTHROPIC_BASE_URL"),
        description="Any Anthropic-compatible endpoint.",
    )
    publish_timeout_s: float = Field(default=5.0, gt=0, description="JetStream publish ack wait.")
    nak_delay_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Delay before a message whose handler failed with a retryable error is "
        "delivered again (every service, every consumer).",
    )
    handover_wait_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="How long the orchestrator waits for a large dependency output's note to "
        "be committed before it retries the hand-over later.",
    )
    approval_early_wait_s: float = Field(
        default=30.0,
        ge=0,
        le=600,
        description="How long a decision naming an approval not requested (yet) is kept "
        "waiting for the request before it is refused as unknown.",
    )
    work_ack_wait_s: float = Field(
        default=60.0, gt=0, description="Seconds a worker holds a sub-task between heartbeats."
    )
    orchestrator_ack_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds before an event an orchestrator took but never settled (it died) "
        "goes to another replica; applying one event takes milliseconds.",
    )
    work_max_deliver: int = Field(default=5, ge=1, description="Deliveries before dead-letter.")
    heartbeat_s: float = Field(
        default=10.0, gt=0, description="How often a working agent calls `in_progress()`."
    )
    max_abandoned_tool_threads: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Threads of synchronous tools still running after their call timed out, "
        "per agent process, before new synchronous tool calls are refused as transient.",
    )
    replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas of every stream and bucket (3 on a cluster)."
    )
    kv_cas_attempts: int = Field(
        default=50, ge=1, description="Bound on compare-and-set retries for one update."
    )
    events_max_age_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="How long EVENTS keeps a task's history."
    )
    dedup_window_s: float = Field(
        default=600.0, gt=0, description="Window in which a repeated `Nats-Msg-Id` is dropped."
    )

    dashboard_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the dashboard listens on; loopback unless told otherwise.",
    )
    dashboard_port: int = Field(
        default=8700, ge=0, le=65535, description="The dashboard's port (0: any free port)."
    )
    dashboard_token: SecretStr | None = Field(
        default=None,
        description="When set, every dashboard API request needs it (`Authorization: Bearer`); "
        "required for decisions and replays when the dashboard listens off loopback.",
    )
    trace_url: str | None = Field(
        default=None,
        description="Link from a task's page to its trace, a template with `{trace_id}` "
        "(e.g. `http://localhost:16686/trace/{trace_id}`); no link when unset.",
    )

    # OpenTelemetry: the standard variables, read here once (the exporters read the rest).
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OTLP endpoint for traces and metrics; nothing is exported when unset.",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        description="OTLP endpoint for traces alone (a full URL, with `/v1/traces` for HTTP).",
    )
    otel_exporter_otlp_metrics_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        description="OTLP endpoint for metrics alone.",
    )
    otel_exporter_otlp_protocol: Literal["http/protobuf", "grpc"] = Field(
        default="http/protobuf",
        validation_alias="OTEL_EXPORTER_OTLP_PROTOCOL",
        description="OTLP transport: `http/protobuf` (port 4318) or `grpc` (port 4317).",
    )
    otel_traces_exporter: str = Field(
        default="otlp",
        validation_alias="OTEL_TRACES_EXPORTER",
        description="`otlp`, `console` (spans printed to stdout) or `none`.",
    )
    otel_metrics_exporter: str = Field(
        default="otlp", validation_alias="OTEL_METRICS_EXPORTER", description="`otlp` or `none`."
    )
    otel_sdk_disabled: bool = Field(
        default=False, validation_alias="OTEL_SDK_DISABLED", description="Turn telemetry off."
    )
    otel_service_name: str | None = Field(
        default=None,
        validation_alias="OTEL_SERVICE_NAME",
        description="Overrides the service's own name (`hivebus-orchestrator`, ...).",
    )
    capture_content: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "HIVEBUS_CAPTURE_CONTENT", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
        ),
        description="Put prompts, completions, tool arguments and results on spans "
        "(off: they can hold personal data).",
    )

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Self:
        if self.nats_password is not None and self.nats_password_file is not None:
            raise ValueError("set HIVEBUS_NATS_PASSWORD or HIVEBUS_NATS_PASSWORD_FILE, not both")
        has_password = self.nats_password is not None or self.nats_password_file is not None
        if has_password and self.nats_user is None:
            raise ValueError("a NATS password is set but HIVEBUS_NATS_USER is not")
        if self.nats_user is not None and not has_password:
            raise ValueError(
                f"HIVEBUS_NATS_USER is {self.nats_user!r} but no password is set "
                "(HIVEBUS_NATS_PASSWORD or HIVEBUS_NATS_PASSWORD_FILE)"
            )
        if self.nats_creds is not None and self.nats_user is not None:
            raise ValueError("set HIVEBUS_NATS_CREDS or HIVEBUS_NATS_USER, not both")
        if (self.approver_user is None) != (self.approver_password is None):
            raise ValueError("HIVEBUS_APPROVER_USER and HIVEBUS_APPROVER_PASSWORD go together")
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("HIVEBUS_NATS_TLS_CERT and HIVEBUS_NATS_TLS_KEY go together")
        return self

    @field_validator("trace_url")
    @classmethod
    def _trace_url_has_placeholder(cls, value: str | None) -> str | None:
        if value is not None and "{trace_id}" not in value:
            raise ValueError(
                f"HIVEBUS_TRACE_URL {value!r} has no `{{trace_id}}`: write where the trace id "
                "goes, e.g. http://localhost:16686/trace/{trace_id}"
            )
        return value
