"""The price catalog: node-hour prices per instance type and what each GPU product offers.

A YAML file users edit (`rightsize.price_catalog` in settings; the default, `DEFAULT_CATALOG`, ships
beside this module so the container image carries it). Per-GPU prices follow from the node price
divided by its GPUs, which is how allocation-based cost models (OpenCost) split a node.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

HOURS_PER_MONTH = 730.0  # 365 × 24 / 12, the convention cloud price pages use
DEFAULT_CATALOG = Path(__file__).resolve().with_name("price-catalog.yaml")  # list prices; the sandbox uses it too


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InstanceType(_Strict):
    gpu_product: str | None
    gpus: int = Field(ge=0)
    gpu_memory_gib: int = Field(ge=0)
    cpu: int = Field(gt=0)
    memory_gib: int = Field(gt=0)
    price_per_hour: float = Field(ge=0, description="USD per node-hour.")

    @property
    def price_per_gpu_hour(self) -> float:
        return self.price_per_hour / self.gpus if self.gpus else 0.0

    @property
    def price_per_cpu_hour(self) -> float:
        return self.price_per_hour / self.cpu


class MigProfile(_Strict):
    slices: int = Field(ge=1, le=7, description="Compute sevenths of the GPU.")
    memory_gib: float = Field(gt=0)


class GpuProduct(_Strict):
    relative_throughput: float = Field(default=1.0, gt=0,
                                       description="Throughput relative to an H100 for the same model and shape.")
    mig_profiles: dict[str, MigProfile] = Field(default_factory=dict)


class PriceCatalog(_Strict):
    currency: str = "USD"
    instance_types: dict[str, InstanceType]
    gpu_products: dict[str, GpuProduct] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> PriceCatalog:
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ValueError(f"cannot read the price catalog {path}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ValueError(f"the price catalog {path} is not valid YAML: {e}") from e
        try:
            return cls.model_validate(data)
        except ValueError as e:
            raise ValueError(f"the price catalog {path} is invalid: {e}") from e

    def instance(self, name: str) -> InstanceType:
        try:
            return self.instance_types[name]
        except KeyError:
            raise KeyError(f"instance type {name!r} is not in the price catalog "
                           f"(have: {', '.join(sorted(self.instance_types))})") from None

    def gpu_price(self, product: str) -> float | None:
        """The cheapest per-GPU-hour price of `product` across instance types, or None if it has none."""
        prices = [it.price_per_gpu_hour for it in self.instance_types.values() if it.gpu_product == product and it.gpus]
        return min(prices) if prices else None

    def instance_for_product(self, product: str) -> tuple[str, InstanceType] | None:
        """The instance type with the cheapest GPU-hour of `product`."""
        best = [(it.price_per_gpu_hour, name, it) for name, it in self.instance_types.items()
                if it.gpu_product == product and it.gpus]
        if not best:
            return None
        _, name, it = min(best)
        return name, it

    def product(self, product: str) -> GpuProduct:
        return self.gpu_products.get(product, GpuProduct())
