"""Losses: the retrieval objective's sampled softmax (Eq. 2–4, 12), the RRL paper's auxiliary
losses (§III-D: DAL, MVWDL, orthogonality) and their weighting (Eq. 25), and the related
systems' auxiliary losses (Crocodile's disentanglement, ADI's self-training). One module each."""
