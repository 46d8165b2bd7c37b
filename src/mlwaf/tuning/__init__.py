"""Site tuning: what a site's normal traffic trips during a learning period, and the
narrow CRS exclusions and model suppressions proposed from it (``mlwaf tune``)."""
