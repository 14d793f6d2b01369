"""Names parties and scenario declarations share: the artifacts parties release (and the kinds
they are tagged with, `meta.kind`), the defenses, the simulated attacker's presets.

Kept apart from the party modules (which import torch and scikit-learn) so that reading a
scenario's declaration stays cheap.
"""

# embeddings: the source's plain BPR-MF user embeddings
USER_EMBEDDINGS = "user_embeddings"

# privnet: x_u|trans released for the test (the final release), per epoch for validation
# (named "x_trans@<epoch>"), and per training step for the batch's users
PRIVNET_RELEASED = "x_trans"
PRIVNET_REPRESENTATION_KIND = "user_representation"
PRIVNET_BATCH_KIND = "x_trans_batch"

# Defenses of the source data (parties.defenses says who runs each and how).
DEFENSES = ("none", "ldp", "ldp-items", "blurme", "blurme-server")

# PrivNet's simulated attacker: updates per recommender step, and its learning rate (None: the
# recommender's). The paper updates it once per step at the recommender's rate; on small data
# the objective -lambda L_adv then rewards making that stale attacker confidently wrong, which
# flips the attribute in x_u|trans instead of removing it. Five updates at 1e-2 keep it near
# its best response (README, "PrivNet results").
ADVERSARY_PRESETS = {"paper": {"steps": 1, "lr": None}, "strong": {"steps": 5, "lr": 1e-2}}


def adversary_steps(options) -> int:
    """Simulated-attacker updates per recommender step for these party options: `adv_steps`,
    or its preset's (0 = unset; the party's default preset is the paper's)."""
    return int(options.get("adv_steps") or 0) or ADVERSARY_PRESETS[str(options.get("adversary", "paper"))]["steps"]


# adversarial-bpr: the source's BPR-MF user vectors, trained against attribute readouts
ADVERSARIAL_USER_VECTORS = "adversarial_user_vectors"

# membership: the top-k recommendation lists a recommender service serves a requester
RECOMMENDATION_LISTS = "recommendation_lists"

# pfcdr: user prototypes distilled by model inversion (EMCDR's variant sends USER_EMBEDDINGS);
# either kind travels under one artifact name, so one attack reads both side by side
USER_PROTOTYPES = "user_prototypes"
PFCDR_RELEASED = "source_user_vectors"

# privacy-budget: the ratings each user reveals to the server, and (the curious server's own
# instrument) the user embeddings it learned from them
REVEALED_RATINGS = "revealed_ratings"
SERVER_USER_EMBEDDINGS = "server_user_embeddings"
