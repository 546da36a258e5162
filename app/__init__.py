"""The instrument window (PySide6 + pyqtgraph); talks to `engine` through its public API."""
