"""OpenTelemetry in: OTLP traces and metrics as columnar records (the ``otlp`` source kind).

The column contract — what a span row and a metric row hold — is :mod:`vigil.io.otlp.columns`.
"""
