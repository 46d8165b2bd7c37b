"""Day-to-day operation of the appliance: log reading, the live monitor, the
performance report, the periodic performance check with its alerts, health."""
