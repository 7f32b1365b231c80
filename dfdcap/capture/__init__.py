"""Devices and recording: sensors, the phone, the recorder and the session folder."""
