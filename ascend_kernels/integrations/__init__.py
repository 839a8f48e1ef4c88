"""Integrations of the public ops with model libraries.

Each integration is its own module and imports its library itself, so importing
`ascend_kernels` (or this package) never imports one:

    from ascend_kernels.integrations import transformers as ak_hf   # needs transformers 5.x
"""
