"""Layer 4, execution enforcement: supervisor, containment, termination."""

__all__: list[str] = []
