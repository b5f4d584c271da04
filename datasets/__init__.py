"""Dataset plugins, data cards, gene panels and the shipped gene-description table."""
