"""The centralized and baseline models every federated figure is shown beside,
and the presets they start from."""
