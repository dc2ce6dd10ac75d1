"""Akshara-HF: nanochat-family chat models on the Hugging Face stack."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_akshara import AksharaConfig
from .modeling_akshara import AksharaForCausalLM, AksharaModel, AksharaPreTrainedModel

AutoConfig.register(AksharaConfig.model_type, AksharaConfig, exist_ok=True)
AutoModel.register(AksharaConfig, AksharaModel, exist_ok=True)
AutoModelForCausalLM.register(AksharaConfig, AksharaForCausalLM, exist_ok=True)
# save_pretrained then copies configuration_akshara.py/modeling_akshara.py and writes `auto_map`,
# so saved folders load with trust_remote_code=True where this package is not installed.
AksharaConfig.register_for_auto_class()
AksharaModel.register_for_auto_class("AutoModel")
AksharaForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__version__ = "0.1.0"
__all__ = ["AksharaConfig", "AksharaModel", "AksharaForCausalLM", "AksharaPreTrainedModel"]
