# Promotion gate: is the canary good enough to become stable?
#
# Input (docs/contracts.md#inputs): {"window_seconds", "canary": TRACK, "stable": TRACK or null} with
# TRACK = {"requests", "errors", "error_rate_percent", "p50_ms", "p99_ms"} measured over the same window
# (p50_ms / p99_ms are null when the track saw no requests). Thresholds come from data.swiftdeploy.thresholds.
#
# Verdict: any deny rule -> "deny"; else too few canary requests -> "inconclusive"; else "allow".
# Absolute rules judge whatever the window saw: a few slow or failing requests are already evidence against the
# canary, while too few requests can never produce an allow. The relative rules (canary vs stable) run only when
# both tracks saw at least min_requests requests; with stable null they are skipped.
package swiftdeploy.canary

import rego.v1

# The data document, not `data` itself: a reference to all of `data` depends on every rule (OPA refuses the
# cycle, regorus does not notice it).
default thresholds := {}

thresholds := data.swiftdeploy.thresholds

inp := input if is_object(input)

else := {}

track_numbers := ["requests", "errors", "error_rate_percent"]

latency_fields := ["p50_ms", "p99_ms"]

used_thresholds := [
	"max_error_rate_percent", "max_p99_latency_ms", "min_requests",
	"max_error_rate_increase_percent", "max_p99_ratio", "min_p99_ms_for_ratio",
]

violation(rule, message, observed, threshold, unit) := {
	"rule": rule,
	"message": message,
	"observed": observed,
	"threshold": threshold,
	"unit": unit,
}

input_violation(rule, field, message, observed) := object.union(
	violation(rule, message, observed, null, ""),
	{"field": field},
)

# Usable thresholds (numbers only); a rule whose threshold is missing cannot fire, and threshold_invalid denies.
th := {name: value | some name, value in thresholds; is_number(value)}

# --- malformed input (each names the field; any of them denies) ---

deny contains input_violation("input_type", "input", msg, type_name(input)) if {
	not is_object(input)
	msg := "the canary input must be a JSON object {window_seconds, canary, stable}"
}

missing_hint := {
	"window_seconds": "the length of the metrics window in seconds",
	"canary": "the canary's window metrics",
	"stable": "stable's window metrics, or null when there is no baseline",
}

deny contains input_violation("input_missing", field, msg, null) if {
	some field, hint in missing_hint
	not field in object.keys(inp)
	msg := sprintf("input.%s is missing: send %s", [field, hint])
}

deny contains input_violation("input_type", "window_seconds", msg, inp.window_seconds) if {
	"window_seconds" in object.keys(inp)
	not positive_number(inp.window_seconds)
	msg := sprintf("input.window_seconds must be a number above 0, got %v", [inp.window_seconds])
}

deny contains input_violation("input_type", "canary", msg, type_name(inp.canary)) if {
	"canary" in object.keys(inp)
	not is_object(inp.canary)
	msg := sprintf("input.canary must be an object of window metrics, got %s", [type_name(inp.canary)])
}

deny contains input_violation("input_type", "stable", msg, type_name(inp.stable)) if {
	"stable" in object.keys(inp)
	not is_object(inp.stable)
	not is_null(inp.stable)
	msg := sprintf("input.stable must be an object of window metrics or null, got %s", [type_name(inp.stable)])
}

positive_number(x) if {
	is_number(x)
	x > 0
}

non_negative(x) if {
	is_number(x)
	x >= 0
}

# The tracks that are objects, by name.
tracks := {name: inp[name] | some name in ["canary", "stable"]; is_object(inp[name])}

deny contains input_violation("input_missing", sprintf("%s.%s", [name, f]), msg, null) if {
	some name, t in tracks
	some f in array.concat(track_numbers, latency_fields)
	not f in object.keys(t)
	msg := sprintf("input.%s.%s is missing", [name, f])
}

deny contains input_violation("input_type", sprintf("%s.%s", [name, f]), msg, t[f]) if {
	some name, t in tracks
	some f in track_numbers
	f in object.keys(t)
	not non_negative(t[f])
	msg := sprintf("input.%s.%s must be a number >= 0, got %v", [name, f, t[f]])
}

deny contains input_violation("input_type", sprintf("%s.%s", [name, f]), msg, t[f]) if {
	some name, t in tracks
	some f in latency_fields
	f in object.keys(t)
	not non_negative(t[f])
	not empty_track_null(t, t[f])
	msg := sprintf("input.%s.%s must be a number >= 0 (null only when the track saw no requests), got %v", [
		name, f, t[f],
	])
}

