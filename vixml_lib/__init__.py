"""ViXML workbench: data, images, models, training, retrieval, metrics and analysis for
ViXML-style extreme multi-label classification (Ortego et al., AAAI 2026)."""

__version__ = "0.1.0"
