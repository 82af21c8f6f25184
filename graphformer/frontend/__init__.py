"""The front end: YAML with positions → the file format (pydantic) → imports, params and presets → the expanded,
shape-checked IR. `check.check_file` runs the whole pipeline; `api.load` wraps it as a `Spec`."""
