# Unit tests of canary.rego. Run: `swiftdeploy policy test` (embedded engine) or `opa test policies/`.
# Thresholds are pinned with `with data.swiftdeploy.thresholds as ...` so manifest overrides cannot change them.
package swiftdeploy.canary_test

import rego.v1

import data.swiftdeploy.canary

thresholds := {
	"max_error_rate_percent": 1,
	"max_p99_latency_ms": 500,
	"min_requests": 20,
	"max_error_rate_increase_percent": 0.5,
	"max_p99_ratio": 2,
	"min_p99_ms_for_ratio": 50,
}

good_track := {"requests": 200, "errors": 0, "error_rate_percent": 0, "p50_ms": 20, "p99_ms": 100}

window(c, s) := {"window_seconds": 30, "canary": c, "stable": s}

track(changes) := object.union(good_track, changes)

decide(inp) := d if {
	d := canary.decision with input as inp with data.swiftdeploy.thresholds as thresholds
}

# The canary alone (no stable baseline): only the absolute rules apply.
alone(changes) := decide(window(track(changes), null))

rules(d) := {v.rule | some v in d.violations}

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

test_healthy_canary_allows if allows(decide(window(good_track, good_track)))

test_healthy_canary_without_baseline_allows if allows(alone({}))

# error rate: deny only above the maximum
test_error_rate_below_allows if allows(alone({"errors": 1, "error_rate_percent": 0.99}))

test_error_rate_equal_allows if allows(alone({"errors": 2, "error_rate_percent": 1}))

test_error_rate_above_denies if {
	d := alone({"errors": 3, "error_rate_percent": 1.01})
	denies_only(d, "error_rate")
	d.violations[0].observed == 1.01
	d.violations[0].threshold == 1
	d.violations[0].unit == "%"
}

# P99 latency: deny only above the maximum
test_p99_below_allows if allows(alone({"p99_ms": 499.9}))

test_p99_equal_allows if allows(alone({"p99_ms": 500}))

test_p99_above_denies if {
	d := alone({"p99_ms": 500.1})
	denies_only(d, "p99_latency")
	d.violations[0].unit == "ms"
	d.violations[0].threshold == 500
}

# minimum requests: inconclusive below, never an allow
test_requests_below_minimum_inconclusive if {
	d := alone({"requests": 19})
	d.allow == false
	d.verdict == "inconclusive"
	rules(d) == {"min_requests"}
	d.violations[0].observed == 19
	d.violations[0].threshold == 20
}

test_requests_equal_minimum_allows if allows(alone({"requests": 20}))

test_requests_above_minimum_allows if allows(alone({"requests": 21}))

test_empty_window_inconclusive if {
	d := alone({"requests": 0, "errors": 0, "error_rate_percent": 0, "p50_ms": null, "p99_ms": null})
	d.verdict == "inconclusive"
	rules(d) == {"min_requests"}
}

test_deny_beats_inconclusive if {
	d := alone({"requests": 6, "p99_ms": 600})
	d.verdict == "deny"
	rules(d) == {"p99_latency", "min_requests"}
}

# relative rule, error rate: canary at most 0.5 points above stable
test_error_increase_below_allows if {
	allows(decide(window(track({"errors": 1, "error_rate_percent": 0.49}), good_track)))
}

test_error_increase_equal_allows if {
	allows(decide(window(track({"errors": 1, "error_rate_percent": 0.5}), good_track)))
}

test_error_increase_above_denies if {
	d := decide(window(track({"errors": 1, "error_rate_percent": 0.51}), good_track))
	denies_only(d, "error_rate_vs_stable")
	d.violations[0].observed == 0.51
	d.violations[0].unit == "points"
}

# relative rule, P99: canary at most 2x stable's
test_p99_ratio_below_allows if allows(decide(window(track({"p99_ms": 199}), good_track)))

test_p99_ratio_equal_allows if allows(decide(window(track({"p99_ms": 200}), good_track)))

test_p99_ratio_above_denies if {
	d := decide(window(track({"p99_ms": 201}), good_track))
	denies_only(d, "p99_vs_stable")
	d.violations[0].observed == 2.01
	d.violations[0].threshold == 2
}

test_p99_ratio_below_floor_is_noise if {
	# 40 ms vs 10 ms is 4x, but under the 50 ms floor both tracks are simply fast
	allows(decide(window(track({"p99_ms": 40}), track({"p99_ms": 10}))))
}

test_p99_ratio_at_floor_applies if {
	d := decide(window(track({"p99_ms": 50}), track({"p99_ms": 10})))
	denies_only(d, "p99_vs_stable")
}

