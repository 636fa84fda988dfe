"""Serving: from a typed request to the answer. Resolve the model, submit the job, wait or stream, finish the files."""
