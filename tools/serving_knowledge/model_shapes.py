"""What a served model needs in GPU memory: its size and the shape of its KV cache.

Deployment preflight asks "does version V fit GPU type G at tensor-parallel size N?"; answering it
needs the model's parameter count and, for decoders, the bytes of KV cache each token holds. These
are the published architecture figures (each model's `config.json`), as typed frozen data beside the
metric catalog so the preflight and a model asking about fit read the same numbers. Pure: no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

GIB = 1024**3


class ModelShape(BaseModel):
    """One model architecture, as its config.json publishes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The served model name, as pods label it (`model`).")
    params_b: float = Field(gt=0, description="Parameters, billions.")
    layers: int = Field(ge=1, description="Transformer layers (num_hidden_layers).")
    kv_heads: int = Field(ge=0, description="Key/value heads (num_key_value_heads); 0 for an encoder: no KV cache.")
    head_dim: int = Field(ge=1, description="Dimension of one attention head.")
    max_context: int = Field(ge=1, description="Longest context the model supports, tokens.")

    def weight_bytes(self, bytes_per_param: float) -> float:
        """Bytes of weights at `bytes_per_param` (2 for BF16/FP16, 1 for FP8/INT8, 0.5 for INT4)."""
        return self.params_b * 1e9 * bytes_per_param

    def kv_bytes_per_token(self, bytes_per_value: float) -> float:
        """KV-cache bytes one token holds across all layers: 2 (K and V) × layers × kv_heads × head_dim × bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value


SHAPES: tuple[ModelShape, ...] = (
    ModelShape(name="llama-3.1-70b-instruct", params_b=70.6, layers=80, kv_heads=8, head_dim=128,
               max_context=131072),
    ModelShape(name="llama-3.1-8b-instruct", params_b=8.03, layers=32, kv_heads=8, head_dim=128,
               max_context=131072),
    ModelShape(name="qwen2.5-coder-32b-instruct", params_b=32.8, layers=64, kv_heads=8, head_dim=128,
               max_context=32768),
    ModelShape(name="mistral-7b-instruct-v0.3", params_b=7.25, layers=32, kv_heads=8, head_dim=128,
               max_context=32768),
    ModelShape(name="bge-large-en-v1.5", params_b=0.335, layers=24, kv_heads=0, head_dim=64, max_context=512),
)

# Weight precisions by the names serving flags use (vLLM `--dtype` / `--quantization`), bytes per parameter.
PRECISION_BYTES: dict[str, float] = {
    "bfloat16": 2, "float16": 2, "auto": 2, "fp8": 1, "int8": 1, "awq": 0.5, "gptq": 0.5, "int4": 0.5,
    "float32": 4,
}


def shape(name: str) -> ModelShape | None:
    """The shape of model `name`, or None when the catalog does not know it."""
    return next((s for s in SHAPES if s.name == name), None)
