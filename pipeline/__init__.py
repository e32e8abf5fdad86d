"""roadnet.pipeline: open scenes, infer on Dask, write Zarr, vectorize, evaluate, CLI."""
