"""roadnet.model: the RoadNet multi-task model in Keras 3, its losses and training."""
