# Unit tests of canary.rego. Run: `swiftdeploy policy test` (embedded engine) or `opa test policies/`.
# Thresholds are pinned with `with data.swiftdeploy.thresholds as ...` so manifest overrides cannot change them.
# The evidence (counts and confidence bounds) is written out here: the policy only compares it with the
# thresholds, so every rule is tested just under, at and over its threshold. How swiftdeploy computes the bounds
# is tested in tests/judge/.
package swiftdeploy.canary_test

import rego.v1

import data.swiftdeploy.canary

thresholds := {
	"max_error_rate_percent": 1,
	"bad_error_rate_percent": 2,
	"max_p99_latency_ms": 500,
	"max_slow_percent": 1,
	"bad_slow_percent": 2,
	"min_requests": 20,
	"max_error_rate_ratio": 1.5,
	"max_p99_ratio": 2,
	"min_p99_ms_for_ratio": 250,
	"deny_confidence_percent": 99,
	"ratio_confidence_percent": 97,
	"allow_confidence_percent": 95,
}

echo := {name: thresholds[name] | some name in [
	"deny_confidence_percent", "ratio_confidence_percent", "allow_confidence_percent", "max_p99_latency_ms",
	"max_p99_ratio",
	"min_p99_ms_for_ratio", "bad_error_rate_percent", "bad_slow_percent", "min_requests",
]}

good_track := {"requests": 600, "errors": 0, "error_rate_percent": 0, "p50_ms": 20, "p99_ms": 100}

track(changes) := object.union(good_track, changes)

# 600 clean canary requests: both bounds well under the bad rates.
rate := {
	"count": 0, "count_max": 0, "requests": 600,
	"observed_percent": 0, "lower_percent": 0, "upper_percent": 0.5,
	"requests_needed": 0, "seconds_needed": 0,
}

good_evidence := {
	"method": "fixed",
	"thresholds": echo,
	"error_rate": rate,
	"p99_latency": object.union(rate, {"latency_ms": 500}),
	"error_rate_vs_stable": null,
	"p99_vs_stable": null,
	"requests_needed": 0,
	"seconds_needed": 0,
	"canary_requests_per_second": 20,
}

vs_stable := {
	"canary_errors": 3, "canary_requests": 600, "stable_errors": 20, "stable_requests": 5400,
	"observed_ratio": 1.35, "lower_ratio": 0.4,
}

slow_vs_stable := object.union(rate, {"latency_ms": 400, "stable_p99_ms": 200, "stable_requests": 5400})

# object.union merges nested objects: evidence({"error_rate": {"lower_percent": 2}}) changes one field.
evidence(changes) := object.union(good_evidence, changes)

window(c, s, ev) := {"window_seconds": 30, "canary": c, "stable": s, "evidence": ev}

decide(inp) := d if {
	d := canary.decision with input as inp with data.swiftdeploy.thresholds as thresholds
}

# The canary alone (no stable baseline): only the absolute rules apply.
alone(changes) := decide(window(good_track, null, evidence(changes)))

rules(d) := {v.rule | some v in d.violations}

basis(d) := {b.rule | some b in d.basis}

fields(d) := {v.field | some v in d.violations; v.field}

allows(d) if {
	d.allow == true
	d.verdict == "allow"
	count(d.violations) == 0
}

denies_only(d, rule) if {
	d.allow == false
	d.verdict == "deny"
	rules(d) == {rule}
}

# The canary with `n` errors and that error-rate evidence (the evidence must match the track's counts).
errors(n, e) := decide(window(track({"errors": n, "error_rate_percent": (n * 100) / 600}), null, evidence({"error_rate": e})))

inconclusive_only(d, found) if {
	d.allow == false
	d.verdict == "inconclusive"
	rules(d) == found
}

test_healthy_canary_allows_and_says_why if {
	d := alone({})
	allows(d)
	basis(d) == {"error_rate", "p99_latency"}
	some b in d.basis
	b.rule == "error_rate"
	b.bound == 0.5
	b.bound_kind == "upper"
	b.confidence_percent == 95
	b.threshold == 2
	b.counts == {"errors": 0, "requests": 600}
	b.window_seconds == 30
	contains(b.message, "600 canary requests, 0 errors over 30 s: error rate below 0.5% with 95% confidence")
}

test_healthy_canary_with_baseline_allows if {
	allows(decide(window(good_track, good_track, evidence({"error_rate_vs_stable": vs_stable, "p99_vs_stable": slow_vs_stable}))))
}

