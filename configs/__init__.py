"""The recipes (YAML) and the photo kit list, shipped inside the package as ``cinn.recipes``."""
