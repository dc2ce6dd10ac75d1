"""nanochat's optimizer setup (Muon + AdamW) and its LR / momentum schedules.

The Trainer holds exactly one optimizer and one LR scheduler, so the Muon + AdamW pair that nanochat steps side by
side is wrapped in one `torch.optim.Optimizer` (`MuonAdamW`). The AdamW side is torch's `AdamW`; the Muon side is
torch's `Muon` for late-2025 models (nanochat's Muon of that time) and `PolarExpressMuon` for nanochat 2026 models
(whose Muon torch does not have). Schedules are pure functions of the step so that a `LambdaLR` or a callback can use
them and tests can check them against nanochat's reported numbers.
"""

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from akshara_hf.errors import AksharaError
from akshara_hf.training.muon_sharding import (
    assign_owners,
    broadcast_from_owners,
    data_parallel_rank,
    fully_sharded_mesh,
    gather_states,
    gather_to_owners,
    only_owned_gradients,
    scatter_from_owners,
    stand_ins,
)
from akshara_hf.training.polar_muon import PolarExpressMuon

logger = logging.getLogger(__name__)

# nanochat tuned the AdamW LRs at n_embd 768 and scales them by (n_embd / 768) ** -0.5 for other widths.
REFERENCE_WIDTH = 768
GROUP_NAMES = ("muon", "embedding", "unembedding", "other")
MUON_MOMENTUM_START, MUON_MOMENTUM_END = 0.85, 0.95
# Which Muon a model's generation trains with (`AksharaConfig.nanochat_generation`).
MUON_VARIANTS = ("late-2025", "2026")
NANOCHAT_2026_MUON_BETA2 = 0.9

# nanochat 2026's extra AdamW groups: group -> the backbone attributes (our model keeps them inside the backbone,
# `transformer.`, where nanochat has them at the top level: TRL's loss only runs the backbone).
NANOCHAT_2026_GROUPS = {
    "value_embeddings": ("value_embeds",),
    "resid_lambdas": ("resid_lambdas",),
    "x0_lambdas": ("x0_lambdas",),
    "scalars": ("smear_gate", "smear_lambda", "backout_lambda"),
}
# nanochat 2026's `setup_optimizer` AdamW table, per group: (LR as a function of the base LRs and the width scale s,
# betas, weight decay). Its weight decays are fixed per group; its `weight_decay` argument (0 in chat_sft) is Muon's.
NANOCHAT_2026_ADAMW = {
    "unembedding": (lambda lr, s: lr["unembedding_lr"] * s, (0.8, 0.96), 0.01),
    "embedding": (lambda lr, s: lr["embedding_lr"] * s, (0.8, 0.995), 0.001),
    "value_embeddings": (lambda lr, s: lr["embedding_lr"] * s * 0.5, (0.8, 0.995), 0.01),
    "resid_lambdas": (lambda lr, s: lr["scalar_lr"] * 0.01, (0.8, 0.95), 0.05),
    "x0_lambdas": (lambda lr, s: lr["scalar_lr"], (0.96, 0.95), 0.0),
    "scalars": (lambda lr, s: 0.2, (0.8, 0.95), 0.0),
}


def _nanochat_2026_owners(backbone: nn.Module) -> dict[str, set[int]]:
    """ids of the parameters of each 2026 group present in the backbone (all empty for a late-2025 model)."""
    owners = {}
    for group, attributes in NANOCHAT_2026_GROUPS.items():
        ids = set()
        for attribute in attributes:
            owner = getattr(backbone, attribute, None)
            if isinstance(owner, nn.Parameter):
                ids.add(id(owner))
            elif isinstance(owner, nn.Module):
                ids.update(id(p) for p in owner.parameters())
        owners[group] = ids
    return owners


def adapter_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the PEFT adapter weights of `model` (a `PeftModel`, or a model given adapters by transformers'
    `add_adapter`): the parameters of PEFT's tuner layers outside their wrapped base layer (LoRA A/B, DoRA magnitudes,
    IA3 vectors, ...) and of a prompt-learning model's `prompt_encoder`. Empty for a model without adapters."""
    if not getattr(model, "peft_config", None):
        return set()
    from peft.tuners.tuners_utils import BaseTunerLayer  # only reached when PEFT made the model

    ids = set()
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            base = {id(p) for p in module.get_base_layer().parameters()}
            ids.update(id(p) for p in module.parameters() if id(p) not in base)
    prompt_encoder = getattr(model, "prompt_encoder", None)
    if isinstance(prompt_encoder, nn.Module):
        ids.update(id(p) for p in prompt_encoder.parameters())
    return ids


