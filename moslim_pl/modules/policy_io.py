"""How the RL stages persist: checkpoints without the frozen models that construction rebuilds (with the KL
controller's ``beta`` and the accumulation position), and the export of the trained policy.

A mixin of :class:`moslim_pl.modules.policy.PolicyModule`, which provides ``policy``, ``tokenizer``, ``rm``,
``kl_controller`` and the accumulation state of ``moslim_pl.modules.optim.ManualOptimization``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

from moslim_pl.models.backbone import TINY_BACKBONES
from moslim_pl.models.card import CARD_FILE, policy_card, training_summary
from moslim_pl.models.io import save_pretrained_atomic
from moslim_pl.models.lora import is_lora, merged_copy
from moslim_pl.models.sharding import is_sharded

log = logging.getLogger(__name__)

ADAPTER_FOLDER = "adapter"  # a LoRA policy's PEFT adapter, inside its export


class PolicyIO:
    """Checkpoint hooks and :meth:`export` of the RL stages."""

    def _frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes left out of checkpoints: the frozen models that construction rebuilds.

        The RM always comes back from its export; the reference (the initial policy) only when the policy
        loads pretrained weights: a ``moslim/tiny-*`` policy starts from random ones, so its reference is
        kept; FSDP2's sharded checkpoints keep everything. For SmolLM2 with a MiniLM RM that is
        about 2.2 -> 1.6 GB (the policy and its AdamW state remain; estimated from the tensor sizes).
        """
        if isinstance(getattr(self._trainer, "strategy", None), ModelParallelStrategy):
            return ()  # sharded (distributed) checkpoints load into the module's full key set
        return ("rm.",) if self.hparams.policy in TINY_BACKBONES else ("reference.", "rm.")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            for key in [k for k in state if k.startswith(self._frozen_prefixes())]:
                del state[key]
        if self.kl_controller is not None:
            checkpoint["kl_controller"] = self.kl_controller.state_dict()
        if self._accumulate != 1:
            checkpoint["moslim_micro_batches"] = self._micro_batches

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):
            # the frozen models as this module just rebuilt them, so that strict loading still checks
            # every trained parameter (older checkpoints that hold them load as they are)
            for key, value in self.state_dict().items():
                if key.startswith(self._frozen_prefixes()):
                    state.setdefault(key, value)
        if self.kl_controller is not None and "kl_controller" in checkpoint:
            self.kl_controller.load_state_dict(checkpoint["kl_controller"])
        self._micro_batches = int(checkpoint.get("moslim_micro_batches", 0))

    def export(self, folder: str | Path) -> Path:
        """Write the policy (LoRA adapters merged), its tokenizer and a ``README.md`` model card as a Hugging
        Face folder, atomically. ``load_causal_lm(folder)`` and ``AutoModelForCausalLM.from_pretrained(folder)``
        reload it.

        With ``lora``, ``<folder>/adapter`` also holds the adapters alone in PEFT's layout
        (``adapter_config.json``, ``adapter_model.safetensors``, tokenizer, card): ``PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(policy), "<folder>/adapter")`` gives the merged model's
        log-probs (``docs/user_guide.md``, "Exports"). Not under FSDP2 sharding (the merged model only).
        """
        lora = is_lora(self.policy)
        policy = merged_copy(self.policy) if lora else self.policy
        training = training_summary(self)
        dimensions = self.rm.dimensions
        base = str(self.hparams.policy)
        write_adapter = lora and not is_sharded(self.policy)
        if lora and not write_adapter:
            log.warning(
                "the policy is sharded: its export holds the merged model only, no PEFT adapter folder"
            )

        def extra(staging: Path) -> None:
            (staging / CARD_FILE).write_text(policy_card(base, dimensions, training))
            if write_adapter:
                adapter = staging / ADAPTER_FOLDER
                self.policy.save_pretrained(adapter)
                self.tokenizer.save_pretrained(adapter)
                (adapter / CARD_FILE).write_text(policy_card(base, dimensions, training, adapter=True))

        save_pretrained_atomic(folder, policy, self.tokenizer, extra=extra)
        log.info("exported the policy to %s", folder)
        return Path(folder)
