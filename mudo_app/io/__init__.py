"""Reading, writing and checking PET/CT volumes, and the datastore layout."""

from mudo_app.io.volume import Volume, load_volume, resample_to_grid, same_grid, save_volume

__all__ = ["Volume", "load_volume", "save_volume", "same_grid", "resample_to_grid"]
