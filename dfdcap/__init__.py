"""dfdcap: record real-world depth-from-focus data with a phone and an RGB-D sensor."""

__version__ = "0.1.0"
