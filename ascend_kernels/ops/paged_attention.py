"""paged_attention: placeholder until its issue lands (being written now)."""


def paged_attention(*args, **kwargs):
    raise NotImplementedError("paged_attention is not implemented yet")
