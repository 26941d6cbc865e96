"""The benchmark harness: the reference results under ``results/``, measured and rendered.

Run it from the repository root (it is not installed with the library)::

    python -m benchmarks plan               # every planned row, and which are measured
    python -m benchmarks baselines          # known pruners (resumes: measured rows are skipped)
    python -m benchmarks searched           # searched recipes against them
    python -m benchmarks pages              # every page and figure again, from the tables alone

How it is put together, in reading order:

- ``plan.py``: the one table of planned rows (baselines, searches, zero-shot), each a
  ``PlanRow``; ``searches.py`` declares the searches those rows name.
- ``studies.py``: what each study measures, with which windows, into which results folder.
- ``runner.py``: the one resumable runner; ``pruned.py`` prunes a fresh model as a row says,
  ``search_runs.py`` runs or resumes a search and exports its recipes.
- ``table.py``: typed rows (dataclasses) in CSV files; ``measurement.py`` and the study
  modules declare them.
- ``pages/``: the results pages, rendered from the tables into the Markdown templates under
  ``templates/`` (the prose lives there); ``plots.py`` draws every figure.
- ``fitness.py``, ``fitness_noise.py``, ``bench_eval.py``, ``scaling.py``: measurements of the
  evaluator and of the cluster rather than of pruned models.
"""
