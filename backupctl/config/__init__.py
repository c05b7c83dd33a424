"""Configuration: the YAML file, its Pydantic models, and secret references."""

from backupctl.config.loader import load_config, resolve_config_path
from backupctl.config.models import Config, DeploymentConfig, EncryptionConfig, Settings

__all__ = ["Config", "DeploymentConfig", "EncryptionConfig", "Settings", "load_config", "resolve_config_path"]
