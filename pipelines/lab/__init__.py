"""The embedded model's lab: the scene world easel-mini is trained on, its training, scoring and evaluation.

Nothing here is imported by the server or the backends (a test enforces it):
the server loads what the lab *saved*, in the same diffusers layout as any
other Kandinsky 2.2 model.
"""
