"""The command-line programs, importable as ``cinn.programs`` (``python pipelines/NAME.py`` or ``cinn-NAME``)."""
