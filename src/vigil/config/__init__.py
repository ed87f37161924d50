"""YAML pipeline specs (pydantic), validated at load; errors name the step, field and value."""

from vigil.config.spec import PipelineSpec, build_pipeline, load_pipeline, load_spec, parse_spec

__all__ = ["PipelineSpec", "build_pipeline", "load_pipeline", "load_spec", "parse_spec"]
