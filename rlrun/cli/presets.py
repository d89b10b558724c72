"""Family presets: sane settings for an env that no tuned file names.

The algorithms' defaults are their Atari settings (CleanRL's dqn_atari.py, ppo_atari.py). For any other
gymnasium id, rlrun reads the env's spaces (:func:`rlrun.envs.factory.env_kind`) and, when no
``configs/tuned/<algo>_<env>.yaml`` exists for the pair, selects ``configs/preset/<algo>_<kind>.yaml``
through the ``preset`` group of the defaults list, so the order of precedence is::

    algo defaults < family preset < tuned (algo, env) file < experiment file < command line

A single run gets the choice as one more command-line override before Hydra composes (so ``rlrun --cfg job``
prints the preset's keys and ``family_preset``); a sweep's job, whose env can differ from job to job, is
composed again with it (:func:`job_config`). A ``preset=...`` on the command line (``preset=none`` for
none) is the user's choice and is kept.
"""

from __future__ import annotations

import importlib.resources

from omegaconf import DictConfig

from rlrun.envs.factory import env_kind

# (algo, env kind) -> configs/preset/<name>.yaml; REINFORCE and the other algorithms have no family presets:
# their defaults do not depend on the family (the policy follows the action space)
PRESETS = {
    ("ppo", "atari"): "ppo_atari",
    ("ppo", "classic_control"): "ppo_classic_control",
    ("ppo", "continuous"): "ppo_continuous",
    ("pbrl", "classic_control"): "ppo_classic_control",
    ("pbrl", "continuous"): "ppo_continuous",
    ("dqn", "atari"): "dqn_atari",
    ("dqn", "classic_control"): "dqn_classic_control",
    ("rainbow", "atari"): "rainbow_atari",
    ("rainbow", "classic_control"): "rainbow_classic_control",
}


def tuned_file_exists(algo_choice: str, env_choice: str) -> bool:
    """Whether ``configs/tuned/<algo>_<env>.yaml`` exists (the defaults list's ``optional tuned`` entry)."""
    return importlib.resources.files("rlrun.configs").joinpath("tuned", f"{algo_choice}_{env_choice}.yaml").is_file()


def choose_preset(cfg: DictConfig, algo_choice: str, env_choice: str) -> str | None:
    """The family preset for a composed config, e.g. "ppo_continuous"; None when a tuned file names the pair
    or no preset fits.

    Args:
        cfg: the config composed without a preset.
        algo_choice, env_choice: the ``algo`` and ``env`` group choices (``hydra.runtime.choices``), the
            names the tuned files use (``env=gym`` is ``gym``, whatever its id).
    """
    if tuned_file_exists(algo_choice, env_choice):
        return None
    kind = env_kind(cfg)
    return PRESETS.get((str(cfg.algo.name), kind)) if kind else None


def user_chose_preset(overrides: list[str]) -> bool:
    """Whether the command line sets the ``preset`` group itself (``preset=...``, ``+preset=...``)."""
    return any(o.lstrip("+~").split("=", 1)[0] == "preset" for o in overrides)


def preset_override(overrides: list[str]) -> str | None:
    """For a single run's command-line ``overrides``: ``"preset=<name>"`` to add, or None (the user chose one,
    nothing fits, a tuned file names the pair, a resume, or the overrides do not compose: Hydra reports that)."""
    if user_chose_preset(overrides) or any(o.startswith("resume=") and o != "resume=null" for o in overrides):
        return None
    from hydra import compose, initialize_config_module

    try:
        with initialize_config_module(version_base="1.3", config_module="rlrun.configs"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except Exception:  # a bad override: the real composition names it
        return None
    choices = cfg.hydra.runtime.choices
    preset = choose_preset(cfg, str(choices.algo), str(choices.env))
    return f"preset={preset}" if preset else None


def job_config(cfg: DictConfig, overrides: list[str], choices: DictConfig) -> DictConfig:
    """A sweep job's config with its family preset: ``cfg`` composed again with ``preset=<name>`` added to the
    job's ``overrides`` (inside the running Hydra app), or ``cfg`` itself when no preset applies."""
    if user_chose_preset(overrides) or cfg.get("family_preset"):
        return cfg
    preset = choose_preset(cfg, str(choices.algo), str(choices.env))
    if preset is None:
        return cfg
    from hydra import compose

    return compose("config", overrides=[*overrides, f"preset={preset}"])
