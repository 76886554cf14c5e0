"""One typed settings object: defaults, then ``shopfloor.toml`` (or ``--config``), then the environment.

Every setting can be given as an environment variable ``SHOPFLOOR_<NAME>`` (e.g.
``SHOPFLOOR_HTTP_PORT=9000``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

CONFIG_FILE = "shopfloor.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOPFLOOR_", toml_file=CONFIG_FILE, extra="forbid")

    data_dir: Path = Field(Path(".shopfloor"), description="Folder for the DuckDB file and demo state.")
    http_host: str = Field("127.0.0.1", description="Address the HTTP API and dashboard listen on.")
    http_port: int = Field(8000, ge=0, le=65535, description="Port of the HTTP API and dashboard.")
    mqtt_host: str = Field("127.0.0.1", description="Address the embedded MQTT broker listens on.")
    mqtt_port: int = Field(11883, ge=0, le=65535,
                           description="Port of the embedded MQTT broker (not 1883, which a system "
                                       "Mosquitto often holds).")
    mqtt_broker_process: bool = Field(
        True, description="Run the embedded MQTT broker in a child process of its own, so it works on another "
                          "CPU core than decoding and commits (false, and always on Windows: in this process).")
    duckdb_threads: int = Field(
        0, ge=0, le=1024, description="Threads DuckDB works with (0: one per CPU core, less the core the embedded "
                                      "broker's child process works on when it has one).")
    future_skew_s: int = Field(300, ge=0, description="Reject values whose ts is further in the future.")
    raw_retention_days: int = Field(30, ge=1, description="Keep raw samples this long; older ts are rejected.")
    max_payload_bytes: int = Field(256 * 1024, ge=256, description="Largest MQTT message accepted.")
    staleness_s: int = Field(300, ge=1, description="Default hold of a value for time-weighted averages.")
    store: Literal["duckdb", "postgres"] = Field(
        "duckdb", description="Where the registry and history live: the embedded DuckDB file, or PostgreSQL "
                              "(needed for several processes).")
    database_url: str = Field("host=127.0.0.1 port=5432 dbname=shopfloor user=postgres",
                              description="PostgreSQL connection (libpq string or postgresql:// URL).")
    database_schema: str = Field("shopfloor", description="PostgreSQL schema holding shopfloor's tables.")
    broker: Literal["embedded", "mosquitto"] = Field(
        "embedded", description="The MQTT broker: embedded in this process, or an external Mosquitto "
                                "whose password and ACL files shopfloor writes from the registry.")
    mosquitto_dir: Path | None = Field(None, description="Folder for the generated Mosquitto config, password "
                                                         "and ACL files [default: <data_dir>/mosquitto].")
    mosquitto_manage: bool = Field(True, description="Start and stop Mosquitto as a child process (else only "
                                                     "write its files and signal the pid in mosquitto_pid_file).")
    mosquitto_binary: str = Field("mosquitto", description="The mosquitto executable.")
    mosquitto_pid_file: Path | None = Field(None, description="Pid file of an externally run Mosquitto "
                                                              "(mosquitto_manage = false).")
    mqtt_service_user: str = Field("shopfloor-ingest", description="MQTT user the ingest workers connect "
                                                                   "as (server mode; read access to all uplink topics).")
    mqtt_service_password: SecretStr | None = Field(None, description="Its password [default: generated once "
                                                                      "into <data_dir>/mqtt-service-password].")
    ingest_workers: int = Field(1, ge=1, le=64, description="Ingest worker processes in server mode.")
    rollup_1m_days: int = Field(90, ge=1, description="Keep 1-minute rollups this long.")
    rollup_1h_days: int = Field(730, ge=1, description="Keep 1-hour rollups this long.")
    retention_every_s: int = Field(3600, ge=10, description="How often the retention job runs.")
    alarm_tick_s: float = Field(1.0, gt=0, le=60, description="How often rules see the clock (delays, no-data, "
                                                              "shelf ends) and the platform checks itself.")
    alarm_webhook_attempts: int = Field(8, ge=1, le=50, description="Webhook delivery attempts before a "
                                                                   "notification is dead-lettered.")
    alarm_webhook_delay_s: float = Field(1.0, gt=0, description="Wait before the first webhook retry; doubles "
                                                                "after each failure (at most 10 minutes).")
    alarm_disk_full: float = Field(0.9, gt=0, le=1, description="Raise 'disk nearly full' at this used share "
                                                                "of the data directory's disk.")
    demo_history_hours: int = Field(48, ge=0, description="Hours of simulated history the demo back-fills on its "
                                                          "first start (0: none); capped below raw_retention_days.")
    analytics_every_s: int = Field(60, ge=0, description="How often trained analytics models score the new data "
                                                         "of the machines they follow (0: never).")
    kpi_tiles: bool = Field(True, description="Keep the KPI inputs of closed windows (shifts) and answer from "
                                              "them; late data drops the ones it touches.")
    kpi_keep_days: float = Field(35, ge=0, description="The server keeps every machine's closed shifts of this "
                                                       "many days ahead of questions (0: only what is asked for).")
    kpi_keep_every_s: int = Field(300, ge=10, description="How often the server looks for closed shifts to keep.")
    kpi_keep_settle_s: int = Field(120, ge=0, description="How long after a shift ends the server keeps it "
                                                          "(late messages of the last minutes come first).")
    url: str = Field("http://127.0.0.1:8000", description="Server the CLI talks to.")
    token: SecretStr | None = Field(None, description="API token the CLI sends (SHOPFLOOR_TOKEN).")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "shopfloor.duckdb"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None:
        class _FromFile(Settings):
            model_config = SettingsConfigDict(env_prefix="SHOPFLOOR_", toml_file=str(config_file), extra="forbid")

        return _FromFile(**values)  # type: ignore[arg-type]
    return Settings(**values)  # type: ignore[arg-type]


def example_toml() -> str:
    """Every setting with its description and default, as a commented ``shopfloor.toml``."""
    lines = ["# shopfloor settings. Every line is optional; environment variables SHOPFLOOR_<NAME> win.", ""]
    for name, field in Settings.model_fields.items():
        lines.append(f"# {field.description}")
        default = field.default
        if default is None:
            lines.append(f"# {name} =")
        elif isinstance(default, bool):
            lines.append(f"# {name} = {str(default).lower()}")
        elif isinstance(default, int | float):
            lines.append(f"# {name} = {default}")
        else:
            lines.append(f'# {name} = "{default}"')
        lines.append("")
    return "\n".join(lines)
