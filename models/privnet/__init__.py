"""PrivNet (privacy-aware transfer for cross-domain recommendation), built for split learning.

The source network and the target network belong to different parties. What crosses between
them during training is exactly two arrays per step:

    source -> target   x_trans [U_b, trans_dim]   the transferred representation of the batch's users
    target -> source   dL_T/dx_trans [U_b, trans_dim]

One training step of a multi-party run (Algorithm 1 of the paper):
  source: adversary_step(...) x adv_steps       attacker update on public users (x_trans detached; none at lam = 0)
  target: batch = its ExampleStream.next_batch(); users, inv = np.unique(batch.users, return_inverse=True)
  source: x, x_live = transfer_for_step(source, q_hist[users], q_cand[users])   x -> target
  target: loss_T, grad = target_step(target, opt, batch, x, inv)                -> source
  source: source_step(source, adversary, opt, its own batch, x_live, labels[users], grad, lam)
`train_privnet_joint` runs exactly these calls in one process; `recommender_step_joint` is the
plain one-graph PyTorch step they agree with (tested to 1e-6). Each party clips the gradient
norm of its own parameters only (neither can see the other's), and the joint step does the same.

Architecture (paper §4.1, Table 2): item embeddings of size 80 (Glorot uniform, padding id
`n_items` is a fixed zero vector), an attention user encoder over the last `WINDOW` items, an MLP
[80, 64] -> 1 on [x_u, x_i], one transfer layer x_trans = H [x_u, x_j] (no bias) that the target
adds to its first layer: h1 = act(W1 [x_u, x_i] + b1 + x_trans). Hidden activations are ReLU and
the output is a logit trained with binary cross-entropy (sigmoid), as in the CoNet/NCF code the
paper builds on. A user's released representation is source.transfer of a fixed per-user query
(`user_query`): the w items before the user's last source item, with that last item as candidate;
a target example of user u uses that same x_trans. Held-out candidates are scored with the
user's last w training items as history (`eval_inputs`, `score_candidates`).
"""

from .inputs import (
    STREAM_PUBLIC_USERS,
    STREAM_SOURCE_EXAMPLES,
    STREAM_TARGET_EXAMPLES,
    ExampleBatch,
    ExampleStream,
    UserStream,
    eval_inputs,
    score_candidates,
    sliding_examples,
    source_stream,
    target_stream,
    user_query,
)
from .loops import evaluate_privnet, public_users_of, train_privnet_joint, train_privnet_target_only, transferred_representations
from .networks import WINDOW, AttentionUserEncoder, AttributeAdversary, PrivNetSource, PrivNetTarget
from .steps import (
    adversary_step,
    attacker_updates,
    check_interval,
    group_transfer,
    recommender_step_joint,
    source_step,
    source_transfer,
    target_step,
    transfer_for_step,
)

__all__ = [
    "STREAM_PUBLIC_USERS",
    "STREAM_SOURCE_EXAMPLES",
    "STREAM_TARGET_EXAMPLES",
    "WINDOW",
    "AttentionUserEncoder",
    "AttributeAdversary",
    "ExampleBatch",
    "ExampleStream",
    "PrivNetSource",
    "PrivNetTarget",
    "UserStream",
    "adversary_step",
    "attacker_updates",
    "check_interval",
    "eval_inputs",
    "evaluate_privnet",
    "group_transfer",
    "public_users_of",
    "recommender_step_joint",
    "score_candidates",
    "sliding_examples",
    "source_step",
    "source_stream",
    "target_stream",
    "source_transfer",
    "target_step",
    "train_privnet_joint",
    "train_privnet_target_only",
    "transfer_for_step",
    "transferred_representations",
    "user_query",
]
