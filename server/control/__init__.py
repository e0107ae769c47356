"""The operator-only control plane: Control API tokens, signed apps, the SuperLink launcher."""
