"""One typed settings object: defaults, then ``shopfloor.toml`` (or ``--config``), then the environment.

Every setting can be given as an environment variable ``SHOPFLOOR_<NAME>`` (e.g.
``SHOPFLOOR_HTTP_PORT=9000``).
"""

from __future__ import annotations

from pathlib import Path

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
    future_skew_s: int = Field(300, ge=0, description="Reject values whose ts is further in the future.")
    raw_retention_days: int = Field(30, ge=1, description="Keep raw samples this long; older ts are rejected.")
    max_payload_bytes: int = Field(256 * 1024, ge=256, description="Largest MQTT message accepted.")
    staleness_s: int = Field(300, ge=1, description="Default hold of a value for time-weighted averages.")
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
