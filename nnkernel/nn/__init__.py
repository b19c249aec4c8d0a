"""The network: activations, initialisers, layers and the Sequential model that chains them."""
