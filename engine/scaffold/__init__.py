"""``lepton plugin new``: :mod:`~engine.scaffold.plugin` renders ``templates/plugin/``
into a new, working task-plugin distribution."""
