"""topk_topp_sampling: placeholder until its issue lands (being written now)."""


def topk_topp_sampling(*args, **kwargs):
    raise NotImplementedError("topk_topp_sampling is not implemented yet")
