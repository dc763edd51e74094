"""gpcis subpackage."""

__all__: list[str] = []
