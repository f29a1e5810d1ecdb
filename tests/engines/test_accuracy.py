"""The gate's thresholds and comparison: typed, range-checked once, and never fooled by NaN."""

import numpy as np
import pytest

from cfnsr.engines.accuracy import DEFAULT_GATES, GateThresholds, compare
from cfnsr.errors import CfnsrError


def test_thresholds_merge_over_the_precision_defaults():
    assert GateThresholds().over("fp32") == DEFAULT_GATES["fp32"]
    t = GateThresholds.from_options(min_agreement=0.9).over("int8")
    assert t.min_agreement == 0.9 and t.max_accuracy_drop_points == 1.0 and t.max_abs_logit is None
    assert GateThresholds.from_options(max_abs_logit=5.0).over("fp16").to_dict() == {"min_agreement": 0.99,
                                                                                      "max_abs_logit": 5.0}


@pytest.mark.parametrize("kwargs,message", [
    ({"min_agreement": float("nan")}, "min_agreement must be a finite number"),
    ({"max_accuracy_drop_points": float("nan")}, "max_accuracy_drop_points must be a finite number"),
    ({"max_abs_logit": float("inf")}, "max_abs_logit must be a finite number"),
    ({"min_agreement": 1.01}, "--min-agreement must be between 0 and 1"),
    ({"max_accuracy_drop_points": -1.0}, "--max-accuracy-drop must be between 0 and 100"),
    ({"max_abs_logit": 0.0}, "--max-abs-logit must be positive"),
])
def test_out_of_range_thresholds_are_refused(kwargs, message):
    with pytest.raises(CfnsrError, match=message):
        GateThresholds(**kwargs)


def test_non_finite_logits_fail_every_gate():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((6, 8))
    labels = ref.argmax(1)
    assert compare(ref, ref.copy(), labels, "fp32").passed
    bad = ref.copy()
    bad[2, 3] = np.nan
    for precision in ("fp32", "fp16", "int8"):
        res = compare(ref, bad, labels, precision, GateThresholds(min_agreement=0.0))
        assert not res.passed and "artifact logits are not finite in 1 of 6 clips (first: clip 2)" in res.failures
    res = compare(np.full_like(ref, np.inf), ref, labels, "fp16")
    assert not res.passed and any("reference logits are not finite" in f for f in res.failures)