# error rate, deny side: deny only when the lower confidence bound is above the maximum
test_error_lower_bound_equal_does_not_deny if {
	d := errors(3, {"count": 3, "count_max": 3, "observed_percent": 0.5, "lower_percent": 1, "upper_percent": 1.9})
	allows(d)
}

test_error_lower_bound_above_denies if {
	d := errors(30, {"count": 30, "count_max": 30, "observed_percent": 5, "lower_percent": 1.0001, "upper_percent": 7})
	denies_only(d, "error_rate")
	v := d.violations[0]
	v.observed == 5
	v.bound == 1.0001
	v.bound_kind == "lower"
	v.confidence_percent == 99
	v.threshold == 1
	v.unit == "%"
	v.counts == {"errors": 30, "requests": 600}
	v.window_seconds == 30
	contains(v.message, "30 of 600 canary requests failed over 30 s (5%): the error rate is above 1% with 99% confidence")
}

# error rate, allow side: allow only when the upper confidence bound is below the bad rate
test_error_upper_bound_below_bad_allows if allows(alone({"error_rate": {"upper_percent": 1.9999}}))

test_error_upper_bound_equal_bad_is_inconclusive if {
	d := errors(1, {"count": 1, "count_max": 1, "upper_percent": 2, "requests_needed": 89, "seconds_needed": 44.5})
	inconclusive_only(d, {"error_rate_unproven"})
	v := d.violations[0]
	v.bound == 2
	v.bound_kind == "upper"
	v.threshold == 2
	v.requests_needed == 89
	contains(v.message, "about 89 more canary requests would settle it (~44.5 s at the current 20 req/s)")
}

test_error_rate_that_never_clears_says_so if {
	d := errors(12, {"count": 12, "count_max": 12, "upper_percent": 3.1, "requests_needed": null, "seconds_needed": null})
	inconclusive_only(d, {"error_rate_unproven"})
	contains(d.violations[0].message, "no number of requests would show it")
}

# P99 latency <= 500 ms is "at most 1 % of requests slower than 500 ms": judged on the slow-request share
test_slow_lower_bound_equal_does_not_deny if allows(alone({"p99_latency": {"lower_percent": 1}}))

test_slow_lower_bound_above_denies if {
	e := {"count": 12, "count_max": 12, "observed_percent": 2, "lower_percent": 1.01, "upper_percent": 3}
	d := alone({"p99_latency": e})
	denies_only(d, "p99_latency")
	v := d.violations[0]
	v.threshold == 1
	v.bound == 1.01
	v.counts == {"slow": 12, "slow_max": 12, "requests": 600}
	contains(v.message, "took longer than 500 ms")
	contains(v.message, "so the P99 is above 500 ms")
}

test_slow_upper_bound_equal_bad_is_inconclusive if {
	inconclusive_only(alone({"p99_latency": {"upper_percent": 2}}), {"p99_latency_unproven"})
}

test_slow_interval_is_shown_as_a_range if {
	d := alone({"p99_latency": {"count": 3, "count_max": 9, "upper_percent": 2.5}})
	inconclusive_only(d, {"p99_latency_unproven"})
	contains(d.violations[0].message, "3 to 9 slower than 500 ms")
}

# relative rule, errors: the canary's error rate more than max_error_rate_ratio times stable's, with confidence
test_error_ratio_lower_bound_equal_does_not_deny if {
	allows(decide(window(good_track, good_track, evidence({"error_rate_vs_stable": object.union(vs_stable, {"lower_ratio": 1.5})}))))
}

test_error_ratio_lower_bound_above_denies if {
	d := decide(window(good_track, good_track, evidence({"error_rate_vs_stable": object.union(vs_stable, {"lower_ratio": 1.5001})})))
	denies_only(d, "error_rate_vs_stable")
	v := d.violations[0]
	v.unit == "x"
	v.threshold == 1.5
	v.bound == 1.5001
	v.counts == {"canary_errors": 3, "canary_requests": 600, "stable_errors": 20, "stable_requests": 5400}
}

# relative rule, latency: share slower than max(2 x stable's P99, 250 ms), only with a baseline of min_requests
test_slow_vs_stable_above_denies if {
	d := decide(window(good_track, good_track, evidence({"p99_vs_stable": object.union(slow_vs_stable, {"lower_percent": 1.01})})))
	denies_only(d, "p99_vs_stable")
	contains(d.violations[0].message, "took longer than 400 ms (2 times stable's P99 of 200 ms, at least 250 ms)")
}

