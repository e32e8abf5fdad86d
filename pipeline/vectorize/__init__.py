"""Vectorize: a result's probabilities into a citywide road layer and a road graph."""
