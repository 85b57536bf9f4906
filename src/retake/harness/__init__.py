"""The reproduction harness: benchmarks, prompts and scoring, the lmms-eval model wrapper,
resumable runs, tables. The library (engine, methods, models) does not import it."""