test_slow_vs_stable_equal_does_not_deny if {
	allows(decide(window(good_track, good_track, evidence({"p99_vs_stable": object.union(slow_vs_stable, {"lower_percent": 1})}))))
}

test_slow_vs_stable_skipped_below_min_requests_of_stable if {
	ev := evidence({"p99_vs_stable": object.union(slow_vs_stable, {"lower_percent": 50, "stable_requests": 19})})
	allows(decide(window(good_track, track({"requests": 19}), ev)))
}

test_slow_vs_stable_applies_at_min_requests_of_stable if {
	ev := evidence({"p99_vs_stable": object.union(slow_vs_stable, {"lower_percent": 50, "stable_requests": 20})})
	denies_only(decide(window(good_track, track({"requests": 20}), ev)), "p99_vs_stable")
}

# minimum requests: never an allow below it, whatever the bounds
test_requests_below_minimum_inconclusive if {
	ev := evidence({"error_rate": {"requests": 19}, "p99_latency": {"requests": 19}})
	d := decide(window(track({"requests": 19}), null, ev))
	inconclusive_only(d, {"min_requests"})
	d.violations[0].observed == 19
	d.violations[0].threshold == 20
}

test_requests_equal_minimum_allows if {
	ev := evidence({"error_rate": {"requests": 20}, "p99_latency": {"requests": 20}})
	allows(decide(window(track({"requests": 20}), null, ev)))
}

test_empty_window_inconclusive if {
	empty := {"requests": 0, "errors": 0, "error_rate_percent": 0, "p50_ms": null, "p99_ms": null}
	none := {"requests": 0, "upper_percent": 100, "requests_needed": 149, "seconds_needed": null}
	d := decide(window(empty, null, evidence({"error_rate": none, "p99_latency": none})))
	inconclusive_only(d, {"min_requests", "error_rate_unproven", "p99_latency_unproven"})
}

# deny beats inconclusive, and then names only what breaks the rules
test_deny_beats_inconclusive if {
	ev := evidence({
		"error_rate": {"requests": 6, "upper_percent": 39.3},
		"p99_latency": {"requests": 6, "count": 6, "count_max": 6, "observed_percent": 100, "lower_percent": 46.4, "upper_percent": 100},
	})
	d := decide(window(track({"requests": 6}), null, ev))
	d.verdict == "deny"
	rules(d) == {"p99_latency"}
}

# thresholds come from data
test_threshold_override_applies if {
	d := canary.decision with input as window(good_track, null, evidence({"error_rate": {"lower_percent": 0.6}}))
		with data.swiftdeploy.thresholds as object.union(thresholds, {"max_error_rate_percent": 0.5})
	denies_only(d, "error_rate")
	d.violations[0].threshold == 0.5
}

test_missing_threshold_denies if {
	d := canary.decision with input as window(good_track, null, good_evidence)
		with data.swiftdeploy.thresholds as object.remove(thresholds, ["max_slow_percent"])
	d.verdict == "deny"
	"threshold_invalid" in rules(d)
}

# evidence computed for other thresholds or other data is refused
test_evidence_for_other_confidence_denies if {
	d := alone({"thresholds": {"deny_confidence_percent": 90}})
	denies_only(d, "evidence_mismatch")
	d.violations[0].observed == 90
	d.violations[0].threshold == 99
}

test_evidence_without_thresholds_echo_denies if {
	d := decide(window(good_track, null, object.remove(good_evidence, ["thresholds"])))
	d.verdict == "deny"
	"evidence_mismatch" in rules(d)
}

test_evidence_about_other_counts_denies if {
	d := decide(window(track({"errors": 5, "error_rate_percent": 0.83}), null, good_evidence))
	denies_only(d, "evidence_mismatch")
}

# malformed input: a violation naming the field, never an allow
test_empty_input_denies_naming_every_field if {
	d := decide({})
	d.verdict == "deny"
	rules(d) == {"input_missing"}
	fields(d) == {"window_seconds", "canary", "stable", "evidence"}
}

test_non_object_input_denies if {
	d := decide([])
	d.verdict == "deny"
	"input" in fields(d)
}

test_missing_stable_key_denies if {
	d := decide({"window_seconds": 30, "canary": good_track, "evidence": good_evidence})
	denies_only(d, "input_missing")
	fields(d) == {"stable"}
}

test_missing_evidence_denies if {
	d := decide({"window_seconds": 30, "canary": good_track, "stable": null})
	denies_only(d, "input_missing")
	fields(d) == {"evidence"}
}

