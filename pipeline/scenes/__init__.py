"""Scene making: OpenStreetMap roads to labels and orthophoto-like training scenes."""
