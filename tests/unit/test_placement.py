"""A payload placed in each part of a request reaches the model (mlwaf.training.placement)."""

from __future__ import annotations

import pytest

from mlwaf.features import normalise
from mlwaf.inputs import model_inputs
from mlwaf.request import Limits, from_wire
from mlwaf.training.placement import PARTS, placed


@pytest.mark.parametrize("payload", ["' or 1=1--", "<svg onload=alert(1)>", ";cat /etc/passwd", "../../etc/shadow"])
def test_every_part_carries_the_payload_to_the_model(payload: str) -> None:
    records = placed(payload)
    assert set(records) == set(PARTS)
    for part, record in records.items():
        request = from_wire(record)
        texts = [a.value for a in model_inputs(request, request.args, Limits())]
        # cookies stay %-encoded and XML text entity-escaped, as ModSecurity keeps them; the model
        # reads them decoded (features.normalise)
        assert any(normalise(payload) in normalise(text) for text in texts), f"{part}: {texts}"