def split_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Sort the trainable parameters the way nanochat's `setup_optimizers` does, by module.

    Returns `{group: [(name, parameter), ...]}` for the groups of `GROUP_NAMES`: "muon" (every 2-D weight inside
    `transformer.h`), "embedding" (`transformer.wte`), "unembedding" (the output head) and "other" (anything else:
    1-D tensors inside the blocks, extra modules; empty for Akshara, whose norms have no weights). Frozen parameters
    are left out. Raises `AksharaError` for a model without nanochat's layout or with a parameter that would land in
    two groups (tied embedding and head).

    A model with PEFT adapters also has "adapter" (`adapter_parameter_ids`; AdamW, see `MuonAdamW`), and may then
    have no Muon matrices at all (LoRA freezes every base weight).

    A nanochat 2026 model (value embeddings, lambdas, smear/backout in the backbone) also gets nanochat 2026's groups
    "value_embeddings", "resid_lambdas", "x0_lambdas" and "scalars" (smear gate, smear and backout lambdas), and
    Muon takes every parameter under `transformer.h` (the 2-D ones: ve_gate included). nanochat 2026 places every
    tensor, so here a parameter outside its groups is an error rather than an "other".
    """
    backbone = getattr(model, "transformer", None)
    blocks = getattr(backbone, "h", None)
    wte = getattr(backbone, "wte", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(blocks, nn.ModuleList) or not isinstance(wte, nn.Embedding) or head is None:
        raise AksharaError(
            f"{type(model).__name__} does not have nanochat's module layout (transformer.h blocks, transformer.wte "
            "embedding and an output head), so its parameters cannot be split between Muon and AdamW"
        )

    owners = {
        "embedding": {id(p) for p in wte.parameters()},
        "unembedding": {id(p) for p in head.parameters()},
        "blocks": {id(p) for p in blocks.parameters()},
    }
    owners_2026 = _nanochat_2026_owners(backbone)
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    for first, second in (("embedding", "unembedding"), ("embedding", "blocks"), ("unembedding", "blocks")):
        shared = owners[first] & owners[second]
        if shared:
            raise AksharaError(
                f"{' and '.join(names[next(iter(shared))])} are one tensor shared by the {first} and the {second}: "
                "tied weights would be optimised twice (nanochat's embedding and head are separate matrices)"
            )

    is_2026 = any(owners_2026.values())
    group_names = (*GROUP_NAMES, *NANOCHAT_2026_GROUPS) if is_2026 else GROUP_NAMES
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {name: [] for name in group_names}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        new_group = next((group for group, ids in owners_2026.items() if id(param) in ids), None)
        if new_group is not None:
            group = new_group
        elif id(param) in owners["embedding"]:
            group = "embedding"
        elif id(param) in owners["unembedding"]:
            group = "unembedding"
        elif id(param) in owners["blocks"] and param.ndim == 2:
            group = "muon"
        else:
            group = "other"
        groups[group].append((name, param))
    adapters = adapter_parameter_ids(model)
    if adapters:  # PEFT adapter weights leave nanochat's groups, whatever their place or shape
        groups = {key: [(n, p) for n, p in members if id(p) not in adapters] for key, members in groups.items()}
        groups["adapter"] = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) in adapters]

    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assigned = [id(p) for members in groups.values() for _, p in members]
    if len(assigned) != len(set(assigned)) or set(assigned) != trainable:
        raise AksharaError(f"the optimizer split of {type(model).__name__} loses or repeats parameters")
    if not groups["muon"] and not groups.get("adapter"):
        raise AksharaError(f"{type(model).__name__} has no trainable 2-D weights in transformer.h for Muon")
    if is_2026 and groups["other"]:
        raise AksharaError(
            f"nanochat 2026's optimizer groups have no place for {[n for n, _ in groups['other']]} "
            "(every 2026 tensor is wte, lm_head, a value embedding, a lambda, smear/backout or a 2-D block weight)"
        )
    if groups["other"]:
        logger.warning("parameters outside nanochat's three groups go to AdamW: %s", [n for n, _ in groups["other"]])
    return groups


@dataclass
class _Sharding:
    """How the Muon work is split: this rank's index among `world`, each matrix's owner, and FSDP2's mesh (None under
    DDP, where every rank holds whole matrices)."""

    rank: int
    world: int
    owners: list[int]
    mesh: object = None

    @property
    def group(self):
        return None if self.mesh is None else self.mesh.get_group()


class MuonAdamW(torch.optim.Optimizer):
    """Muon (block matrices) and torch's `AdamW` (everything else) stepped together as one optimizer.

    The Muon side follows the model's nanochat generation (`muon`): "late-2025" is torch's `Muon` (Nesterov, 5 bf16
    Newton-Schulz steps, nanochat's Muon of that time); "2026" is `PolarExpressMuon` (nanochat 2026's: Polar Express,
    row equilibration, Frobenius rescale, NorMuon second moment with `beta2` 0.9, cautious weight decay). The AdamW
    side is torch's `AdamW` in both: its step equals nanochat's fused AdamW to float rounding (measured: 3e-7 of the
    update in fp32, `tests/test_polar_muon.py`).

    `param_groups` is the list of both optimizers' group dicts (the same objects, so a `LambdaLR` that rescales
    every group's `initial_lr` drives both, and the Trainer's logged LR is group 0, Muon's). `state_dict` nests both
    state dicts (tensors and primitives only, loadable with `torch.load(weights_only=True)`), so resuming from a
    Trainer checkpoint restores the Muon momentum buffers. Each group has a `name` ("muon", "embedding", ...) and
    torch's `param_names` (the model's parameter names). Either side may be empty (LoRA trains no Muon matrix): it is
    then left out, and its state is `None`.

    State layout (what a warm start from a nanochat checkpoint's `optim_*_rank*.pt` fills):
      - `state_dict()["muon"]`: torch's optimizer format, one group "muon" (every Muon matrix, in
        `model.named_parameters()` order, names in `param_groups[0]["param_names"]`). 2026: per matrix index i,
        `state[i] = {"momentum_buffer": (m, n), "second_momentum_buffer": (m, 1), or (1, n) when m < n}`; late 2025:
        `{"momentum_buffer": (m, n)}`. Group keys: lr, momentum, weight_decay, beta2, ns_steps, orthogonalize_dtype.
      - `state_dict()["adamw"]`: torch's AdamW format, groups in nanochat 2026's order "unembedding", "embedding",
        "value_embeddings", "resid_lambdas", "x0_lambdas", "scalars" (late 2025: "embedding", "unembedding");
        per tensor `{"step": 0-D float tensor, "exp_avg", "exp_avg_sq"}` of the parameter's shape.
      - nanochat 2026's own `MuonAdamW.state_dict()` numbers its tensors lm_head, wte, value_embeds.{i} (i rising),
        resid_lambdas, x0_lambdas, smear_gate.weight, smear_lambda, backout_lambda, then one Muon group per distinct
        matrix shape (shapes sorted, each group's matrices in `transformer.h` order). Its AdamW state is ours with an
        int `step`; on W ranks each rank holds rows [r R/W, (r+1) R/W) of `exp_avg`/`exp_avg_sq` for tensors of
        1,024 elements or more (R = rows; concatenate the ranks), whole copies of smaller ones. Its Muon state sits on
        each shape group's first tensor only, stacked: `momentum_buffer` (c, m, n) and `second_momentum_buffer`
        (c, m, 1) or (c, 1, n), where rank r holds the group's matrices r c ... r c + c - 1 (c = ceil(K / W) for K
        matrices; rows past K are padding). Its vocabulary tables have `ceil(vocab / 64) * 64` rows (ours: vocab),
        and its top-level 2026 tensors are ours under `transformer.` (e.g. `value_embeds.1.weight` ->
        `transformer.value_embeds.1.weight`). nanochat's LRs in such a file are those of the end of its run: keep ours.

    Several processes (DDP; `shard`, default on): each Muon matrix has one owner rank (`muon_sharding`), which alone
    orthogonalises it and keeps its state; the updated matrices are then broadcast from their owners. Each rank's
    `state` holds only its own matrices' Muon state, so `state_dict()` needs the collective `consolidate_state_dict()`
    on every rank first (it raises otherwise; `MuonSFTTrainer` does this when it saves) and then returns every
    matrix's state, as one process would hold it. `load_state_dict` takes such a full state (from any number of
    processes) and keeps the matrices this rank owns.

    FSDP2 (`fully_shard`: every weight a `Shard(0)` DTensor, each rank a block of its rows; the parameters may become
    DTensors after this optimizer is made, as Accelerate swaps them in): Muon must see whole matrices, so each matrix's
    owner gathers its gradient and weight from every rank, steps them with the same Muon as one process, keeps the
    whole matrix's Muon state, and sends each rank its rows of the result (`muon_sharding.gather_to_owners` /
    `scatter_from_owners`); the step equals one process's. AdamW steps each rank's shard (elementwise, so exact), its
    state sharded like the parameters. `consolidate_state_dict` also gathers the AdamW state whole, so `state_dict()`
    is the one-process state on every layout and `load_state_dict` shards it again: the same state loads on one
    process, under DDP or under FSDP2, on any number of processes. Other placements (tensor parallelism, a 2-D mesh)
    are refused.

    PEFT adapters (group "adapter", LoRA's A and B included) go to AdamW, at `adapter_lr`. torch's Muon would
    orthogonalize each factor's update on its own, which is not Muon's steepest descent on the adapted weight
    W + B @ A: the step then depends on the arbitrary scale split between A and B (LoRA-Muon, Cesista et al., 2026,
    arXiv:2606.12921, derives the factor-aware update that torch's Muon does not implement), and the zero-initialised B
    gets a full-norm orthogonal step at once whatever its gradient's size. LoRA's own conventions (alpha / r scaling,
    LRs around 1e-4 - 2e-4) were tuned with AdamW, which is what PEFT and TRL document.
    """

    def __init__(
        self,
        muon_groups: Sequence[dict],
        adamw_groups: Sequence[dict],
        *,
        momentum: float = MUON_MOMENTUM_END,
        betas: tuple[float, float] = (0.8, 0.95),
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        muon_weight_decay: float = 0.0,
        muon: str = "late-2025",
        shard: bool = True,
    ):
        if muon not in MUON_VARIANTS:
            raise AksharaError(f"muon must be one of {list(MUON_VARIANTS)}, got {muon!r}")
        fully_sharded_mesh([param[1] if isinstance(param, tuple) else param
                            for group in muon_groups for param in group["params"]])  # refuses TP / 2-D meshes
        self.muon_variant, self.shard_muon = muon, shard
        self._owners: tuple[int, list[int]] | None = None  # (world size, owner rank of each Muon matrix)
        # Version of the state (a step or a loaded state changes it), and the consolidated copy of that version:
        # (version, Muon state, AdamW state gathered whole under FSDP2 or None).
        self._state_version, self._consolidated = 0, None
        if not muon_groups:
            self.muon = None
        elif muon == "2026":
            # nanochat 2026: momentum 0.95 (the schedule's warm-up sets it per step), beta2 0.9, 5 Polar Express
            # iterations; its `weight_decay` argument (0 in its chat_sft) is Muon's cautious decay.
            self.muon = PolarExpressMuon(
                muon_groups, momentum=momentum, beta2=NANOCHAT_2026_MUON_BETA2, weight_decay=muon_weight_decay
            )
        else:
            # nanochat's late-2025 Muon: Nesterov, lerp momentum, 5 bf16 Newton-Schulz steps with (3.4445, -4.7750,
            # 2.0315) (torch's defaults), update scaled by sqrt(max(1, rows/cols)) ("original"), and no weight decay
            # (torch's default: 0.1).
            self.muon = torch.optim.Muon(
                muon_groups, momentum=momentum, nesterov=True, weight_decay=muon_weight_decay, adjust_lr_fn="original"
            )
        # nanochat passes its `weight_decay` (0 in every Akshara run) to AdamW only (late 2025); 2026 groups carry
        # their own.
        self.adamw = torch.optim.AdamW(
            adamw_groups, betas=betas, eps=eps, weight_decay=weight_decay
        ) if adamw_groups else None
        if self.muon is None and self.adamw is None:
            raise AksharaError("MuonAdamW got no parameter groups: nothing is trainable")
        super().__init__(self._shared_groups(), defaults={})

    def _parts(self) -> dict[str, torch.optim.Optimizer | None]:
        return {"muon": self.muon, "adamw": self.adamw}

    def _shared_groups(self) -> list[dict]:
        return [group for part in self._parts().values() if part is not None for group in part.param_groups]

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        matrix_lr: float = 0.02,
        embedding_lr: float = 0.2,
        unembedding_lr: float = 0.004,
        init_lr_frac: float = 1.0,
        weight_decay: float = 0.0,
        scalar_lr: float = 0.5,
        adapter_lr: float = 2e-4,
        muon: str | None = None,
        shard: bool = True,
    ) -> "MuonAdamW":
        """nanochat's `setup_optimizers` followed by its `lr *= init_lr_frac`.

        Muon runs at `matrix_lr`; AdamW at `embedding_lr` / `unembedding_lr` times `(n_embd / 768) ** -0.5`. Parameters
        outside the three nanochat groups (none in Akshara) get the unembedding LR: the smallest AdamW LR is the safe
        choice for tensors nanochat never trained. PEFT adapter weights get AdamW at `adapter_lr` as given (not scaled
        by `init_lr_frac`, which is nanochat's fraction for full fine-tuning).

        A nanochat 2026 model gets nanochat 2026's `setup_optimizer` table instead: per-group LRs (`scalar_lr` for the
        lambdas), betas and weight decays (`NANOCHAT_2026_ADAMW`); `weight_decay` is then Muon's, as there.

        `muon`: None = the model's generation (`config.nanochat_generation`: "2026" -> `PolarExpressMuon`, otherwise
        torch's Muon); "late-2025" or "2026" to choose. `shard`: split Muon by matrix across processes (see the class).
        """
        for key, value in (("matrix_lr", matrix_lr), ("embedding_lr", embedding_lr),
                           ("unembedding_lr", unembedding_lr), ("init_lr_frac", init_lr_frac),
                           ("scalar_lr", scalar_lr), ("adapter_lr", adapter_lr)):
            if not value > 0:
                raise AksharaError(f"{key} must be > 0, got {value}")
        groups = split_parameters(model)
        if muon is None:
            generation = getattr(getattr(model, "config", None), "nanochat_generation", None)
            muon = "2026" if generation == "2026" or "scalars" in groups else "late-2025"
        width = model.get_input_embeddings().embedding_dim
        scale = (width / REFERENCE_WIDTH) ** -0.5
        if "scalars" in groups:  # nanochat 2026
            base = {"embedding_lr": embedding_lr, "unembedding_lr": unembedding_lr, "scalar_lr": scalar_lr}
            param_groups = {"muon": {"params": groups["muon"], "lr": matrix_lr * init_lr_frac, "name": "muon"}}
            for name, (lr, betas, decay) in NANOCHAT_2026_ADAMW.items():
                if groups[name]:
                    param_groups[name] = {
                        "params": groups[name], "lr": lr(base, scale) * init_lr_frac, "betas": betas,
                        "weight_decay": decay, "name": name,
                    }
            if groups.get("adapter"):
                param_groups["adapter"] = {"params": groups["adapter"], "lr": adapter_lr, "name": "adapter"}
            matrices = param_groups.pop("muon")
            return cls([matrices] if matrices["params"] else [], list(param_groups.values()),
                       muon_weight_decay=weight_decay, muon=muon, shard=shard)
        lrs = {
            "muon": matrix_lr,
            "embedding": embedding_lr * scale,
            "unembedding": unembedding_lr * scale,
            "other": unembedding_lr * scale,
            "adapter": adapter_lr,
        }
        param_groups = {
            name: {"params": members, "lr": lrs[name] * (1.0 if name == "adapter" else init_lr_frac), "name": name}
            for name, members in groups.items()
            if members
        }
        return cls(
            [param_groups["muon"]] if "muon" in param_groups else [],
            [group for name, group in param_groups.items() if name != "muon"],
            weight_decay=weight_decay,
            muon=muon,
            shard=shard,
        )

    def _muon_params(self) -> list[torch.Tensor]:
        return [param for group in self.muon.param_groups for param in group["params"]]

    def _sharding(self) -> _Sharding | None:
        """How the Muon work is split across processes (FSDP2's mesh when the matrices are sharded, else the DDP
        processes when `shard`), or None on one process."""
        if self.muon is None:
            return None
        params = self._muon_params()
        mesh = fully_sharded_mesh(params)
        if mesh is not None:
            rank, world = mesh.get_local_rank(), mesh.size()
        else:
            where = data_parallel_rank() if self.shard_muon else None
            if where is None:
                return None
            rank, world = where
        if self._owners is None or self._owners[0] != world:
            self._owners = (world, assign_owners([param.shape for param in params], world))
        return _Sharding(rank, world, self._owners[1], mesh)

    def _adamw_params(self) -> list[torch.Tensor]:
        return [] if self.adamw is None else [p for group in self.adamw.param_groups for p in group["params"]]

    def _adamw_sharded(self) -> bool:
        """Whether the AdamW tensors are FSDP2's DTensors (then so is their state)."""
        return any(isinstance(param, DTensor) for param in self._adamw_params())

    def _state_shapes(self, param: torch.Tensor) -> dict:
        if isinstance(self.muon, PolarExpressMuon):
            return self.muon.state_shapes(param)
        return {"momentum_buffer": tuple(param.shape)}  # torch's Muon

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._state_version += 1
        sharding = self._sharding()
        handles = []
        if sharding is None:
            if self.muon is not None:
                self.muon.step()
        elif sharding.mesh is not None:
            self._fully_sharded_muon_step(sharding)
        else:
            params = self._muon_params()
            with only_owned_gradients(params, sharding.owners, sharding.rank):
                self.muon.step()
            handles = broadcast_from_owners(params, sharding.owners)
        if self.adamw is not None:
            self.adamw.step()  # while the matrices travel
        for handle in handles:
            handle.wait()
        return loss

    def _fully_sharded_muon_step(self, sharding: _Sharding) -> None:
        """FSDP2: each owner steps its whole matrices (gradient and weight gathered from every rank's rows) with the
        Muon of one process, then every rank takes its rows of the results."""
        params = self._muon_params()
        shapes = [param.shape for param in params]
        where = (sharding.owners, sharding.rank, sharding.world, sharding.group)
        grads = gather_to_owners([None if p.grad is None else p.grad.to_local() for p in params], shapes, *where)
        locals_ = [None if p.grad is None else p.to_local() for p in params]
        weights = gather_to_owners(locals_, shapes, *where)
        for index, weight in weights.items():
            weight.grad = grads[index]
        with stand_ins(self.muon, {params[index]: weight for index, weight in weights.items()}):
            self.muon.step()
        scatter_from_owners(weights, locals_, shapes, *where)

    def consolidate_state_dict(self) -> None:
        """Collect every Muon matrix's state from its owner, and under FSDP2 every AdamW tensor's state whole (a
        collective: call it on every rank), for the next `state_dict()`. Nothing to do on one process."""
        sharding = self._sharding()
        muon = adamw = None
        if sharding is not None:
            muon = gather_states(self.muon.state, self._muon_params(), sharding.owners, sharding.rank,
                                 self._state_shapes, group=sharding.group)  # fmt: skip
        if self._adamw_sharded():  # every rank has the same AdamW keys: the gathers pair up
            adamw = {param: {key: value.full_tensor() if isinstance(value, DTensor) else value
                             for key, value in sorted(self.adamw.state[param].items())}
                     for param in self._adamw_params() if param in self.adamw.state}  # fmt: skip
        if sharding is not None or adamw is not None:
            self._consolidated = (self._state_version, muon, adamw)

    def release_consolidated_state(self) -> None:
        """Drop the copy `consolidate_state_dict` made (it holds every matrix's state on every rank)."""
        self._consolidated = None

    def state_dict(self) -> dict:
        parts = self._parts()
        split = self._sharding() is not None or self._adamw_sharded()
        if split and self._state_version:  # version 0: no state on any rank yet
            if self._consolidated is None or self._consolidated[0] != self._state_version:
                raise AksharaError(
                    "MuonAdamW splits its state across processes: call consolidate_state_dict() on every "
                    "process first (MuonSFTTrainer does when it saves a checkpoint)"
                )
            whole = dict(zip(("muon", "adamw"), self._consolidated[1:]))
            own = {key: part.state for key, part in parts.items() if part is not None and whole[key] is not None}
            for key in own:
                parts[key].state = defaultdict(dict, whole[key])
            try:
                state = {key: None if part is None else part.state_dict() for key, part in parts.items()}
            finally:
                for key, value in own.items():
                    parts[key].state = value
        else:
            state = {key: None if part is None else part.state_dict() for key, part in parts.items()}
        state["muon_variant"] = self.muon_variant
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if not isinstance(state_dict, dict) or not {"muon", "adamw"} <= set(state_dict) <= {"muon", "adamw", "muon_variant"}:
            found = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise AksharaError(f"not a MuonAdamW optimizer state (expected keys 'muon' and 'adamw', got {found})")
        # States saved before the 2026 Muon existed carry no variant: they are torch's Muon's.
        variant = state_dict.get("muon_variant", "late-2025")
        if self.muon is not None and state_dict["muon"] is not None and variant != self.muon_variant:
            raise AksharaError(
                f"MuonAdamW state: saved by the {variant} Muon, but this optimizer runs the {self.muon_variant} Muon "
                "(their momentum states differ); start the optimizer afresh or resume with the optimizer that saved it"
            )
        for key, part in self._parts().items():
            if (part is None) != (state_dict[key] is None):
                raise AksharaError(
                    f"MuonAdamW state: its {key!r} part is {'missing' if part is not None else 'present'}, but this "
                    f"optimizer has {'some' if part is not None else 'no'} {key} parameters (saved from a model with "
                    "other trainable weights?)"
                )
        for key, part in self._parts().items():
            if part is not None:
                try:
                    part.load_state_dict(state_dict[key])
                except (ValueError, KeyError, TypeError) as error:  # torch's check of group sizes, or a foreign dict
                    raise AksharaError(
                        f"MuonAdamW state: its {key!r} part does not fit this optimizer's parameters ({error}); saved "
                        "from a model with other trainable weights?"
                    ) from None
        # torch's load_state_dict replaces the inner group dicts: share the new ones again.
        self.param_groups = self._shared_groups()
        if any(state_dict[key] is not None and state_dict[key]["state"] for key in ("muon", "adamw")):
            self._state_version += 1
        sharding = self._sharding()
        if sharding is not None:  # keep only the matrices this rank owns
            for param, owner in zip(self._muon_params(), sharding.owners):
                if owner != sharding.rank:
                    self.muon.state.pop(param, None)
        for param in self._adamw_params():  # FSDP2: this rank's rows of the whole AdamW state (no communication)
            if isinstance(param, DTensor) and param in self.adamw.state:
                self.adamw.state[param] = {
                    key: distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
                    if isinstance(value, torch.Tensor) and not isinstance(value, DTensor) and value.shape == param.shape
                    else value
                    for key, value in self.adamw.state[param].items()
                }


def sft_lr_multiplier(step: float, num_steps: float) -> float:
    """nanochat's `chat_sft` schedule, `1 - step / num_steps` (no warmup, linear to 0)."""
    return 1.0 - step / num_steps


def mid_lr_multiplier(step: float, num_steps: float, warmdown_ratio: float = 0.2) -> float:
    """nanochat's `mid_train` schedule: 1 until progress `1 - warmdown_ratio`, then linear to 0.

    Progress is `step / num_steps`. (nanochat measures it as the fraction of the dataset consumed, which the Trainer,
    knowing its step count in advance, replaces by the fraction of steps.)
    """
    progress = step / num_steps
    start = 1.0 - warmdown_ratio
    return 1.0 if progress < start else 1.0 - (progress - start) / warmdown_ratio


def warmdown_lr_multiplier(step: float, num_steps: float, warmdown_ratio: float = 0.5, final_lr_frac: float = 0.0) -> float:
    """nanochat 2026's `chat_sft` (and base) schedule: 1 until progress `1 - warmdown_ratio`, then linear to
    `final_lr_frac` (0 in chat_sft), by progress `step / num_steps`."""
    progress = step / num_steps
    start = 1.0 - warmdown_ratio
    if progress <= start:
        return 1.0
    decay = (progress - start) / warmdown_ratio
    return (1 - decay) + decay * final_lr_frac


def muon_momentum(step: int, warmup_steps: int = 300) -> float:
    """nanochat's mid-training Muon momentum: 0.85 -> 0.95 linearly over `warmup_steps` steps (0: always 0.95)."""
    frac = min(step / warmup_steps, 1.0) if warmup_steps > 0 else 1.0
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM_END


__all__ = [
    "split_parameters", "adapter_parameter_ids", "MuonAdamW", "sft_lr_multiplier", "mid_lr_multiplier",
    "warmdown_lr_multiplier", "muon_momentum",
]
