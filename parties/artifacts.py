"""Names of the artifacts parties release and of the kinds they are tagged with (`meta.kind`).

Scenarios declare their attacks by these names; kept apart from the party modules (which
import torch) so that reading a scenario's declaration stays cheap.
"""

# embeddings: the source's plain BPR-MF user embeddings
USER_EMBEDDINGS = "user_embeddings"

# privnet: x_u|trans released for the test (the final release), per epoch for validation
# (named "x_trans@<epoch>"), and per training step for the batch's users
PRIVNET_RELEASED = "x_trans"
PRIVNET_REPRESENTATION_KIND = "user_representation"
PRIVNET_BATCH_KIND = "x_trans_batch"
