"""The ``run_*`` orchestration behind each command: data -> model -> fit -> select -> export,
into a run directory."""
