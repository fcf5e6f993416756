"""diffusion-pref-bench: the application (CLI, runner, store, report, tiny world)."""