deny contains input_violation("input_range", sprintf("%s.errors", [name]), msg, t.errors) if {
	some name, t in tracks
	non_negative(t.errors)
	non_negative(t.requests)
	t.errors > t.requests
	msg := sprintf("input.%s.errors (%v) cannot exceed input.%s.requests (%v)", [name, t.errors, name, t.requests])
}

empty_track_null(t, value) if {
	is_null(value)
	t.requests == 0
}

deny contains violation("threshold_invalid", msg, object.get(thresholds, name, null), null, "") if {
	some name in used_thresholds
	not name in object.keys(th)
	msg := sprintf("threshold %s is missing or not a number: fix data.json or the manifest's policy.thresholds", [name])
}

# --- well-typed views the rules read (undefined when the field is malformed, so a rule cannot misfire) ---

metrics := {name: {f: v | some f, v in t; non_negative(v)} | some name, t in tracks}

enough(track) if metrics[track].requests >= th.min_requests

window := inp.window_seconds if positive_number(inp.window_seconds)

else := "?"

# Derived values (a difference, a ratio) are reported rounded to 2 decimals; inputs are reported as sent.
round2(x) := round(x * 100) / 100

# A derived value violates only when it is beyond its threshold by more than this. The engines' arithmetic differs
# in the last bits - OPA computes in exact decimals, regorus in 64-bit floats, where 139.65 / 93.1 is
# 1.5000000000000002 - and a ratio or difference that equals its threshold in decimal must pass in both.
tolerance := 1e-9

# --- absolute rules on the canary ---

deny contains violation("error_rate", msg, observed, th.max_error_rate_percent, "%") if {
	observed := metrics.canary.error_rate_percent
	observed > th.max_error_rate_percent
	msg := sprintf("canary error rate %v %% (%v of %v requests) over %v s is above the maximum of %v %%", [
		observed, metrics.canary.errors, metrics.canary.requests, window, th.max_error_rate_percent,
	])
}

deny contains violation("p99_latency", msg, observed, th.max_p99_latency_ms, "ms") if {
	observed := metrics.canary.p99_ms
	observed > th.max_p99_latency_ms
	msg := sprintf("canary P99 latency %v ms over %v s is above the maximum of %v ms", [
		observed, window, th.max_p99_latency_ms,
	])
}

# --- relative rules: canary clearly worse than stable over the same window ---

deny contains violation("error_rate_vs_stable", msg, increase, th.max_error_rate_increase_percent, "points") if {
	enough("canary")
	enough("stable")
	raw := metrics.canary.error_rate_percent - metrics.stable.error_rate_percent
	raw > th.max_error_rate_increase_percent + tolerance
	increase := round2(raw)
	msg := sprintf("canary error rate %v %% is %v points above stable's %v %%; at most %v points are allowed", [
		metrics.canary.error_rate_percent, increase, metrics.stable.error_rate_percent,
		th.max_error_rate_increase_percent,
	])
}

deny contains violation("p99_vs_stable", msg, ratio, th.max_p99_ratio, "x") if {
	enough("canary")
	enough("stable")
	metrics.stable.p99_ms > 0

	# Below the floor both tracks are fast; a ratio of tiny latencies is noise, not a regression.
	metrics.canary.p99_ms >= th.min_p99_ms_for_ratio

	# The divisor is at least canary / 1e9, so the ratio stays a float (reported as 1e9 for "a billion times or
	# more"): a stable P99 of 5e-324 ms would make it overflow, an error in regorus and a non-float number in OPA.
	raw := metrics.canary.p99_ms / max([metrics.stable.p99_ms, metrics.canary.p99_ms / 1e9])
	raw > th.max_p99_ratio + tolerance
	ratio := round2(raw)
	msg := sprintf("canary P99 %v ms is %v times stable's %v ms; at most %v times is allowed", [
		metrics.canary.p99_ms, ratio, metrics.stable.p99_ms, th.max_p99_ratio,
	])
}

# --- too little evidence ---

inconclusive contains violation("min_requests", msg, observed, th.min_requests, "requests") if {
	observed := metrics.canary.requests
	observed < th.min_requests
	msg := sprintf("only %v canary requests in the %v s window; at least %v are needed to judge the canary: send more traffic or lengthen policy.window_seconds", [
		observed, window, th.min_requests,
	])
}

# --- the answer ---

verdict := "deny" if count(deny) > 0

else := "inconclusive" if count(inconclusive) > 0

else := "allow"

decision := {
	"allow": verdict == "allow",
	"verdict": verdict,
	"violations": [v | some v in (deny | inconclusive)],
}
