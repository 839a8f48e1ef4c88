"""One module per op: validate, dispatch, launch."""
