"""Configuration: the typed schema, Hydra composition, and the packaged default tree.

- :mod:`engine.config.schema`: the dataclasses of a run's config and their validation.
- :mod:`engine.config.compose`: Hydra composition over the search path (the project's
  ``conf/``, the engine's packaged ``conf/``, every plugin's config dirs) and the
  mapping of Hydra's errors to :class:`~engine.errors.ConfigError`.
- :mod:`engine.config.load`: ``load_config(overrides)``, composition and validation in
  one call, as every command uses it.
"""
