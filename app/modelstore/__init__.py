"""Building, exporting and locating the models ovchat serves."""
