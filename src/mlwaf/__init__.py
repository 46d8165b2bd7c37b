"""mlwaf: the machine-learning analyzer of the mlwaf WAF appliance."""

__version__ = "0.4.0"
