"""The topology YAML: models and a loader that reports file:line errors."""

from processor.spec.loader import LoadedSpec, format_path, load_spec, load_spec_text
from processor.spec.models import TopologySpec

__all__ = ["LoadedSpec", "TopologySpec", "format_path", "load_spec", "load_spec_text"]
