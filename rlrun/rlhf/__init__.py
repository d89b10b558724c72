"""Learning from people's judgments, apart from the algorithms' loops.

    preferences.py      the Bradley-Terry model and loss, synthetic labelers, agreement statistics
    preference_data.py  segments, labels, text pairs, demonstrations and K-way rankings files
    objectives.py       DPO / IPO / cDPO, the per-token KL penalty, token GAE, the adaptive KL coefficient
    reward_models.py    reward ensembles r(s, a) / r(s) / r(s, a, s') and their checkpoint
    fitting.py          fitting a reward ensemble to labelled pairs (Christiano et al. 2017)
    learned_reward.py   reward=learned: the env wrapper that makes a run optimize a reward model
    text_reward.py      text reward models (transformers) on prompt/chosen/rejected pairs
    tiny_text.py        a tiny GPT-2 and a synthetic preference set, built offline
    tiny_lm.py          rlrun-tiny-gpt2, a tiny GPT-2 LM pretrained offline on Python's help text; the sentiment task
    scorers.py          named true scorers of responses (VADER sentiment) and preference labels from their scores
    social_choice.py    Condorcet, Copeland and Borda winners of preference matrices
"""