test_evidence_not_object_denies if {
	d := decide(window(good_track, null, "trust me"))
	d.verdict == "deny"
	"evidence" in fields(d)
}

test_evidence_method_unknown_denies if {
	d := alone({"method": "vibes"})
	denies_only(d, "input_type")
	fields(d) == {"evidence.method"}
}

test_evidence_bound_string_denies if {
	# "1.5" > 1 is true in Rego's type ordering: the policy must reject it, never compare it
	d := alone({"error_rate": {"lower_percent": "1.5"}})
	denies_only(d, "input_type")
	fields(d) == {"evidence.error_rate.lower_percent"}
}

test_evidence_percent_above_100_denies if {
	d := alone({"p99_latency": {"upper_percent": 100.5}})
	denies_only(d, "input_type")
	fields(d) == {"evidence.p99_latency.upper_percent"}
}

test_evidence_fractional_count_denies if {
	d := alone({"p99_latency": {"count": 1.5}})
	denies_only(d, "input_type")
	fields(d) == {"evidence.p99_latency.count"}
}

test_evidence_part_missing_denies if {
	d := decide(window(good_track, null, object.remove(good_evidence, ["p99_latency"])))
	denies_only(d, "input_type")
	fields(d) == {"evidence.p99_latency"}
}

test_evidence_relative_part_malformed_denies if {
	d := alone({"error_rate_vs_stable": [1, 2]})
	denies_only(d, "input_type")
	fields(d) == {"evidence.error_rate_vs_stable"}
}

test_evidence_relative_field_malformed_denies if {
	d := decide(window(good_track, good_track, evidence({"error_rate_vs_stable": object.union(vs_stable, {"lower_ratio": null})})))
	denies_only(d, "input_type")
	fields(d) == {"evidence.error_rate_vs_stable.lower_ratio"}
}

test_window_seconds_zero_denies if {
	d := decide(object.union(window(good_track, null, good_evidence), {"window_seconds": 0}))
	denies_only(d, "input_type")
	fields(d) == {"window_seconds"}
}

test_window_seconds_string_denies if {
	d := decide(object.union(window(good_track, null, good_evidence), {"window_seconds": "30s"}))
	denies_only(d, "input_type")
	fields(d) == {"window_seconds"}
}

test_canary_not_object_denies if {
	d := decide(window("fine", null, good_evidence))
	d.verdict == "deny"
	"canary" in fields(d)
}

test_stable_not_object_denies if {
	d := decide(window(good_track, [good_track], good_evidence))
	denies_only(d, "input_type")
	fields(d) == {"stable"}
}

test_canary_field_missing_denies if {
	d := decide(window(object.remove(good_track, ["p99_ms"]), null, good_evidence))
	denies_only(d, "input_missing")
	fields(d) == {"canary.p99_ms"}
}

test_canary_field_string_denies if {
	d := decide(window(track({"p99_ms": "600"}), null, good_evidence))
	denies_only(d, "input_type")
	fields(d) == {"canary.p99_ms"}
}

test_canary_fractional_requests_denies if {
	d := decide(window(track({"requests": 600.5}), null, good_evidence))
	d.verdict == "deny"
	"canary.requests" in fields(d)
}

test_canary_requests_negative_denies if {
	d := decide(window(track({"requests": -5}), null, good_evidence))
	d.verdict == "deny"
	"canary.requests" in fields(d)
}

test_null_latency_with_requests_denies if {
	d := decide(window(track({"p99_ms": null}), null, good_evidence))
	denies_only(d, "input_type")
	fields(d) == {"canary.p99_ms"}
}

test_slower_than_ms_malformed_denies if {
	d := decide(window(track({"slower_than_ms": {"500": "three"}}), null, good_evidence))
	denies_only(d, "input_type")
	fields(d) == {"canary.slower_than_ms"}
}

test_errors_above_requests_denies if {
	d := decide(window(track({"requests": 30, "errors": 31}), null, good_evidence))
	d.verdict == "deny"
	"canary.errors" in fields(d)
}

test_stable_field_mistyped_denies if {
	d := decide(window(good_track, track({"requests": "many"}), good_evidence))
	denies_only(d, "input_type")
	fields(d) == {"stable.requests"}
}

# a count beyond 2^53 - 1 is not a count (both engines: regorus would call 1e300 whole, OPA would not)
test_huge_request_count_denies if {
	d := decide(window(track({"requests": 1e300}), null, evidence({})))
	d.verdict == "deny"
	some v in d.violations
	v.field == "canary.requests"
}
