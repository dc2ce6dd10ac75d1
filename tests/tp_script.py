"""Tensor-parallel forward for test_modeling.py: run as `torchrun --nproc_per_node 2 tests/tp_script.py FOLDER OUT`
(gloo on CPU). Every rank loads FOLDER with transformers' automatic TP plan; rank 0 saves the logits and the local
shard shapes to OUT."""

import os
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, DistributedConfig

from akshara_hf import AksharaForCausalLM  # noqa: F401  (importing the model registers the Auto classes)

folder, out = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(folder, distributed_config=DistributedConfig(tp_plan="auto"))
idx = torch.randint(0, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    logits = model(idx).logits
block = model.transformer.h[0]
shards = {name: tuple(getattr(module.weight, "to_local", lambda: module.weight)().shape)
          for name, module in (("c_q", block.attn.c_q), ("c_proj", block.attn.c_proj), ("c_fc", block.mlp.c_fc),
                               ("wte", model.transformer.wte))}
if dist.get_rank() == 0:
    torch.save({"logits": logits, "shards": shards, "world_size": dist.get_world_size()}, out)
sys.stdout.flush()
os._exit(0)  # skip gloo's teardown, which can abort at exit (see dist_train_script.py)
