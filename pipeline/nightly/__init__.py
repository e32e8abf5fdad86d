"""``roadnet nightly``: process new scenes of an inbox, keep a catalog and a city layer.

In data-flow order: :mod:`.discover` (scenes in a folder, bucket or STAC listing, once
stable), :mod:`.catalog` (the GeoParquet record of every scene), :mod:`.merge` (the citywide
road layer across scenes), :mod:`.report` (the Markdown run report) and :mod:`.run` (the
night: leases, retries, one Dask client).
"""
