"""Open connected registry for Azure IoT Edge."""

__version__ = "0.1.0"
