"""What makes and judges the models; the appliance runs none of it.

The labelled datasets and their splits by source (``datasets``, ``traffic``), the
augmentation and tampering of attacks (``augment``, ``tamper``, ``placement``), the
networks and their training (``neural``, ``train``, ``flood``), the traffic generator
(``simulate``, ``reallogs``), the evaluation (``evaluate``) and the release's acceptance
targets (``acceptance``), and the commands that drive them (``cli``, ``commands``).

The rule the other way: no module outside this package imports from it, except
``mlwaf.cli``, which reads the training commands' options from ``mlwaf.training.cli``
and loads their handlers only when one of them runs (``tests/unit/test_layout.py``).
"""
