"""The foundation every other layer stands on; it imports no other rlrun layer.

    config.py      validating config values (one clear error naming the key), run-level keys, flattening
    run.py         the Run: run directory, TensorBoard, tracked state, checkpoints, evaluation, progress, signals
    state.py       what each kind of tracked object becomes in a checkpoint, and how it comes back
    checkpoint.py  checkpoint files: finding, loading safely, the global random state
    registry.py    the algorithm registry: algo.name -> AlgoSpec (validate, train, evaluation policy, metric)
    events.py      TensorBoard event files: the hyperparameter table, reading scalars back (no torch)
    progress.py    the progress display
"""
