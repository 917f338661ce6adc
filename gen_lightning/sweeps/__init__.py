"""Sweeps on Optuna: a W&B sweep file becomes an Optuna study, each trial a `gen-lightning` process.

  spec.py      the W&B sweep file -> Optuna distributions, sampler, pruner, budget, trial command
  storage.py   where the study lives (SQLite, a journal file on a shared filesystem, a database) + heartbeat
  queue.py     the study as a work queue shared by many workers: budget, surplus trials, re-queued failures
  trial.py     one trial = one `gen-lightning fit` process in its own folder (the Optuna objective)
  report.py    the table ranking the trials, the best trial, the W&B summary run

`gen-lightning sweep FILE --local` (commands/sweep.py) puts them together; the trial's process reports
to the study through gen_lightning.callbacks.OptunaPruning. docs/sweeps.md is the user's page.
"""
