"""pvscope: record, replay and query paravirt_ops hook traces."""

__version__ = "0.1.0"
