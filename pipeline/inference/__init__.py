"""Inference: a scene through RoadNet on a Dask cluster into a seamless Zarr result."""
