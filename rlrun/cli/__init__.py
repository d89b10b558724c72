"""The console entry points: argument handling and printing only.

    train.py     rlrun: compose the config with Hydra, validate it, open the Run, train or resume
    sweep.py     rlrun -m: sweep jobs (status, summary, skip and resume on rerun, preemption, preflight)
    evaluate.py  rlrun-eval: play a checkpoint, record returns, videos and demonstrations
    plot.py      rlrun-plot: learning curves and final-score tables from event files (no torch, no gymnasium)
"""
