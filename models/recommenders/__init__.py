"""The recommenders of the membership scenario (paper 004): Item-CF, LFM and NCF, each trained
on a service's members and able to fold in a user it was not trained on, and the service that
serves top-k lists to members and, by a non-member policy, to everyone else."""

from .base import Recommender, hits, most_popular, popularity, randomized_popular, top_k
from .itemcf import ItemCF
from .lfm import LFM
from .ncf import NCF
from .service import ALGORITHMS, POLICIES, ListService, make_recommender

__all__ = [
    "ALGORITHMS",
    "LFM",
    "NCF",
    "POLICIES",
    "ItemCF",
    "ListService",
    "Recommender",
    "hits",
    "make_recommender",
    "most_popular",
    "popularity",
    "randomized_popular",
    "top_k",
]
