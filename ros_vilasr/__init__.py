"""ros_vilasr: drawing to reason in space, for robots."""

import logging

# With torchao installed (the quantization option), transformers imports it on every run, and
# torchao logs a warning for each of its optional CUDA kernels a CPU machine cannot load, torch
# one for each of its enums: noise, not news. Real torchao errors still show.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
