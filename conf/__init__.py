# Marks conf/ as the package `amtrain.conf` (see pyproject.toml) so the installed
# `amtrain` console script finds these YAML files from any directory.