# Equal in decimal passes in both engines, although 64-bit floats make 1.1 - 0.35 = 0.7500000000000001 and
# 139.65 / 93.1 = 1.5000000000000002 (the differential test against the real OPA found both).
test_error_increase_equal_in_decimal_allows if {
	d := canary.decision with input as window(
		track({"errors": 2, "error_rate_percent": 1.1}),
		track({"errors": 1, "error_rate_percent": 0.35}),
	)
		with data.swiftdeploy.thresholds as object.union(
			thresholds,
			{"max_error_rate_percent": 5, "max_error_rate_increase_percent": 0.75},
		)
	allows(d)
}

test_p99_ratio_equal_in_decimal_allows if {
	d := canary.decision with input as window(track({"p99_ms": 139.65}), track({"p99_ms": 93.1}))
		with data.swiftdeploy.thresholds as object.union(thresholds, {"max_p99_ratio": 1.5})
	allows(d)
}

# A stable P99 near zero must not overflow the ratio: it is reported as a billion times.
test_p99_ratio_against_a_tiny_stable_p99_is_reported_capped if {
	d := decide(window(track({"p99_ms": 300}), track({"p99_ms": 5e-324})))
	denies_only(d, "p99_vs_stable")
	d.violations[0].observed == 1000000000
}

test_relative_rules_skipped_when_stable_is_null if allows(alone({"errors": 1, "error_rate_percent": 0.9}))

test_relative_rules_skipped_when_stable_has_too_few_requests if {
	allows(decide(window(track({"p99_ms": 400}), track({"requests": 19, "p99_ms": 10}))))
}

test_relative_rules_skipped_when_canary_has_too_few_requests if {
	d := decide(window(track({"requests": 19, "p99_ms": 400}), track({"p99_ms": 10})))
	d.verdict == "inconclusive"
	rules(d) == {"min_requests"}
}

# thresholds come from data
test_threshold_override_applies if {
	d := canary.decision with input as window(track({"p99_ms": 400}), null)
		with data.swiftdeploy.thresholds as object.union(thresholds, {"max_p99_latency_ms": 300})
	denies_only(d, "p99_latency")
	d.violations[0].threshold == 300
}

test_missing_threshold_denies if {
	d := canary.decision with input as window(good_track, null)
		with data.swiftdeploy.thresholds as object.remove(thresholds, ["min_requests"])
	d.verdict == "deny"
	"threshold_invalid" in rules(d)
}

# malformed input: a violation naming the field, never an allow
test_empty_input_denies_naming_every_field if {
	d := decide({})
	d.verdict == "deny"
	rules(d) == {"input_missing"}
	fields(d) == {"window_seconds", "canary", "stable"}
}

test_non_object_input_denies if {
	d := decide([])
	d.verdict == "deny"
	"input" in fields(d)
}

test_missing_stable_key_denies if {
	d := decide({"window_seconds": 30, "canary": good_track})
	denies_only(d, "input_missing")
	fields(d) == {"stable"}
}

test_window_seconds_zero_denies if {
	d := decide(object.union(window(good_track, null), {"window_seconds": 0}))
	denies_only(d, "input_type")
	fields(d) == {"window_seconds"}
}

test_window_seconds_string_denies if {
	d := decide(object.union(window(good_track, null), {"window_seconds": "30s"}))
	denies_only(d, "input_type")
	fields(d) == {"window_seconds"}
}

test_canary_not_object_denies if {
	d := decide(window("fine", null))
	denies_only(d, "input_type")
	fields(d) == {"canary"}
}

test_stable_not_object_denies if {
	d := decide(window(good_track, [good_track]))
	denies_only(d, "input_type")
	fields(d) == {"stable"}
}

test_canary_field_missing_denies if {
	d := decide(window(object.remove(good_track, ["p99_ms"]), null))
	denies_only(d, "input_missing")
	fields(d) == {"canary.p99_ms"}
}

test_canary_field_string_denies if {
	# "600" > 500 would be true in Rego's type ordering; the policy must not compare it, only reject it
	d := alone({"p99_ms": "600"})
	denies_only(d, "input_type")
	fields(d) == {"canary.p99_ms"}
}

test_canary_error_rate_string_denies if {
	d := alone({"error_rate_percent": "0"})
	denies_only(d, "input_type")
	fields(d) == {"canary.error_rate_percent"}
}

test_canary_requests_negative_denies if {
	d := alone({"requests": -5})
	d.verdict == "deny"
	"canary.requests" in fields(d)
}

test_null_latency_with_requests_denies if {
	d := alone({"p99_ms": null})
	denies_only(d, "input_type")
	fields(d) == {"canary.p99_ms"}
}

test_errors_above_requests_denies if {
	d := alone({"requests": 30, "errors": 31, "error_rate_percent": 0})
	denies_only(d, "input_range")
	fields(d) == {"canary.errors"}
}

test_stable_field_mistyped_denies if {
	d := decide(window(good_track, track({"requests": "many"})))
	denies_only(d, "input_type")
	fields(d) == {"stable.requests"}
}
