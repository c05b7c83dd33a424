"""Configuration: the YAML file (loader), its Pydantic models (models), paths and secret references.

Deliberately empty: importing a light module such as `backupctl.config.secrets` or
`backupctl.config.paths` must not load the Pydantic models. Import names from the
submodules (`backupctl.config.loader`, `backupctl.config.models`).
"""
